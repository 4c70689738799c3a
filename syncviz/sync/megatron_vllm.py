"""Megatron -> vLLM synchronizers: ``MegatronVllmSync`` and its QWen, QWen2 and Llama classes.

A faithful port of ChatLearn's ``chatlearn/synchronizer/megatron_vllm.py`` (commit
85f23a9b, December 2024): same classes, methods, arguments and attributes, and the
same tensor operations in the same order, so outputs and error messages match the
original. Collectives go through ``self.collective`` and the Megatron version
through the ``self.get_megatron_version`` hook instead of ``torch.distributed``,
``ray.util.collective`` and an import probe.

Known-wrong behaviour kept on purpose (a corrected synchronizer is separate):

* ``regroup_qkv_tp_slices`` (GQA path) gives each destination slice exactly one K
  and one V head: slice ``idx`` takes K/V head ``idx`` when ``groups >= tp_division``
  and K/V head 0 otherwise. With several groups per slice it drops all but one
  (and picks the wrong one for ``idx > 0``); with K/V replication
  (``tp_division > groups``) every slice gets head 0 instead of head
  ``idx // (tp_division // groups)``.
* The MHA path (``numel == 3 * heads * head_dim * ...``) assumes the QKV is stored
  ``[3, heads, head_dim]``; it is only right after ``fix_qkv_ordering`` ran on the
  same tensor, and when the QKV dict is ``None`` nothing is regrouped at all.
* Slices use floor division: when ``tp_division`` exceeds the head count the
  slices are empty and the final ``view`` fails.
* ``alltoall_routed_experts_from_hep`` builds ``tp_size`` send/receive buffers but
  is called on the tensor-and-expert-parallel group (``tp * ep`` ranks): with
  ``ep > 1`` the real all-to-all rejects the lists.
* ``fix_act_ordering`` swaps the two row halves of every ``mlp.dense_h_to_4h``
  (right only for a trainer that stores ``[up; gate]``) and raises ``IndexError``
  on a 1-D bias; ``fix_shared_expert_ordering`` swaps shared-expert halves likewise.
* ``hidden_size // num_attention_heads`` is used as the head size everywhere,
  ignoring ``kv_channels``.

>>> from syncviz.sync.megatron_vllm import MegatronVllmQWen2Sync, MegatronVersion
>>> MegatronVllmQWen2Sync.__mro__[1].__name__, MegatronVersion.V4.name
('MegatronVllmSync', 'V4')
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch

from syncviz.sync.base import BaseSync, contains_any
from syncviz.sync.vllm_utils import fix_qwen_query_key_value_ordering, split_attn_state

ParamList = list[tuple[str, torch.Tensor]]

# Fused QKV parameter names (legacy Megatron and Megatron-Core).
FUSED_QKV_MODULES = (
    "attention.query_key_value",
    "self_attention.query_key_value",
    "self_attention.linear_qkv",
)
# QWen version constants passed to the QWen sync map (ChatLearn's QwenVersion).
QWEN_VERSION_1 = 1.0
QWEN_VERSION_2 = 2.0
# Megatron checkpoint version whose per-head [q, k, v] layout fix_qkv_ordering undoes.
QKV_CHECKPOINT_VERSION = 3.0

NOT_SUPPORTED_ALLGATHER = (
    "ChatLearn does not support all-gathering routed experts for Megatron-LM, but supports"
    " QWen with HEP enabled. Please export `QWEN_VERSION` as `qwen_moe_v1`."
)
NOT_SUPPORTED_ALLTOALL = (
    "ChatLearn does not support all-to-all routed experts for Megatron-LM, but supports"
    " QWen with HEP enabled. Please export `QWEN_VERSION` as `qwen_moe_v1`."
)


class MegatronVersion(Enum):
    """Megatron flavours ChatLearn told apart; ``V4`` is the QWen-MoE trainer with HEP.

    >>> MegatronVersion["V3"] is MegatronVersion.V3
    True
    """

    V1 = 1
    V2 = 2
    V3 = 3
    V4 = 4


def default_megatron_version() -> MegatronVersion:
    """The version assumed when no hook is set: V4, the only one with routed-expert sync.

    ChatLearn probed the installed Megatron; syncviz simulates the trainer, so the
    version is a setting (``sync.get_megatron_version = lambda: MegatronVersion.V3``).

    >>> default_megatron_version()
    <MegatronVersion.V4: 4>
    """
    return MegatronVersion.V4


def get_use_legacy_models(args_dict: dict[str, Any]) -> bool:
    """The trainer's ``use_legacy_models`` flag, which must be set.

    >>> get_use_legacy_models({"use_legacy_models": False})
    False
    """
    use_legacy_models = args_dict.get("use_legacy_models")
    if use_legacy_models is None:
        raise RuntimeError("Please specify use_legacy_models (True or False), but not None.")
    return use_legacy_models


class MegatronVllmSync(BaseSync):
    """Megatron -> vLLM synchronizer: name mapping, transforms and QKV/expert regrouping.

    Subclasses choose the sync map (``map_src_to_dst``) and the QKV reordering
    function. ``map_name_from_src_to_dst`` must run before the transforms, as in
    ChatLearn, because they read ``self.sync_map``.

    >>> from types import SimpleNamespace
    >>> args = SimpleNamespace(args_dict={"tensor_model_parallel_size": 1})
    >>> sync = MegatronVllmQWen2Sync(SimpleNamespace(module_args=args), None)
    >>> sync.is_parameter_changed, sync.src_module_args is args
    (True, True)
    """

    def __init__(self, src_model: Any, dst_model: Any) -> None:
        super().__init__(src_model, dst_model)
        self.src_module_args = src_model.module_args
        self.is_parameter_changed = True
        self.get_megatron_version: Callable[[], MegatronVersion] = default_megatron_version

    @property
    def _args(self) -> dict[str, Any]:
        return self.src_module_args.args_dict

    @abstractmethod
    def map_src_to_dst(self, src_names: list[str], src_pipe_layer_offset: int) -> Any:
        """Build the sync map for ``src_names`` and pick the QKV reordering function."""

    def _validate(self, sync_map: Any) -> None:
        for attr, keys in (
            ("concat_params_dict", ("modules", "dim")),
            ("to_fix_act_ordering_dict", ("modules", "dim")),
            ("to_fix_qkv_ordering_dict", ("modules", "layer_re")),
        ):
            value = getattr(sync_map, attr)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise RuntimeError(f"Expect {attr} in {self} to be a dict or None, while {value}.")
            for key in keys:
                assert key in value
            assert isinstance(value["modules"], list)

    def map_name_from_src_to_dst(
        self, send_actor: Any, recv_actor: Any, src_names: list[str], dst_names: list[str]
    ) -> tuple[list[str], list[str]]:
        """Map names with the sync map; the layer offset is the sum of both stages' offsets.

        >>> from syncviz.sync.adapter import StageActor
        >>> class Named(MegatronVllmQWen2Sync):
        ...     def map_src_to_dst(self, src_names, offset):
        ...         from types import SimpleNamespace as NS
        ...         return NS(src_names=src_names, dst_names=[f"l{offset}"],
        ...                   concat_params_dict=None, to_fix_act_ordering_dict=None,
        ...                   to_fix_qkv_ordering_dict=None)
        >>> from types import SimpleNamespace
        >>> sync = Named(SimpleNamespace(module_args=None), None)
        >>> sync.map_name_from_src_to_dst(StageActor(2), StageActor(3), ["a"], [])
        (['a'], ['l5'])
        """
        src_offset = self.get_or_cache(send_actor, "get_pipeline_stage_layer_offset")
        dst_offset = self.get_or_cache(recv_actor, "get_pipeline_stage_layer_offset")
        self.sync_map = self.map_src_to_dst(src_names, src_offset + dst_offset)
        self._validate(self.sync_map)
        self.concat_params_dict = self.sync_map.concat_params_dict
        return self.sync_map.src_names, self.sync_map.dst_names

    # ----------------------------------------------------------------- transforms

    def concat_params(self, params_to_sync_list: ParamList) -> ParamList:
        """Concatenate each run of the sync map's concat modules into one parameter.

        The result takes the name of the run's last member; an incomplete run at the
        end of the list is dropped.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen-v1", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> params = [("l.0.mlp.w2.weight", torch.zeros(2, 4)),
        ...           ("l.0.mlp.w1.weight", torch.ones(2, 4))]
        >>> [(name, list(t.shape)) for name, t in sync.concat_params(params)]
        [('l.0.mlp.w1.weight', [4, 4])]
        """
        rule = self.sync_map.concat_params_dict
        if rule is None:
            return params_to_sync_list
        modules, dim = rule["modules"], rule["dim"]
        result: ParamList = []
        pending: list[torch.Tensor] = []
        for name, params in params_to_sync_list:
            if not contains_any(name, modules):
                result.append((name, params))
                continue
            pending.append(params)
            if len(pending) == len(modules):
                result.append((name, torch.cat(pending, dim=dim)))
                pending = []
        return result

    def fix_qkv_ordering(self, params_to_sync_list: ParamList) -> ParamList:
        """Reorder fused QKV tensors with the class's QKV function (in place in the list).

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 4, 2, 4, 8), Parallel(1), Parallel(1))
        >>> layer = "module.module.language_model.encoder.layers.0."
        >>> name = layer + "self_attention.query_key_value.bias"
        >>> sync.fix_qkv_ordering([(name, torch.arange(8.0))])[0][1].tolist()  # [q q k v] per group
        [0.0, 1.0, 4.0, 5.0, 2.0, 6.0, 3.0, 7.0]
        """
        rule = self.sync_map.to_fix_qkv_ordering_dict
        if rule is None:
            return params_to_sync_list
        layer_re, modules = rule["layer_re"], rule["modules"]
        for i, (name, params) in enumerate(params_to_sync_list):
            match = layer_re.match(name)
            if match is None or match.group(2) not in modules:
                continue
            tp_size = self._args["tensor_model_parallel_size"]
            heads = self._args["num_attention_heads"] // tp_size
            head_dim = self._args["hidden_size"] // self._args["num_attention_heads"]
            if self._to_fix_qkv_ordering_func is split_attn_state:
                groups = self._local_query_groups(tp_size, heads)
                params = self._to_fix_qkv_ordering_func(
                    params, heads, groups, head_dim, self._args["hidden_size"]
                )
                params_to_sync_list[i] = (name, params)
                continue
            interleaved_shape = (heads, head_dim, 3, *params.size()[1:])
            # Only plain multi-head attention has this size; GQA tensors pass unchanged.
            if params.numel() != math.prod(interleaved_shape):
                continue
            params = self._to_fix_qkv_ordering_func(
                params, QKV_CHECKPOINT_VERSION, 3, heads, head_dim
            )
            if match.group(3) == "weight":
                params = params.contiguous()
            params_to_sync_list[i] = (name, params)
        return params_to_sync_list

    def fix_act_ordering(self, params_to_sync_list: ParamList) -> ParamList:
        """Swap the two row halves of each fused gate/up listed in the sync map.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> w = torch.arange(4.0).reshape(4, 1)
        >>> sync.fix_act_ordering([("l.0.mlp.dense_h_to_4h.weight", w)])[0][1].flatten().tolist()
        [2.0, 3.0, 0.0, 1.0]
        """
        return _swap_halves_of(params_to_sync_list, self.sync_map.to_fix_act_ordering_dict, _rows)

    def fix_shared_expert_ordering(self, params_to_sync_list: ParamList) -> ParamList:
        """Swap the two row halves of each shared-expert fc1 listed in the sync map.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> fc1 = ("mlp.shared_experts.dense_h_to_4h.weight", torch.tensor([[0.0], [1.0], [2.0]]))
        >>> sync.fix_shared_expert_ordering([fc1])[0][1].flatten().tolist()  # chunk(2): [0 1 | 2]
        [2.0, 0.0, 1.0]
        """
        rule = self.sync_map.to_fix_shared_expert_ordering
        return _swap_halves_of(params_to_sync_list, rule, lambda params: params.chunk(2, dim=0))

    def transform_parameters(self, params_to_sync_list: ParamList) -> ParamList:
        """Concat, then fix gate/up order, QKV order and shared-expert order.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen-v1", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> names = ["l.0.mlp.w2.weight", "l.0.mlp.w1.weight"]
        >>> [name for name, _ in sync.transform_parameters([(n, torch.ones(2, 4)) for n in names])]
        ['l.0.mlp.w1.weight']
        """
        params_to_sync_list = self.concat_params(params_to_sync_list)
        params_to_sync_list = self.fix_act_ordering(params_to_sync_list)
        params_to_sync_list = self.fix_qkv_ordering(params_to_sync_list)
        params_to_sync_list = self.fix_shared_expert_ordering(params_to_sync_list)
        return params_to_sync_list

    # ------------------------------------------------------------ routed experts

    def _routed_expert_op(self, rule: dict[str, Any] | None, name: str) -> str | None:
        """The layer's op name when ``name`` is a routed-expert module of ``rule``."""
        if rule is None:
            return None
        match = rule["layer_re"].match(name)
        if match is None or match.group(2) not in rule["modules"]:
            return None
        return match.group(2)

    def _hep_sizes(self) -> tuple[int, int, int, int, int]:
        """``(tp, hep, experts, local experts per HEP rank, hidden)`` of the trainer."""
        tp_size = self._args["tensor_model_parallel_size"]
        ep_size = self._args["moe_expert_model_parallel_size"]
        hep_size = tp_size * ep_size
        num_experts = self._args["moe_num_experts"]
        return tp_size, hep_size, num_experts, num_experts // hep_size, self._args["hidden_size"]

    def allgather_routed_experts_from_hep(
        self, name: str, params_to_sync: torch.Tensor, group_name: Any, tp_rank: int
    ) -> tuple[torch.Tensor, bool]:
        """All-gather HEP-sharded routed experts and keep this TP rank's slice of each.

        HEP shards whole experts over ``tp * ep`` ranks. Every rank gathers all
        shards, then cuts each expert's rows into ``tp`` slices and keeps slice
        ``tp_rank``: fc1 becomes vLLM's ``w13`` ``[experts, 2 * ffn / tp, hidden]`` with
        the two halves swapped, fc2 becomes ``w2`` ``[experts, hidden, ffn / tp]``.

        >>> from syncviz.run.local_world import LocalWorld
        >>> from syncviz.parallel import Parallel
        >>> from syncviz.spec import ModelSpec
        >>> from syncviz.sync.select import synchronizer_for
        >>> spec = ModelSpec("t", "qwen2-moe", 1, 1, 1, 1, 2, 8, num_experts=2,
        ...                  moe_ffn_hidden_size=1)
        >>> sync = synchronizer_for(spec, Parallel(1), Parallel(1))
        >>> sync.collective = LocalWorld(1).collective(0)
        >>> experts = "module.module.language_model.encoder.layers.0.mlp.experts."
        >>> w2, done = sync.allgather_routed_experts_from_hep(
        ...     experts + "dense_4h_to_h.weight", torch.arange(2.0), None, 0)
        >>> list(w2.shape), done
        ([2, 1, 1], True)

        :meth:`alltoall_routed_experts_from_hep` regroups the same shards by all-to-all:

        >>> w13, _ = sync.alltoall_routed_experts_from_hep(
        ...     experts + "dense_h_to_4h.weight", torch.arange(4.0), None)
        >>> w13.flatten().tolist()   # per expert [first, second] -> [second, first]
        [1.0, 0.0, 3.0, 2.0]
        """
        op_name = self._routed_expert_op(self.sync_map.to_allgather_routed_experts_dict, name)
        if op_name is None:
            return params_to_sync, False
        tp_size, hep_size, num_experts, local_experts, hidden = self._hep_sizes()
        gathered = [torch.empty_like(params_to_sync) for _ in range(hep_size)]
        self.collective.all_gather(gathered, params_to_sync, group=group_name)
        del params_to_sync
        if "dense_h_to_4h" in op_name:
            pieces = []
            for shard in gathered:
                rows = _w13_rows(shard.view((num_experts, -1, hidden)).contiguous(), local_experts)
                pieces.append(_swap_halves(rows.chunk(tp_size, dim=1)[tp_rank], hidden))
            return torch.cat(pieces, dim=0).contiguous(), True
        pieces = []
        for shard in gathered:
            rows = shard.reshape((local_experts, -1, hidden))
            pieces.append(rows.chunk(tp_size, dim=1)[tp_rank].contiguous())
        return torch.cat(pieces, dim=0).transpose(1, 2).contiguous(), True

    def allgather_routed_experts(
        self, name: str, params_to_sync: torch.Tensor, group_name: Any, tp_rank: int
    ) -> tuple[torch.Tensor, bool]:
        """:meth:`allgather_routed_experts_from_hep` on the HEP trainer (V4); else unsupported.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> sync.get_megatron_version = lambda: MegatronVersion.V3
        >>> sync.allgather_routed_experts("x", torch.zeros(1), None, 0)
        Traceback (most recent call last):
        NotImplementedError: ChatLearn does not support all-gathering routed experts ...
        """
        if self.get_megatron_version() == MegatronVersion.V4:
            return self.allgather_routed_experts_from_hep(name, params_to_sync, group_name, tp_rank)
        raise NotImplementedError(NOT_SUPPORTED_ALLGATHER)

    def alltoall_routed_experts_from_hep(
        self, name: str, params_to_sync: torch.Tensor, comm_group: Any
    ) -> tuple[torch.Tensor, bool]:
        """All-to-all HEP-sharded routed experts: send TP slice ``j`` of every expert to rank ``j``.

        Builds ``tp`` send buffers (see the module docstring for why that is wrong
        when ``ep > 1``); the result stacks what every member sent this rank.

        A parameter that is no routed expert passes unchanged, unsent (the example of
        :meth:`allgather_routed_experts_from_hep` regroups one):

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> sync.alltoall_routed_experts_from_hep("l.0.mlp.linear.weight", torch.ones(1), None)
        (tensor([1.]), False)
        """
        op_name = self._routed_expert_op(self.sync_map.to_alltoall_routed_experts_dict, name)
        if op_name is None:
            return params_to_sync, False
        tp_size, _, num_experts, local_experts, hidden = self._hep_sizes()
        if "dense_h_to_4h" in op_name:
            rows = _w13_rows(params_to_sync.view((num_experts, -1, hidden)), local_experts)
            sends = [_swap_halves(piece, hidden) for piece in rows.chunk(tp_size, dim=1)]
            received = self._all_to_all(sends, tp_size, comm_group)
            return torch.cat(received, dim=0).contiguous(), True
        rows = params_to_sync.view((local_experts, -1, hidden))
        sends = [piece.contiguous() for piece in rows.chunk(tp_size, dim=1)]
        received = self._all_to_all(sends, tp_size, comm_group)
        return torch.cat(received, dim=0).transpose(1, 2).contiguous(), True

    def _all_to_all(self, sends: list[torch.Tensor], count: int, group: Any) -> list[torch.Tensor]:
        received = [torch.empty_like(sends[i]) for i in range(count)]
        self.collective.all_to_all(received, sends, group=group)
        return received

    def alltoall_routed_experts(
        self, name: str, params_to_sync: torch.Tensor, comm_group: Any
    ) -> tuple[torch.Tensor, bool]:
        """:meth:`alltoall_routed_experts_from_hep` on the HEP trainer (V4); else unsupported.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(1))
        >>> sync.get_megatron_version = lambda: MegatronVersion.V2
        >>> sync.alltoall_routed_experts("x", torch.zeros(1), None)
        Traceback (most recent call last):
        NotImplementedError: ChatLearn does not support all-to-all routed experts ...
        """
        if self.get_megatron_version() == MegatronVersion.V4:
            return self.alltoall_routed_experts_from_hep(name, params_to_sync, comm_group)
        raise NotImplementedError(NOT_SUPPORTED_ALLTOALL)

    # ---------------------------------------------------------------- regrouping

    def _local_query_groups(self, tp_size: int, heads: int) -> int:
        """K/V groups on one source rank; without GQA every head is its own group."""
        if self._args["group_query_attention"]:
            return self._args["num_query_groups"] // tp_size
        return heads

    def regroup_qkv_tp_slices(
        self, name: str, param_data: torch.Tensor, tp_division: int
    ) -> torch.Tensor:
        """Cut a source rank's fused QKV into ``tp_division`` destination ``[q | k | v]`` slices.

        A tensor of size ``3 * heads * head_dim * ...`` (plain multi-head attention)
        is read as ``[3, heads, head_dim]`` and cut on the head dim, but only when
        the sync map fixes QKV order. Otherwise it is read as ``heads`` query heads
        followed by the K heads and the V heads, and each slice takes its query heads
        and one K and one V head (see the module docstring for why that is wrong).

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 4, 2, 4, 8), Parallel(1), Parallel(2))
        >>> layer = "module.module.language_model.encoder.layers.0."
        >>> name = layer + "self_attention.query_key_value.bias"
        >>> qkv = torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13])  # [q q q q | k0 k1 | v0 v1] ids
        >>> sync.regroup_qkv_tp_slices(name, qkv, 2).tolist()
        [0.0, 1.0, 10.0, 12.0, 2.0, 3.0, 11.0, 13.0]
        """
        fix_rule = self.sync_map.to_fix_qkv_ordering_dict
        if not contains_any(name, FUSED_QKV_MODULES):
            return param_data
        shape = param_data.shape
        tp_size = self._args["tensor_model_parallel_size"]
        heads = self._args["num_attention_heads"] // tp_size
        head_dim = self._args["hidden_size"] // self._args["num_attention_heads"]
        mha_shape = (3, heads, head_dim, *shape[1:])
        if param_data.numel() == math.prod(mha_shape):
            if fix_rule is None:
                return param_data
            return _slice_mha_qkv(param_data.view(mha_shape), shape, heads, tp_division)
        groups = self._local_query_groups(tp_size, heads)
        if fix_rule is None and groups != 1:
            return param_data
        return self._slice_grouped_qkv(param_data, shape, heads, groups, head_dim, tp_division)

    def _slice_grouped_qkv(
        self,
        param_data: torch.Tensor,
        shape: torch.Size,
        heads: int,
        groups: int,
        head_dim: int,
        tp_division: int,
    ) -> torch.Tensor:
        hidden = self._args["hidden_size"]
        is_bias = len(shape) == 1
        head_rows = (
            (heads + 2 * groups, head_dim) if is_bias else (heads + 2 * groups, head_dim, hidden)
        )
        param_data = param_data.view(head_rows)
        heads_per_slice = heads // tp_division
        slices = []
        for idx in range(tp_division):
            q_start = idx * heads_per_slice
            # One K and one V head per slice: the next one while groups cover the
            # slices, else always the first (known-wrong, kept).
            k_start = (heads + idx) if groups // tp_division else heads
            v_start = k_start + groups
            qkv = torch.cat(
                [
                    param_data[q_start : q_start + heads_per_slice].contiguous(),
                    param_data[k_start : k_start + 1].contiguous(),
                    param_data[v_start : v_start + 1].contiguous(),
                ],
                dim=0,
            )
            flat = qkv.reshape(-1) if is_bias else qkv.reshape(-1, hidden)
            slices.append(flat.contiguous())
        return torch.concat(slices, dim=0)

    def regroup_params_to_sync(
        self,
        name: str,
        param_data: torch.Tensor,
        tp_division: int,
        regroup_routed_experts: bool = False,
    ) -> torch.Tensor:
        """Regroup fused QKV slices, then everything :class:`BaseSync` regroups.

        >>> from syncviz import ModelSpec, Parallel
        >>> from syncviz.sync import synchronizer_for as sync_for
        >>> sync = sync_for(ModelSpec("t", "qwen2", 1, 4, 2, 2, 4, 8), Parallel(1), Parallel(2))
        >>> w = torch.arange(4.0).reshape(2, 2)   # row-parallel: columns split over 2 ranks
        >>> sync.regroup_params_to_sync("l.0.self_attention.dense.weight", w, 2).tolist()
        [[0.0, 2.0], [1.0, 3.0]]
        """
        param_data = self.regroup_qkv_tp_slices(name, param_data, tp_division)
        return super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)


