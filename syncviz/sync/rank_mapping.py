"""Rank mapping of the parameter-sync group: the port of ChatLearn's group, golden-exact.

:class:`ParameterSyncGroup` (and :class:`ParameterSyncGroupwithHEP`) keep ChatLearn's
method names and attributes and drive actor objects: ChatLearn-style Ray actors (methods
with ``.remote``, results passed through ``resolve``), or the in-process stand-ins of
:mod:`syncviz.sync.local_actors`. The plain-numbers API (a layout in, rank pairs out)
is :mod:`syncviz.sync.rank_plan`.

The mapping reproduces ChatLearn (Dec 2024) exactly, quirks included: with expert
parallel > 1 the two-stage split returns positions instead of ranks, and a rank that no
actor has gives ``None`` (so a later actor call fails with AttributeError).

>>> from syncviz.parallel import Parallel
>>> from syncviz.sync.local_actors import RankLayout, build_local_models
>>> src, dst = build_local_models(RankLayout.megatron_to_vllm(Parallel(tp=1, dp=2), Parallel(tp=2)))
>>> ParameterSyncGroup(src, dst, "sync").stage1_rank_pairs
[(0, 2)]
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cached_property
from itertools import cycle
from typing import Any

logger = logging.getLogger(__name__)

Ranks = tuple[int, ...]
RankPair = tuple[int, int]
AddRecvActor = Callable[[int, int], None]


# ---- pure helpers ---------------------------------------------------------------------------


def group_dp_ranks(local_param_ranks: Sequence[Sequence[Any]]) -> list[list[int]]:
    """Trainer ranks grouped by data-parallel rank (one list per replica of the weights).

    Each actor reports ``[dp_group_ranks, dp_rank]``; its own rank is
    ``dp_group_ranks[dp_rank]``. Groups come out sorted by dp rank, members in actor order.

    >>> group_dp_ranks([[[0, 2], 0], [[1, 3], 0], [[0, 2], 1], [[1, 3], 1]])
    [[0, 1], [2, 3]]
    """
    by_dp_rank: dict[int, list[int]] = defaultdict(list)
    for dp_group_ranks, dp_rank in local_param_ranks:
        by_dp_rank[dp_rank].append(dp_group_ranks[dp_rank])
    return [ranks for _, ranks in sorted(by_dp_rank.items())]


def split_contiguous(ranks: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive chunks of ``size`` ranks.

    >>> split_contiguous([4, 5, 6, 7], 2)
    [[4, 5], [6, 7]]
    """
    return [list(ranks[i : i + size]) for i in range(0, len(ranks), size)]


def split_grouped_tp(ranks: Sequence[int], tp_size: int, ep_size: int) -> list[list[int]]:
    """The two-stage split into tp groups; with ``ep_size > 1`` it walks tp blocks ep apart.

    With ``ep_size > 1`` ChatLearn's walk collects *positions* into ``ranks``, not the ranks
    themselves; kept as is, because that is what the original mapped.

    >>> split_grouped_tp([8, 9, 10, 11], 2, 1)
    [[8, 9], [10, 11]]
    >>> split_grouped_tp([8, 9, 10, 11, 12, 13, 14, 15], 2, 2)
    [[0, 1], [4, 5], [2, 3], [6, 7]]
    """
    if ep_size <= 1:
        return split_contiguous(ranks, tp_size)
    order: list[int] = []
    index, tp_index = 0, 0
    for _ in range(len(ranks)):
        order.append(index)
        if tp_index < tp_size - 1:
            index += 1
            tp_index += 1
        else:
            index = index + 1 - tp_size + ep_size * tp_size
            tp_index = 0
        if index >= len(ranks):
            index = (index + tp_size) % len(ranks)
    return split_contiguous(order, tp_size)


def split_ep_and_tp(ranks: Sequence[int], tp_size: int, ep_size: int) -> list[list[list[int]]]:
    """HEP split: blocks of ``tp*ep`` ranks, each cut into its tp groups.

    >>> split_ep_and_tp([0, 1, 2, 3, 4, 5, 6, 7], 2, 2)
    [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    """
    block = tp_size * ep_size
    return [split_contiguous(ranks[j : j + block], tp_size) for j in range(0, len(ranks), block)]


