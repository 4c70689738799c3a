"""Golden-record runners for the synchronizer port (``syncviz.sync``).

Each runner drives the port the way the recording drove the original (see
tests/data/GOLDEN_README.md): it builds the synchronizer from the record's
arguments, calls the real ``map_name_from_src_to_dst`` (empty name list) so the
sync map and QKV function are set for real, applies the sync-map dictionaries the
record says were in effect, calls the public method and compares every output
tensor id for id. Collectives run on simulated ranks (``LocalWorld``, one thread
per rank). A runner lets exceptions propagate; tests/test_golden.py compares
their type and text with the record's. ``map_name_from_src_to_dst`` records are
run by tests/golden_maps.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from syncviz.run.local_world import LocalWorld, RankResult
from syncviz.sync import vllm_utils
from syncviz.sync.adapter import MEGATRON, VLLM, ModuleArgs, StageActor, SyncModel
from syncviz.sync.base import BaseSync
from syncviz.sync.megatron_vllm import (
    MegatronVersion,
    MegatronVllmLlamaSync,
    MegatronVllmQWen2Sync,
    MegatronVllmQWenSync,
    MegatronVllmSync,
)
from tests.golden_support import assert_tensor_matches, make_inputs

Record = dict[str, Any]

SYNC_CLASSES: dict[str, type[MegatronVllmSync]] = {
    cls.__name__: cls
    for cls in (MegatronVllmQWenSync, MegatronVllmQWen2Sync, MegatronVllmLlamaSync)
}
SYNC_MAP_FIELDS = (
    "concat_params_dict",
    "to_fix_act_ordering_dict",
    "to_fix_qkv_ordering_dict",
    "to_fix_shared_expert_ordering",
    "to_allgather_routed_experts_dict",
    "to_alltoall_routed_experts_dict",
)


# ------------------------------------------------------------------------ building


def _as_recorded(rule: dict[str, Any] | None) -> dict[str, Any] | None:
    """A sync-map dictionary as the record writes it (``layer_re`` as its pattern)."""
    if rule is None or "layer_re" not in rule:
        return rule
    return {**rule, "layer_re": rule["layer_re"].pattern}


def _from_recorded(rule: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded sync-map dictionary as the synchronizer uses it (``layer_re`` compiled)."""
    if rule is None or "layer_re" not in rule:
        return rule
    return {**rule, "layer_re": re.compile(rule["layer_re"])}


def build_sync(record: Record, recorded_dicts: dict[str, Any] | None = None) -> MegatronVllmSync:
    """The record's synchronizer after a real ``map_name_from_src_to_dst`` with no names.

    ``recorded_dicts`` (field -> recorded dictionary) replace the sync map's own, as
    the recording did; a non-null recorded dictionary must equal the real one.
    """
    args = record["args"]
    src = SyncModel("src", MEGATRON, ModuleArgs(dict(args.get("args_dict", {}))))
    dst = SyncModel("dst", VLLM, ModuleArgs({}))
    sync = SYNC_CLASSES[record["model_class"]](src, dst)
    sync.map_name_from_src_to_dst(StageActor(0), StageActor(0), [], [])
    if recorded_dicts:
        fields = {field: getattr(sync.sync_map, field) for field in SYNC_MAP_FIELDS}
        for field, recorded in recorded_dicts.items():
            if recorded is not None:
                assert _as_recorded(fields[field]) == recorded, f"{field} differs from the record"
            fields[field] = _from_recorded(recorded)
        sync.sync_map = SimpleNamespace(src_names=[], dst_names=[], **fields)
        sync.concat_params_dict = fields["concat_params_dict"]
    return sync


def _reraise_if_all_failed(results: list[RankResult[Any]]) -> None:
    if results and all(not r.ok for r in results):
        raise results[0].error  # type: ignore[misc]


def _assert_rank_error(result: RankResult[Any], expected: dict[str, str], where: str) -> None:
    assert result.error is not None, f"{where}: expected {expected['type']}, got a result"
    assert type(result.error).__name__ == expected["type"], f"{where}: {result.error!r}"
    assert str(result.error) == expected["message"], f"{where}: {result.error}"


def _assert_regrouped(result: RankResult[Any], expected: dict[str, Any], where: str) -> None:
    if "error" in expected:
        _assert_rank_error(result, expected["error"], where)
        return
    assert result.error is None, f"{where}: raised {result.error!r}"
    tensor, regrouped = result.value
    assert regrouped == expected["regrouped"], f"{where}: regrouped={regrouped}"
    assert_tensor_matches(tensor, expected, where)


# ------------------------------------------------------------------------- runners


def run_base_regroup(record: Record) -> None:
    """``BaseSync.regroup_params_to_sync`` with the record's ``concat_params_dict``."""
    args = record["args"]
    sync = BaseSync(None, None)
    sync.concat_params_dict = args["concat_params_dict"]
    (param,) = make_inputs(record)
    out = sync.regroup_params_to_sync(
        args["name"], param, args["tp_division"], args["regroup_routed_experts"]
    )
    assert_tensor_matches(out, record["output"], record["id"])


