"""The multi-token-prediction (MTP) layer through the corrected synchronizer.

Megatron-Core keeps MTP layer ``k`` as ``mtp.layers.k.*`` on the last pipeline stage: a
whole decoder layer under ``transformer_layer.`` and its own ``enorm``, ``hnorm``,
``eh_proj`` (column-parallel: output rows split over tp) and ``final_layernorm``; its head
is the model's ``output_layer``. vLLM's draft model holds it as layer ``N + k``
(``mtp_block.*``, ``eh_proj`` whole on every rank, ``shared_head.head`` = the output
layer's vocab rows). :class:`MtpSyncMixin` carries it: the decoder layer goes through the
synchronizer's own transforms under the name of the stage's next decoder layer (local
``L + k``, whose global index is ``N + k``), and comes back under its own names; the layer's
own kinds are whole tensors, ``eh_proj`` gathered over the trainer's tp ranks with the
routed experts' group. (The engines' drafts use the target's ``lm_head`` as the MTP head, so
no head is sent.) Every name comes from the family's
:class:`~syncviz.families.record.MtpLayout`.

>>> names = MtpNames("deepseek-v3", num_layers=4, src_pp=2)
>>> names.to_pseudo("module.module.mtp.layers.0.transformer_layer.mlp.router.weight")
'module.module.decoder.layers.2.mlp.router.weight'
>>> names.dst_real("model.model.layers.4.mlp.gate.weight")
'model.model.layers.4.mtp_block.mlp.gate.weight'
>>> names.extra("module.module.mtp.layers.0.eh_proj.weight")
('mtp_eh_proj', 0)
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch

from syncviz.errors import SyncvizError
from syncviz.families import FAMILY
from syncviz.families.record import TRAINER_PREFIX
from syncviz.oracle.families import conventions

ParamList = list[tuple[str, torch.Tensor]]


def _template_re(template: str) -> re.Pattern[str]:
    """A name template's prefix as a regex, ``{i}`` its one group."""
    return re.compile(re.escape(template).replace(r"\{i\}", r"(\d+)"))


class MtpNames:
    """The names of a family's MTP layers on one trainer layout (``num_layers`` decoder
    layers over ``src_pp`` stages), both ways."""

    def __init__(self, family: str, num_layers: int, src_pp: int) -> None:
        info = FAMILY[family]
        if info.mtp is None:
            raise SyncvizError(
                f"family {family} has no multi-token-prediction layer",
                fix="leave out mtp for this model",
            )
        prefix = TRAINER_PREFIX[info.trainer]
        conv = conventions(family)
        self.num_layers, self.local = num_layers, num_layers // src_pp
        self.src_old, self.src_new = (prefix + p for p in info.mtp.block_src)
        self.dst_old, self.dst_new = info.mtp.block_dst
        self._real, self._pseudo = _template_re(self.src_new), _template_re(self.src_old)
        self._dst = _template_re(self.dst_old)
        self.mtp_dst = conv.mtp_dst_names
        # The layer's own kinds the trainer keeps under mtp.layers.k (its head is the
        # model's output layer, which the engines' drafts share).
        self._extras = {
            kind: re.compile(_template_re(t[0]).pattern + "$")
            for kind, t in conv.mtp_src_names.items()
            if kind in info.mtp.src_names and "{i}" in t[0]
        }

    def extra(self, name: str) -> tuple[str, int] | None:
        """``(kind, k)`` of one of the MTP layer's own tensors (not its decoder layer)."""
        for kind, pattern in self._extras.items():
            match = pattern.match(name)
            if match:
                return kind, int(match.group(1))
        return None

    def to_pseudo(self, name: str) -> str:
        """A decoder-layer name of MTP layer ``k`` as the stage's local layer ``L + k``."""
        match = self._real.match(name)
        if match is None:
            return name
        return self.src_old.format(i=self.local + int(match.group(1))) + name[match.end() :]

    def to_real(self, name: str) -> str:
        """The inverse of :meth:`to_pseudo` (other names unchanged)."""
        match = self._pseudo.match(name)
        if match is None or int(match.group(1)) < self.local:
            return name
        return self.src_new.format(i=int(match.group(1)) - self.local) + name[match.end() :]

    def dst_real(self, name: str) -> str:
        """A destination layer name of global layer ``N + k`` as the MTP block's."""
        match = self._dst.match(name)
        if match is None or int(match.group(1)) < self.num_layers:
            return name
        return self.dst_new.format(i=int(match.group(1))) + name[match.end() :]