def stage1_start(position: int, tp_num_mapping: int) -> int:
    """Which of its ``tp_num_mapping`` destination ranks a source tp group sends to first.

    The first ``tp_num_mapping`` groups take 0, 1, ...; later groups count back down, so
    groups that share destination ranks (source pipeline deeper than destination) spread.

    >>> [stage1_start(p, 2) for p in range(4)]
    [0, 1, 1, 0]
    """
    if tp_num_mapping == 1:
        return 0
    mod = position % tp_num_mapping
    if position < tp_num_mapping:
        return mod
    return (tp_num_mapping - mod - 1) % tp_num_mapping


def _identity(value: Any) -> Any:
    return value


def _parallel_size(side: str, kind: str, words: str = "") -> cached_property[int]:
    """The trainer's (``side`` "src") or the engine's ("dst") ``kind``-parallel size, asked
    once of its first actor (``<kind>_model_parallel_size``); ``words`` name it in the doc."""

    def size(group: ParameterSyncGroup) -> int:
        model = group.src_model if side == "src" else group.dst_model
        return group._call(model.replicas[0].all_actors[0], f"{kind}_model_parallel_size")

    who = "Trainer" if side == "src" else "Inference"
    size.__doc__ = f"{who} {words or kind + '-parallel'} size."
    return cached_property(size)


# ---- the group (ChatLearn-compatible facade) -------------------------------------------------