def run_megatron_vllm_regroup(record: Record) -> None:
    """``MegatronVllmSync.regroup_params_to_sync`` (QKV slicing, then the base regroup)."""
    args = record["args"]
    sync = build_sync(
        record,
        {
            "to_fix_qkv_ordering_dict": args["to_fix_qkv_ordering_dict"],
            "concat_params_dict": args["concat_params_dict"],
        },
    )
    (param,) = make_inputs(record)
    out = sync.regroup_params_to_sync(
        args["name"], param, args["tp_division"], args["regroup_routed_experts"]
    )
    assert_tensor_matches(out, record["output"], record["id"])


def run_split_attn_state(record: Record) -> None:
    (param,) = make_inputs(record)
    out = vllm_utils.split_attn_state(param, **record["args"])
    assert_tensor_matches(out, record["output"], record["id"])


def run_fix_qwen_qkv(record: Record) -> None:
    (param,) = make_inputs(record)
    out = vllm_utils.fix_qwen_query_key_value_ordering(param, **record["args"])
    assert_tensor_matches(out, record["output"], record["id"])


def transform_runner(method: str) -> Callable[[Record], None]:
    """A runner for one ``[(name, tensor)] -> [(name, tensor)]`` transform method."""

    def run(record: Record) -> None:
        args = record["args"]
        sync = build_sync(record, args["sync_map"])
        params = list(zip(args["param_names"], make_inputs(record), strict=True))
        out = getattr(sync, method)(params)
        expected = record["output"]["params"]
        assert [name for name, _ in out] == [p["name"] for p in expected], record["id"]
        for (name, tensor), exp in zip(out, expected, strict=True):
            assert_tensor_matches(tensor, exp, f"{record['id']} {name}")

    run.__name__ = f"run_{method}"
    return run


def _hep_world(record: Record) -> tuple[LocalWorld, list[torch.Tensor]]:
    inputs = make_inputs(record)
    return LocalWorld(len(inputs), timeout=30.0), inputs


def run_allgather_from_hep(record: Record) -> None:
    """Every HEP rank gathers; ranks ``0..tp-1`` (tp ranks ``0..tp-1``) are compared."""
    args = record["args"]
    world, inputs = _hep_world(record)
    group_name = args["group_name"]
    world.new_group(name=group_name)
    tp = args["args_dict"]["tensor_model_parallel_size"]

    def rank_body(coll: Any) -> tuple[torch.Tensor, bool]:
        sync = build_sync(record)
        sync.collective = coll
        rank = coll.rank()
        return sync.allgather_routed_experts_from_hep(
            args["name"], inputs[rank], group_name, rank % tp
        )

    results = world.run(rank_body)
    _reraise_if_all_failed(results[:tp])
    for expected in record["output"]["per_rank"]:
        tp_rank = expected["tp_rank"]
        _assert_regrouped(results[tp_rank], expected, f"{record['id']} tp_rank {tp_rank}")


def run_alltoall_from_hep(record: Record) -> None:
    """Every member of the simulated group exchanges; each member's result is compared."""
    args = record["args"]
    world, inputs = _hep_world(record)

    def rank_body(coll: Any) -> tuple[torch.Tensor, bool]:
        sync = build_sync(record)
        sync.collective = coll
        return sync.alltoall_routed_experts_from_hep(args["name"], inputs[coll.rank()], None)

    results = world.run(rank_body)
    _reraise_if_all_failed(results)
    for expected in record["output"]["per_rank"]:
        rank = expected["rank"]
        _assert_regrouped(results[rank], expected, f"{record['id']} rank {rank}")


def wrapper_runner(method: str) -> Callable[[Record], None]:
    """A runner for the version-gated ``allgather/alltoall_routed_experts`` wrappers."""

    def run(record: Record) -> None:
        args = record["args"]
        world, inputs = _hep_world(record)
        version = MegatronVersion[args["megatron_version"]]

        def rank_body(coll: Any) -> tuple[torch.Tensor, bool]:
            sync = build_sync(record)
            sync.collective = coll
            sync.get_megatron_version = lambda: version
            param = inputs[coll.rank()]
            if method == "allgather_routed_experts":
                return sync.allgather_routed_experts(args["name"], param, None, args["tp_rank"])
            return sync.alltoall_routed_experts(args["name"], param, None)

        results = world.run(rank_body)
        _reraise_if_all_failed(results)
        _assert_regrouped(results[0], record["output"], record["id"])

    run.__name__ = f"run_{method}"
    return run


RUNNERS: dict[str, Callable[[Record], None]] = {
    "BaseSync.regroup_params_to_sync": run_base_regroup,
    "MegatronVllmSync.regroup_params_to_sync": run_megatron_vllm_regroup,
    "vllm_utils.split_attn_state": run_split_attn_state,
    "vllm_utils.fix_qwen_query_key_value_ordering": run_fix_qwen_qkv,
    **{
        f"MegatronVllmSync.{method}": transform_runner(method)
        for method in (
            "concat_params",
            "fix_act_ordering",
            "fix_qkv_ordering",
            "fix_shared_expert_ordering",
            "transform_parameters",
        )
    },
    "MegatronVllmSync.allgather_routed_experts_from_hep": run_allgather_from_hep,
    "MegatronVllmSync.alltoall_routed_experts_from_hep": run_alltoall_from_hep,
    "MegatronVllmSync.allgather_routed_experts": wrapper_runner("allgather_routed_experts"),
    "MegatronVllmSync.alltoall_routed_experts": wrapper_runner("alltoall_routed_experts"),
}