class MtpSyncMixin:
    """Put before a corrected Megatron-Core class: that class, carrying the MTP layers too."""

    _args: dict[str, Any]
    collective: Any

    @functools.cached_property
    def _mtp_names(self) -> MtpNames:
        family = self._conventions.family  # type: ignore[attr-defined]
        args = self._args
        return MtpNames(family, args["num_layers"], args["pipeline_model_parallel_size"])

    def map_name_from_src_to_dst(
        self, send_actor: Any, recv_actor: Any, src_names: list[str], dst_names: list[str]
    ) -> tuple[list[str], list[str]]:
        """The decoder layers' names as the class maps them; then each MTP layer's own
        tensors, at the end."""
        names = self._mtp_names
        own = [(name, names.extra(name)) for name in src_names]
        block = [names.to_pseudo(name) for name, extra in own if extra is None]
        src, dst = super().map_name_from_src_to_dst(  # type: ignore[misc]
            send_actor, recv_actor, block, dst_names
        )
        src, dst = [names.to_real(n) for n in src], [names.dst_real(n) for n in dst]
        for name, extra in own:
            if extra is not None:
                kind, k = extra
                src.append(name)
                dst.append(names.mtp_dst[kind].format(i=names.num_layers + k))
        return src, dst

    def transform_parameters(self, params_to_sync_list: ParamList) -> ParamList:
        """The class's transforms, the MTP decoder layer under its stand-in name."""
        names = self._mtp_names
        params = [(names.to_pseudo(n), t) for n, t in params_to_sync_list]
        out = super().transform_parameters(params)  # type: ignore[misc]
        return [(names.to_real(n), t) for n, t in out]

    def _eh_proj(self, name: str) -> bool:
        extra = self._mtp_names.extra(name)
        return extra is not None and extra[0] == "mtp_eh_proj"

    def allgather_routed_experts(
        self, name: str, params_to_sync: torch.Tensor, group_name: Any, tp_rank: int
    ) -> tuple[torch.Tensor, bool]:
        """Routed experts as the class gathers them; ``eh_proj``'s rows from every tp rank
        (the group's first ``tp`` members, ep rank 0: every ep rank holds the same)."""
        tp = self._args["tensor_model_parallel_size"]
        if self._eh_proj(name):
            if tp == 1:
                return params_to_sync, False
            members = tp * self._expert_parallel()  # type: ignore[attr-defined]
            gathered = [torch.empty_like(params_to_sync) for _ in range(members)]
            self.collective.all_gather(gathered, params_to_sync, group=group_name)
            return torch.cat(gathered[:tp], dim=0).contiguous(), True
        return super().allgather_routed_experts(  # type: ignore[misc]
            self._mtp_names.to_pseudo(name), params_to_sync, group_name, tp_rank
        )

    def alltoall_routed_experts(
        self, name: str, params_to_sync: torch.Tensor, comm_group: Any
    ) -> tuple[torch.Tensor, bool]:
        """The same as an all-to-all: every member sends its ``eh_proj`` rows to all."""
        tp = self._args["tensor_model_parallel_size"]
        if self._eh_proj(name):
            if tp == 1:
                return params_to_sync, False
            members = tp * self._expert_parallel()  # type: ignore[attr-defined]
            received = self._all_to_all(  # type: ignore[attr-defined]
                [params_to_sync] * members, members, comm_group
            )
            return torch.cat(received[:tp], dim=0).contiguous(), True
        return super().alltoall_routed_experts(  # type: ignore[misc]
            self._mtp_names.to_pseudo(name), params_to_sync, comm_group
        )

    def regroup_params_to_sync(self, name: str, *args: Any) -> torch.Tensor:
        """The class's regroup (same arguments), the MTP decoder layer under its stand-in
        name."""
        return super().regroup_params_to_sync(  # type: ignore[misc]
            self._mtp_names.to_pseudo(name), *args
        )


@functools.cache
def with_mtp(cls: type) -> type:
    """``cls`` carrying the MTP layers too (one class per corrected class).

    >>> from syncviz.sync.corrected import CorrectedMegatronVllmMCoreSync
    >>> with_mtp(CorrectedMegatronVllmMCoreSync).__name__
    'CorrectedMegatronVllmMCoreSyncWithMtp'
    """
    return type(f"{cls.__name__}WithMtp", (MtpSyncMixin, cls), {"__doc__": cls.__doc__})
