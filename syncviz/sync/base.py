"""``BaseSync``: the parameter synchronizer every ChatLearn-style subclass builds on.

A faithful port of ChatLearn's ``chatlearn/synchronizer/base.py`` (commit 85f23a9b,
December 2024): same class, methods, arguments and attributes, and the same tensor
operations in the same order, so outputs and error messages match the original.

What changed, and why:

* Actor calls (``get_or_cache``) call ``actor.<func>.remote(...)`` when the method
  has ``.remote`` and resolve the result with the ``resolve_future`` hook (set it to
  ``ray.get`` on Ray); plain objects are called directly. The sync layer never
  imports Ray.
* Collectives go through ``self.collective`` (see :mod:`syncviz.sync.collective`),
  which defaults to ``torch.distributed``.

Known-wrong behaviour kept on purpose (the corrected synchronizer is separate):

* ``regroup_params_to_sync`` cuts slices with floor division: when ``tp_division``
  does not divide the split dimension, trailing rows or columns are dropped and the
  final ``view`` fails (``shape '[..]' is invalid for input of size ..``).
* ``get_or_cache`` keys its cache by actor and function name only, ignoring the
  call's arguments.

>>> import torch
>>> sync = BaseSync(src_model=None, dst_model=None)
>>> w = torch.arange(8.0).reshape(2, 4)
>>> sync.regroup_params_to_sync("layers.0.self_attention.dense.weight", w, 2).tolist()
[[0.0, 1.0, 4.0, 5.0], [2.0, 3.0, 6.0, 7.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from syncviz.sync.collective import Collective, TorchCollective

# Row-parallel layers: the source shard's columns are cut into tp_division pieces.
ROW_PARALLEL_MODULES = (
    "self_attention.dense",
    "mlp.dense_4h_to_h",
    "mlp.linear_fc2",
    "mlp.shared_experts.dense_4h_to_h",
)
# Fused gate/up layers: rows are [gate; up], each cut into tp_division pieces.
GATE_UP_MODULES = (
    "mlp.dense_h_to_4h",
    "mlp.linear_fc1",
    "mlp.shared_experts.dense_h_to_4h",
)
ROUTED_EXPERTS_FC1 = "mlp.experts.dense_h_to_4h"
ROUTED_EXPERTS_FC2 = "mlp.experts.dense_4h_to_h"


def contains_any(name: str, fragments: tuple[str, ...] | list[str]) -> bool:
    """Whether any fragment occurs in ``name`` (the original's substring matching).

    >>> contains_any("layers.0.mlp.linear_fc1.weight", GATE_UP_MODULES)
    True
    """
    return any(fragment in name for fragment in fragments)


class BaseSync:
    """Base synchronizer: identity name mapping and transforms, plus TP regrouping.

    ``src_model`` and ``dst_model`` are the source and destination models (in
    ChatLearn, the first replica's model of each side). ``is_parameter_changed``
    tells the caller whether transforms change the parameters;
    ``concat_params_dict`` is set by subclasses that concatenate parameters.

    >>> sync = BaseSync("src", "dst")
    >>> sync.map_name_from_src_to_dst(None, None, ["a"], ["b"])
    (['a'], ['b'])
    """

    def __init__(self, src_model: Any, dst_model: Any) -> None:
        self.src_model = src_model
        self.dst_model = dst_model
        self.is_parameter_changed = False
        self.concat_params_dict: dict[str, Any] | None = None
        # Injectable hooks (see the module docstring).
        self.collective: Collective = TorchCollective()
        self.resolve_future: Callable[[Any], Any] = _identity
        self._actor_results: dict[tuple[str, Any], Any] = {}

    def call_actor(self, actor: Any, func_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``actor.<func_name>``: remotely (then resolved) if it is a Ray-style actor.

        >>> class Actor:
        ...     def get_pipeline_stage_layer_offset(self):
        ...         return 4
        >>> BaseSync(None, None).call_actor(Actor(), "get_pipeline_stage_layer_offset")
        4
        """
        method = getattr(actor, func_name)
        if hasattr(method, "remote"):
            return self.resolve_future(method.remote(*args, **kwargs))
        return method(*args, **kwargs)

    def get_or_cache(self, actor: Any, func_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``actor.<func_name>`` once; later calls return the first result.

        >>> class Actor:
        ...     calls = 0
        ...     def offset(self):
        ...         Actor.calls += 1
        ...         return Actor.calls
        >>> sync, actor = BaseSync(None, None), Actor()
        >>> sync.get_or_cache(actor, "offset"), sync.get_or_cache(actor, "offset")
        (1, 1)
        """
        key = (func_name, actor)
        if key not in self._actor_results:
            self._actor_results[key] = self.call_actor(actor, func_name, *args, **kwargs)
        return self._actor_results[key]

    def map_name_from_src_to_dst(
        self, send_actor: Any, recv_actor: Any, src_names: list[str], dst_names: list[str]
    ) -> tuple[list[str], list[str]]:
        """Map source parameter names to destination names (identity here).

        >>> BaseSync(None, None).map_name_from_src_to_dst(None, None, [], [])
        ([], [])
        """
        return src_names, dst_names

    def allgather_routed_experts(
        self, name: str, params_to_sync: torch.Tensor, group_name: Any, tp_rank: int
    ) -> tuple[torch.Tensor, bool]:
        """All-gather routed-expert parameters; returns ``(tensor, regrouped)``.

        >>> BaseSync(None, None).allgather_routed_experts("x", 1, "g", 0)
        (1, False)
        """
        return params_to_sync, False

    def alltoall_routed_experts(
        self, name: str, params_to_sync: torch.Tensor, comm_group: Any
    ) -> tuple[torch.Tensor, bool]:
        """All-to-all routed-expert parameters; returns ``(tensor, regrouped)``.

        >>> BaseSync(None, None).alltoall_routed_experts("x", 1, None)
        (1, False)
        """
        return params_to_sync, False

    def transform_parameters(
        self, params_to_sync_list: list[tuple[str, torch.Tensor]]
    ) -> list[tuple[str, torch.Tensor]]:
        """Transform ``[(name, tensor)]`` before sending (concat, reorder); identity here.

        >>> BaseSync(None, None).transform_parameters([("a", 1)])
        [('a', 1)]
        """
        return params_to_sync_list

    def regroup_params_to_sync(
        self,
        name: str,
        param_data: torch.Tensor,
        tp_division: int,
        regroup_routed_experts: bool = False,
    ) -> torch.Tensor:
        """Reorder a source shard so that its flat memory is ``tp_division`` destination chunks.

        Row-parallel weights ``[w, h * d]`` become ``d`` stacked ``[w, h]`` column
        slices; fused gate/up weights become ``d`` stacked ``[gate_i; up_i]`` row
        pairs; with ``regroup_routed_experts``, expert fc2 ``[e, h, w]`` is cut along
        its last dim and expert fc1 along its per-expert row dim. The result keeps
        the input's shape.

        >>> import torch
        >>> fc1 = torch.arange(4.0).reshape(4, 1)   # [gate0, gate1, up0, up1]
        >>> BaseSync(None, None).regroup_params_to_sync("mlp.linear_fc1", fc1, 2).flatten().tolist()
        [0.0, 2.0, 1.0, 3.0]
        """
        shape = param_data.shape
        if contains_any(name, ROW_PARALLEL_MODULES):
            param_data = _stack_column_slices(param_data, shape, tp_division)
        if contains_any(name, GATE_UP_MODULES) or (
            "mlp.w1" in name and self.concat_params_dict is not None
        ):
            param_data = _stack_gate_up_pairs(param_data, shape, tp_division)
        if regroup_routed_experts:
            if ROUTED_EXPERTS_FC2 in name:
                param_data = _stack_expert_fc2_slices(param_data, shape, tp_division)
            elif ROUTED_EXPERTS_FC1 in name:
                param_data = _stack_expert_fc1_slices(param_data, shape, tp_division)
        return param_data


def _identity(value: Any) -> Any:
    return value


def _stack_column_slices(data: torch.Tensor, shape: torch.Size, parts: int) -> torch.Tensor:
    """``[w, h * parts] -> parts * [w, h]``, stacked on dim 0, viewed back to ``shape``."""
    width = shape[1] // parts
    pieces = [data[:, i * width : (i + 1) * width] for i in range(parts)]
    return torch.concat(pieces, dim=0).contiguous().view(shape)


def _stack_gate_up_pairs(data: torch.Tensor, shape: torch.Size, parts: int) -> torch.Tensor:
    """``[gate; up]`` -> ``[gate_0; up_0; gate_1; up_1; ...]``, viewed back to ``shape``."""
    rows = shape[0] // parts // 2
    pieces = []
    for i in range(parts):
        gate = data[i * rows : (i + 1) * rows, :]
        up = data[(i + parts) * rows : (i + parts + 1) * rows, :]
        pieces.append(torch.concat([gate, up], dim=0))
    return torch.concat(pieces, dim=0).contiguous().view(shape)


def _stack_expert_fc2_slices(data: torch.Tensor, shape: torch.Size, parts: int) -> torch.Tensor:
    """``[e, h, w * parts] -> parts * [e, h, w]`` stacked on dim 0, viewed back to ``shape``."""
    height = shape[2] // parts
    pieces = [data[:, :, i * height : (i + 1) * height] for i in range(parts)]
    return torch.concat(pieces, dim=0).contiguous().view(shape)


def _stack_expert_fc1_slices(data: torch.Tensor, shape: torch.Size, parts: int) -> torch.Tensor:
    """Per expert half ``[2e, w * parts, h] -> parts * [2e, w, h]``, viewed back to ``shape``."""
    data = data.reshape(shape[0] * 2, -1, shape[2])
    width = data.shape[1] // parts
    pieces = [data[:, i * width : (i + 1) * width, :] for i in range(parts)]
    return torch.concat(pieces, dim=0).contiguous().view(shape)