class ParameterSyncGroup:
    """Builds the send/receive actor mappings of one trainer -> inference parameter sync.

    Same method names and attributes as ChatLearn's group for the rank-mapping part.
    ``resolve`` turns what an actor's ``.remote`` call returns into a value (``ray.get``
    for Ray actors); plain method calls need none. With ``build_mapping`` False nothing
    is built until a ``build_*`` method is called. Every rank pair passed to
    ``add_recv_actor`` / ``add_recv_actor_stage2`` is also kept, in call order, in
    ``stage1_rank_pairs`` / ``stage2_rank_pairs``.

    >>> from syncviz.parallel import Parallel
    >>> from syncviz.sync.local_actors import RankLayout, build_local_models
    >>> src, dst = build_local_models(RankLayout.megatron_to_vllm(Parallel(tp=2), Parallel(tp=2)))
    >>> group = ParameterSyncGroup(src, dst, "sync")
    >>> group.stage1_rank_pairs
    [(0, 2), (1, 3)]
    >>> [dst.get_actor(2)] == group.send_recv_actor_mappings[src.get_actor(0)]
    True
    """

    def __init__(
        self,
        src_model: Any,
        dst_model: Any,
        group_name: str = "param_sync",
        frequency: int = 1,
        error_signal: Any = None,
        *,
        resolve: Callable[[Any], Any] | None = None,
        debug: bool = False,
        build_mapping: bool = True,
    ) -> None:
        self.src_model = src_model
        self.dst_model = dst_model
        self.group_name = group_name
        self.error_signal = error_signal
        self._frequency = frequency
        self._resolve = resolve or _identity
        self._debug = debug
        self._cache: dict[tuple[str, Any], Any] = {}
        self.send_recv_actor_mappings: defaultdict[Any, list[Any]] = defaultdict(list)
        self.recv_send_actor_mappings: defaultdict[Any, list[Any]] = defaultdict(list)
        self.send_recv_actor_mappings_stage2: defaultdict[Any, list[Any]] = defaultdict(list)
        self.recv_send_actor_mappings_stage2: defaultdict[Any, list[Any]] = defaultdict(list)
        self.actor2rank: dict[Any, int] = {}
        self.actor2model: dict[Any, Any] = {}
        self.send_actors_to_regroup_routed_experts: list[list[Any]] | None = None
        self.sorted_send_actors = None
        self.sorted_send_actors_stage2 = None
        self.stage1_rank_pairs: list[RankPair] = []
        self.stage2_rank_pairs: list[RankPair] = []
        self._init_more_state()
        if build_mapping:
            self.setup_rank_mapping()
        else:
            self.tp_num_mapping = self.num_dst_tensor_parallel // self.num_src_tensor_parallel

    def _init_more_state(self) -> None:
        """Attributes a subclass adds, set before the mapping is built."""

    @property
    def frequency(self) -> int:
        """Sync every n episodes (0: never)."""
        return self._frequency

    # -- talking to actors --

    def _call(self, actor: Any, func_name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(actor, func_name)
        remote = getattr(method, "remote", None)
        if remote is not None:
            return self._resolve(remote(*args, **kwargs))
        return method(*args, **kwargs)

    def get_or_cache(self, actor: Any, func_name: str, *args: Any, **kwargs: Any) -> Any:
        """``actor.func_name()``, asked once per actor and remembered."""
        key = (func_name, actor)
        if key not in self._cache:
            self._cache[key] = self._call(actor, func_name, *args, **kwargs)
        return self._cache[key]

    def is_same_gpu(self, src_actor: Any, dst_actor: Any) -> bool:
        """Whether the two actors see the same GPUs on the same host."""
        src_gpu = self.get_or_cache(src_actor, "get_visible_gpus")
        dst_gpu = self.get_or_cache(dst_actor, "get_visible_gpus")
        src_address = self.get_or_cache(src_actor, "get_address")
        dst_address = self.get_or_cache(dst_actor, "get_address")
        return src_gpu == dst_gpu and src_address == dst_address

    num_src_pipeline_stage = _parallel_size("src", "pipeline")
    num_dst_pipeline_stage = _parallel_size("dst", "pipeline")
    num_src_tensor_parallel = _parallel_size("src", "tensor")
    num_dst_tensor_parallel = _parallel_size("dst", "tensor")
    num_src_expert_parallel = _parallel_size("src", "expert")
    num_dst_expert_parallel = _parallel_size("dst", "expert")

    # -- recording pairs --

    def insert_actor2rank(self, actor: Any, rank: int) -> None:
        """Remember an actor's rank (first one wins)."""
        self.actor2rank.setdefault(actor, rank)

    def insert_actor2model(self, actor: Any, model: Any) -> None:
        """Remember which model an actor belongs to (first one wins)."""
        self.actor2model.setdefault(actor, model)

    def _register(self, model: Any, rank: int) -> Any:
        actor = model.get_actor(rank)
        self.insert_actor2rank(actor, rank)
        self.insert_actor2model(actor, model)
        return actor

    def empty_add_recv_actor(self, src_rank: int, dst_rank: int) -> None:
        """A pair sink that keeps nothing (used to only collect regrouping actors)."""
        return

    def _add_pair(
        self,
        pairs: list[RankPair],
        ranks: RankPair,
        src_model: Any,
        ask: Callable[..., Any],
        mappings: tuple[defaultdict[Any, list[Any]], defaultdict[Any, list[Any]]],
        words: str = "",
    ) -> None:
        """Keep ``ranks``, register both actors, ask each its GPUs with ``ask`` (as the
        original did: a rank with no actor fails here), log under ``words`` when given,
        and record the pair in the (send -> recv, recv -> send) ``mappings``."""
        pairs.append(ranks)
        src_actor = self._register(src_model, ranks[0])
        dst_actor = self._register(self.dst_model, ranks[1])
        src_gpu, dst_gpu = ask(src_actor, "get_visible_gpus"), ask(dst_actor, "get_visible_gpus")
        if words:
            logger.debug("%s %s -> %s, gpu %s -> %s", words, *ranks, src_gpu, dst_gpu)
        mappings[0][src_actor].append(dst_actor)
        mappings[1][dst_actor].append(src_actor)

    def add_recv_actor(self, src_rank: int, dst_rank: int) -> None:
        """Stage 1 (or the only stage): trainer ``src_rank`` sends to inference ``dst_rank``."""
        mappings = (self.send_recv_actor_mappings, self.recv_send_actor_mappings)
        pairs, ask = self.stage1_rank_pairs, self.get_or_cache
        self._add_pair(pairs, (src_rank, dst_rank), self.src_model, ask, mappings, "rank mapping")

    def add_recv_actor_stage2(self, src_rank: int, dst_rank: int) -> None:
        """Stage 2: inference ``src_rank`` forwards slices to its peer ``dst_rank``."""
        mappings = (self.send_recv_actor_mappings_stage2, self.recv_send_actor_mappings_stage2)
        pairs, ask = self.stage2_rank_pairs, self._call
        self._add_pair(pairs, (src_rank, dst_rank), self.dst_model, ask, mappings, "stage2 mapping")

    def set_send_actors_to_regroup_routed_experts(self, src_replica_ranks_group: list[Any]) -> None:
        """Append one actor list per source group (nested tp groups are flattened)."""
        if self.send_actors_to_regroup_routed_experts is None:
            self.send_actors_to_regroup_routed_experts = []
        for group in src_replica_ranks_group:
            ranks = [r for tp in group for r in tp] if isinstance(group[0], list) else group
            actors = [self.src_model.get_actor(rank) for rank in ranks]
            self.send_actors_to_regroup_routed_experts.append(actors)

    def add_routed_experts_regrouping_actor(self, model: Any, ranks_group: list[Any]) -> None:
        """Register the actors of the regrouping groups (rank and model)."""
        for group in ranks_group:
            ranks = [r for tp in group for r in tp] if isinstance(group[0], list) else group
            for rank in ranks:
                self._register(model, rank)

    # -- building --

    def setup_rank_mapping(self) -> None:
        """One stage when both sides have the same tp size, else two stages."""
        self.tp_num_mapping = self.num_dst_tensor_parallel // self.num_src_tensor_parallel
        if self.tp_num_mapping == 1:
            self.build_rank_mapping()
        else:
            self.build_rank_mapping_two_stage()

    def get_src_and_dst_dp_ranks(self) -> tuple[list[Any], Any]:
        """Trainer ranks per dp rank, and the inference ranks per replica."""
        dst_dp_ranks = self.dst_model.all_ranks
        local_src_ranks = self._resolve(self.src_model.replicas[0].get_local_param_ranks())
        if local_src_ranks[0] is None or dst_dp_ranks is None:
            if self._debug:
                logger.warning("src %s or dst %s ranks are None", local_src_ranks, dst_dp_ranks)
                return local_src_ranks, dst_dp_ranks
            # A bare Exception, as the original raised.
            raise Exception(
                f"src_dp_ranks {local_src_ranks} or dst_dp_ranks {dst_dp_ranks} should not be None"
            )
        return group_dp_ranks(local_src_ranks), dst_dp_ranks

    def _src_replica_cycle(self, src_dp_ranks: list[list[int]]) -> Any:
        # Colocated with an odd trainer tp: walk the trainer replicas backwards, so that a
        # trainer rank does not send to the inference rank on its own GPU.
        if self.src_model.colocate_with(self.dst_model) and self.num_src_tensor_parallel % 2 == 1:
            return cycle(list(reversed(src_dp_ranks)))
        return cycle(src_dp_ranks)

    def _checked_pipe_interval(self) -> int:
        if self.num_src_pipeline_stage % self.num_dst_pipeline_stage != 0:
            raise AssertionError
        return self.num_src_pipeline_stage // self.num_dst_pipeline_stage

    def _replica_walk(
        self, add_recv_actor_fn: AddRecvActor | None
    ) -> tuple[AddRecvActor, list[list[int]], Any, int] | None:
        """What the one-stage walks share: the pair sink, the inference replicas, the cycle of
        trainer replicas and the pipeline interval, checked in the original's order (None:
        debug mode met a replica without ranks)."""
        add = self.add_recv_actor if add_recv_actor_fn is None else add_recv_actor_fn
        src_dp_ranks, dst_dp_ranks = self.get_src_and_dst_dp_ranks()
        if self._debug and (src_dp_ranks[0] is None or dst_dp_ranks is None):
            return None
        src_width, dst_width = len(src_dp_ranks[0]), len(dst_dp_ranks[0])
        if src_width % dst_width != 0:
            raise AssertionError(
                "src training model ranks should be times of dst ranks, "
                f"but got {src_width} and {dst_width}"
            )
        src_replicas = self._src_replica_cycle(src_dp_ranks)
        return add, dst_dp_ranks, src_replicas, self._checked_pipe_interval()

    def build_rank_mapping(self, add_recv_actor_fn: AddRecvActor | None = None) -> None:
        """Same tp size: each trainer rank sends to the inference rank of the same position.

        Trainer replicas are cycled over the inference replicas; source pipeline stages
        ``i`` map to destination stage ``i // (src_pp // dst_pp)``.
        """
        walk = self._replica_walk(add_recv_actor_fn)
        if walk is None:
            return
        add, dst_dp_ranks, src_replicas, pipe_interval = walk
        src_block = self.num_src_tensor_parallel * self.num_src_expert_parallel
        dst_block = self.num_dst_tensor_parallel * self.num_dst_expert_parallel
        for dst_replica_ranks in dst_dp_ranks:
            src_groups = split_contiguous(next(src_replicas), src_block)
            dst_groups = split_contiguous(dst_replica_ranks, dst_block)
            self.set_send_actors_to_regroup_routed_experts(src_groups)
            for i, src_group in enumerate(src_groups):
                # zip stops at the shorter side, as the original's did (src tp*ep > dst tp*ep).
                dst_group = dst_groups[i // pipe_interval]
                for src_rank, dst_rank in zip(src_group, dst_group, strict=False):
                    add(src_rank, dst_rank)

    def build_rank_mapping_for_ep(self, add_recv_actor_fn: AddRecvActor | None = None) -> None:
        """Not supported for plain Megatron expert parallel (see the HEP group)."""
        raise NotImplementedError(
            "ChatLearn does not support build rank mapping from Megatron-LM for expert parallelism"
        )

    def build_rank_mapping_two_stage(
        self, add_recv_actor_fn: Sequence[AddRecvActor] | None = None
    ) -> None:
        """Inference tp a multiple of trainer tp: broadcast to one rank, then forward to peers.

        Stage 1: each trainer rank sends its whole regrouped buffer to one inference rank
        of the ``tp_num_mapping`` it feeds (a rank on its own GPU is skipped for the next
        one). Stage 2: every stage-1 receiver sends to the other ranks of its group.
        """
        if add_recv_actor_fn is None:
            add_stage1, add_stage2 = self.add_recv_actor, self.add_recv_actor_stage2
        else:
            if len(add_recv_actor_fn) != 2:
                raise AssertionError(
                    "The length of add_recv_actor_fn should be 2. The first one is a function "
                    "handler for communication stage 1, while the second one is a function "
                    "handler for communication stage 2."
                )
            add_stage1, add_stage2 = add_recv_actor_fn
        src_ranks, dst_ranks = self.get_src_and_dst_dp_ranks()
        if self._debug and (src_ranks[0] is None or dst_ranks is None):
            return
        src_replicas = cycle(src_ranks)
        src_tp, dst_tp = self.num_src_tensor_parallel, self.num_dst_tensor_parallel
        if dst_tp % src_tp != 0:
            raise AssertionError(
                "currently we require mod value equals to zero for tensor_model_parallel_size of "
                "dst_model and that of src_model while "
                f"src model {self.src_model.name}(TP={src_tp}) and "
                f"dst model {self.dst_model.name}(TP={dst_tp})"
            )
        pipe_interval = self._checked_pipe_interval()
        pairs: list[RankPair] = []
        # Source tp groups already used for earlier destination replicas (deeper source
        # pipelines spread over several destination replicas).
        src_offset = 0
        for dst_replica_ranks in dst_ranks:
            src_groups = split_grouped_tp(next(src_replicas), src_tp, self.num_src_expert_parallel)
            dst_groups = split_grouped_tp(dst_replica_ranks, dst_tp, self.num_dst_expert_parallel)
            if pipe_interval < 1:
                raise AssertionError(
                    "dst_pp expected to divide src_pp, while "
                    f"src_pp {self.num_src_pipeline_stage} and dst_pp {self.num_dst_pipeline_stage}"
                )
            for i, src_tp_group in enumerate(src_groups):
                if i < src_offset:
                    continue
                j = (i - src_offset) // pipe_interval
                if j == self.num_dst_pipeline_stage:
                    src_offset = i
                    break
                start = stage1_start(i - src_offset, self.tp_num_mapping)
                for s_idx, src_rank in enumerate(src_tp_group):
                    dst_rank = self._stage1_receiver(src_rank, dst_groups[j], s_idx, start)
                    add_stage1(src_rank, dst_rank)
                    pairs.append((src_rank, dst_rank))
            receivers = {dst for _, dst in pairs}
            for dst_tp_group in dst_groups:
                for peers in split_contiguous(dst_tp_group, self.tp_num_mapping):
                    for s_idx, sender in enumerate(peers):
                        if sender not in receivers:
                            continue
                        for d_idx, receiver in enumerate(peers):
                            if d_idx != s_idx:
                                add_stage2(sender, receiver)

    def _stage1_receiver(
        self, src_rank: int, dst_tp_group: list[int], s_idx: int, start: int
    ) -> int:
        """The inference rank trainer rank ``src_rank`` (tp index ``s_idx``) sends to."""
        base = s_idx * self.tp_num_mapping
        dst_rank = dst_tp_group[base + start]
        src_actor = self.src_model.get_actor(src_rank)
        dst_actor = self.dst_model.get_actor(dst_rank)
        if self.is_same_gpu(src_actor, dst_actor):
            # NCCL cannot send to the same device: take the next rank of the group.
            logger.warning(
                "src rank %s and dst rank %s share a GPU; using the next dst rank",
                src_rank,
                dst_rank,
            )
            dst_rank = dst_tp_group[base + (start + 1) % self.tp_num_mapping]
        return dst_rank


class ParameterSyncGroupwithHEP(ParameterSyncGroup):
    """The group for trainers with hyper expert parallel (routed experts split over tp*ep).

    Routed experts are regrouped among the trainer ranks of each tp*ep block first
    (``send_actors_to_regroup_routed_experts``); the other weights follow the plain
    mappings. Pairs passed to ``add_recv_actor_for_routed_experts`` are kept in
    ``routed_expert_rank_pairs``.

    >>> from syncviz.parallel import Parallel
    >>> from syncviz.sync.local_actors import RankLayout, build_local_models
    >>> layout = RankLayout.megatron_to_vllm(Parallel(tp=2, ep=2, dp=2), Parallel(tp=4))
    >>> group = ParameterSyncGroupwithHEP(*build_local_models(layout))
    >>> [[a.rank for a in g] for g in group.send_actors_to_regroup_routed_experts]
    [[0, 1, 2, 3]]
    >>> group.stage1_rank_pairs, group.stage2_rank_pairs
    ([(0, 4), (1, 6)], [(4, 5), (6, 7)])
    """

    def _init_more_state(self) -> None:
        mappings: tuple[defaultdict[Any, list[Any]], ...] = (defaultdict(list), defaultdict(list))
        self.send_recv_actor_mappings_for_routed_experts = mappings[0]
        self.recv_send_actor_mappings_for_routed_experts = mappings[1]
        self.routed_expert_rank_pairs: list[RankPair] = []
        self.sorted_send_actors_for_routed_experts = None

    num_src_hyper_expert_parallel = _parallel_size("src", "tensor_and_expert", "tp*ep")
    num_dst_hyper_expert_parallel = _parallel_size("dst", "tensor_and_expert", "tp*ep")

    def setup_rank_mapping(self) -> None:
        """Pick the builders for vLLM (or Megatron) inference from the tp/ep/hep ratios."""
        src_tp, dst_tp = self.num_src_tensor_parallel, self.num_dst_tensor_parallel
        src_ep, dst_ep = self.num_src_expert_parallel, self.num_dst_expert_parallel
        self.tp_num_mapping = dst_tp // src_tp
        self.ep_num_mapping = dst_ep / src_ep
        src_hep, dst_hep = self.num_src_hyper_expert_parallel, self.num_dst_hyper_expert_parallel
        self.hep_num_mapping = dst_hep / src_hep
        if self.tp_num_mapping < 1:
            raise AssertionError(
                f"Currently, tensor parallel world size for training ({src_tp}) should be"
                f"less or equal to tensor parallel world size for inference ({dst_tp}) "
                "with HEP enabled."
            )
        if self.ep_num_mapping > 1:
            raise AssertionError(
                f"Currently, expert parallel world size for training ({src_ep}) should be"
                f"greater or equal to expert parallel world size for inference ({dst_ep}) "
                "with HEP enabled."
            )
        if self.dst_model.use_vllm_backend:
            if self.tp_num_mapping == 1:
                if self.ep_num_mapping == 1:
                    self.build_rank_mapping()
                else:
                    self.build_rank_mapping_for_ep()
            else:
                self.build_rank_mapping_for_ep(add_recv_actor_fn=self.empty_add_recv_actor)
                self.build_rank_mapping_two_stage()
        elif self.ep_num_mapping == 1 and self.tp_num_mapping == 1:
            self.build_rank_mapping()
        elif self.hep_num_mapping == 1:
            self.build_rank_mapping_for_routed_experts()
            self.build_rank_mapping_for_params_except_routed_expert()
        else:
            raise NotImplementedError(
                "ChatLearn does not support inequivalent EP x TP between training and inference "
                "with Hyper Expert Parallel (HEP) enabled and inference model is an instance of "
                "`MegatronModule`. Your current setting is "
                f"EP{src_ep} TP{src_tp} for training model `{self.src_model.name}` "
                f"and EP{dst_ep} TP{dst_tp} for inference model `{self.dst_model.name}`."
            )

    def build_rank_mapping_for_ep(self, add_recv_actor_fn: AddRecvActor | None = None) -> None:
        """Routed experts: each tp*ep trainer block feeds the first inference tp group.

        The block's tp groups are taken in turn (continuing where the previous inference
        replica of the same trainer replica stopped) until they fill the inference tp group.
        """
        walk = self._replica_walk(add_recv_actor_fn)
        if walk is None:
            return
        add, dst_dp_ranks, src_replicas, pipe_interval = walk
        next_tp_group: dict[tuple[int, ...], int] = {}
        for dst_replica_ranks in dst_dp_ranks:
            src_replica_ranks = next(src_replicas)
            key = tuple(src_replica_ranks)
            first_visit = key not in next_tp_group
            next_tp_group.setdefault(key, 0)
            src_blocks = split_ep_and_tp(
                src_replica_ranks, self.num_src_tensor_parallel, self.num_src_expert_parallel
            )
            dst_blocks = split_ep_and_tp(
                dst_replica_ranks, self.num_dst_tensor_parallel, self.num_dst_expert_parallel
            )
            if first_visit:
                self.set_send_actors_to_regroup_routed_experts(src_blocks)
                self.add_routed_experts_regrouping_actor(self.src_model, src_blocks)
            # The original meant to stop here for the empty sink, but its identity test on a
            # bound method never holds; the walk below (and its checks) always runs.
            for i, src_block in enumerate(src_blocks):
                dst_tp_group = dst_blocks[i // pipe_interval][0]
                if len(dst_tp_group) % len(src_block[0]) != 0:
                    raise AssertionError(
                        "TP size of dst model should be times of src model, "
                        f"but got {len(dst_tp_group)} and {len(src_block[0])}"
                    )
                ratio = len(dst_tp_group) // len(src_block[0])
                first = next_tp_group[key]
                senders = [
                    rank for k in range(ratio) for rank in src_block[(first + k) % len(src_block)]
                ]
                for src_rank, dst_rank in zip(senders, dst_tp_group, strict=False):
                    add(src_rank, dst_rank)
                next_tp_group[key] = (first + ratio) % len(src_block)

    def add_recv_actor_for_routed_experts(self, src_rank: int, dst_rank: int) -> None:
        """Routed experts go one to one (Megatron inference with equal tp*ep)."""
        mappings = (
            self.send_recv_actor_mappings_for_routed_experts,
            self.recv_send_actor_mappings_for_routed_experts,
        )
        pairs, ask = self.routed_expert_rank_pairs, self.get_or_cache
        self._add_pair(pairs, (src_rank, dst_rank), self.src_model, ask, mappings)

    def build_rank_mapping_for_routed_experts(self) -> None:
        """One-stage mapping, pairs kept as routed-expert pairs."""
        self.build_rank_mapping(add_recv_actor_fn=self.add_recv_actor_for_routed_experts)

    def build_rank_mapping_for_params_except_routed_expert(self) -> None:
        """Two-stage mapping for everything but the routed experts."""
        self.build_rank_mapping_two_stage(add_recv_actor_fn=None)

    def routed_experts_filter(self, name_list: list[str]) -> list[str]:
        """The routed-expert parameter names."""
        return [name for name in name_list if "mlp.experts" in name]

    def params_except_routed_expert_filter(self, name_list: list[str]) -> list[str]:
        """Every parameter name but the routed experts."""
        return [name for name in name_list if "mlp.experts" not in name]