def _swap_halves_of(
    params_to_sync_list: ParamList,
    rule: dict[str, Any] | None,
    halves: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
) -> ParamList:
    """Replace each parameter of ``rule``'s modules by its ``halves`` swapped (in place)."""
    if rule is None:
        return params_to_sync_list
    for i, (name, params) in enumerate(params_to_sync_list):
        if contains_any(name, rule["modules"]):
            first, second = halves(params)
            swapped = torch.cat([second, first], dim=rule["dim"]).contiguous()
            params_to_sync_list[i] = (name, swapped)
    return params_to_sync_list


def _rows(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two row halves, indexed as 2-D: a 1-D bias raises IndexError (known-wrong, kept)."""
    half = params.shape[0] // 2
    return params[:half, :], params[half:, :]


def _w13_rows(experts: torch.Tensor, local_experts: int) -> torch.Tensor:
    """A shard's fc1 as ``[2 * local_experts, rows, hidden]`` (each expert's two halves)."""
    return experts.reshape((local_experts * 2, -1, experts.shape[-1]))


def _swap_halves(piece: torch.Tensor, hidden: int) -> torch.Tensor:
    """Per expert, ``[first; second]`` rows -> ``[second; first]`` (vLLM's w13 order)."""
    piece = piece.reshape(piece.shape[0] // 2, -1, hidden)
    first, second = piece.chunk(2, dim=1)
    return torch.cat([second, first], dim=1)


def _slice_mha_qkv(
    qkv: torch.Tensor, shape: torch.Size, heads: int, tp_division: int
) -> torch.Tensor:
    """``[3, heads, ...]`` -> ``tp_division`` stacked ``[3, heads / tp_division, ...]``."""
    per_slice = heads // tp_division
    slices = [qkv[:, i * per_slice : (i + 1) * per_slice] for i in range(tp_division)]
    return torch.concat(slices, dim=0).view(shape)


def _qwen_sync_map(
    sync: MegatronVllmSync,
    src_names: list[str],
    offset: int,
    version: float,
    fix: Callable[..., Any],
) -> Any:
    """The QWen sync map of ``version``; ``fix`` becomes ``sync``'s QKV reordering function."""
    from syncviz.sync.name_maps import Megatron2QWenSyncMap

    sync._to_fix_qkv_ordering_func = fix
    return Megatron2QWenSyncMap(src_names, offset, version)


class MegatronVllmQWenSync(MegatronVllmSync):
    """QWen (v1) trainer -> vLLM: QWen sync map (version 1.0), per-head QKV reordering.

    >>> from syncviz import Parallel, preset
    >>> from syncviz.sync.select import synchronizer_for
    >>> sync = synchronizer_for(preset("qwen-7b").scaled(), Parallel(1), Parallel(2))
    >>> type(sync.sync_map).__name__, sync._to_fix_qkv_ordering_func.__name__
    ('Megatron2QWenSyncMap', 'fix_qwen_query_key_value_ordering')
    """

    def map_src_to_dst(self, src_names: list[str], src_pipe_layer_offset: int) -> Any:
        fix = fix_qwen_query_key_value_ordering
        return _qwen_sync_map(self, src_names, src_pipe_layer_offset, QWEN_VERSION_1, fix)


class MegatronVllmQWen2Sync(MegatronVllmSync):
    """QWen2 / QWen2-MoE trainer -> vLLM: QWen sync map (version 2.0), per-group QKV split.

    >>> from syncviz import Parallel, preset
    >>> from syncviz.sync.adapter import models_for
    >>> one = Parallel(1)
    >>> sync = MegatronVllmQWen2Sync(*models_for(preset("qwen2-7b").scaled(), one, one))
    >>> sync.map_src_to_dst([], 0).qwen_version, sync._to_fix_qkv_ordering_func is split_attn_state
    (2.0, True)
    """

    def map_src_to_dst(self, src_names: list[str], src_pipe_layer_offset: int) -> Any:
        return _qwen_sync_map(
            self, src_names, src_pipe_layer_offset, QWEN_VERSION_2, split_attn_state
        )


class MegatronVllmLlamaSync(MegatronVllmSync):
    """Llama trainer (legacy Megatron or Megatron-Core names) -> vLLM.

    >>> from syncviz import Parallel, preset
    >>> from syncviz.sync.adapter import models_for
    >>> def picked(name):
    ...     models = models_for(preset(name).scaled(), Parallel(1), Parallel(2))
    ...     return type(MegatronVllmLlamaSync(*models).map_src_to_dst([], 0)).__name__
    >>> picked("llama2-7b"), picked("llama3-8b")
    ('Megatron2LlamaSyncMap', 'MCore2LlamaSyncMap')
    """

    def map_src_to_dst(self, src_names: list[str], src_pipe_layer_offset: int) -> Any:
        from syncviz.sync.name_maps import MCore2LlamaSyncMap, Megatron2LlamaSyncMap

        use_legacy_models = get_use_legacy_models(self.src_model.module_args.args_dict)
        sync_map_cls = Megatron2LlamaSyncMap if use_legacy_models else MCore2LlamaSyncMap
        self._to_fix_qkv_ordering_func = fix_qwen_query_key_value_ordering
        return sync_map_cls(src_names, src_pipe_layer_offset)
