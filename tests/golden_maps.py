"""Golden-record runners for the name maps and the rank mapping of the parameter-sync group.

Each runner drives the port as the recording drove the original: a sync map built from
the record's ``src_names`` / ``layer_offset`` (/ ``qwen_version``); a synchronizer's
``map_name_from_src_to_dst`` called with actors at the recorded layer offsets; a
``ParameterSyncGroup`` over in-process actors built from the record's ranks and GPU map,
with the recorded ``tp_num_mapping``, whose build method is called. Outputs are compared
exactly (dictionaries in order, since the original's error texts print them). Exceptions
propagate; tests/test_golden.py compares their type and text with the record's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from syncviz.sync.adapter import MEGATRON, VLLM, ModuleArgs, StageActor, SyncModel
from syncviz.sync.local_actors import RankLayout, build_local_models
from syncviz.sync.megatron_vllm import (
    MegatronVllmLlamaSync,
    MegatronVllmQWen2Sync,
    MegatronVllmQWenSync,
)
from syncviz.sync.name_maps import (
    MCore2LlamaSyncMap,
    Megatron2LlamaSyncMap,
    Megatron2QWenSyncMap,
    ParameterSyncMap,
)
from syncviz.sync.rank_mapping import ParameterSyncGroup

Record = dict[str, Any]

SYNC_MAPS: dict[str, type[ParameterSyncMap]] = {
    cls.__name__: cls for cls in (Megatron2LlamaSyncMap, MCore2LlamaSyncMap, Megatron2QWenSyncMap)
}
SYNCHRONIZERS = {
    cls.__name__: cls
    for cls in (MegatronVllmQWenSync, MegatronVllmQWen2Sync, MegatronVllmLlamaSync)
}


def _plain(value: Any) -> Any:
    """JSON-like form of a map attribute: compiled regexes become their pattern text."""
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def assert_same(got: Any, expected: Any, where: str) -> None:
    """Equal, and dictionaries in the same key order (compared as JSON text)."""
    assert got == expected, f"{where}: got {got!r}, expected {expected!r}"
    got_text, expected_text = json.dumps(_plain(got)), json.dumps(expected)
    assert got_text == expected_text, f"{where}: order differs: {got_text} != {expected_text}"


def _build_map(fn: str, args: dict[str, Any], src_names: list[str]) -> ParameterSyncMap:
    cls = SYNC_MAPS[fn.split(".")[0]]
    if "qwen_version" in args:
        return cls(src_names, args["layer_offset"], args["qwen_version"])
    return cls(src_names, args["layer_offset"])


def run_sync_map(record: Record) -> None:
    """A sync map's reordered source names and its destination names."""
    sync_map = _build_map(record["fn"], record["args"], list(record["args"]["src_names"]))
    got = {"src_names": sync_map.src_names, "dst_names": sync_map.dst_names}
    assert_same(got, record["output"], record["id"])


def run_sync_map_properties(record: Record) -> None:
    """Every recorded table and configuration dictionary of a sync map."""
    sync_map = _build_map(record["fn"], record["args"], [])
    for name, expected in record["output"].items():
        assert_same(_plain(getattr(sync_map, name)), expected, f"{record['id']}.{name}")


def run_map_name(record: Record) -> None:
    """``map_name_from_src_to_dst`` with stage actors at the recorded layer offsets."""
    args = record["args"]
    src_model = SyncModel("policy", MEGATRON, ModuleArgs(dict(args["args_dict"])))
    dst_model = SyncModel("inference", VLLM, ModuleArgs({}))
    sync = SYNCHRONIZERS[record["model_class"]](src_model, dst_model)
    src_names, dst_names = sync.map_name_from_src_to_dst(
        StageActor(args["src_pipe_layer_offset"]),
        StageActor(args["dst_pipe_layer_offset"]),
        list(args["src_names"]),
        [],
    )
    got = {
        "src_names": src_names,
        "dst_names": dst_names,
        "sync_map_class": type(sync.sync_map).__name__,
        "concat_params_dict": _plain(sync.concat_params_dict),
        "to_fix_qkv_ordering_func": sync._to_fix_qkv_ordering_func.__name__,
    }
    assert_same(got, record["output"], record["id"])


def _ranks(actors: list[Any] | None) -> list[Any] | None:
    return None if actors is None else [None if a is None else a.rank for a in actors]


def rank_mapping_runner(method: str) -> Callable[[Record], None]:
    """A runner calling ``ParameterSyncGroup.<method>`` on the record's layout."""

    def run(record: Record) -> None:
        args = record["args"]
        src_model, dst_model = build_local_models(RankLayout.from_dict(args))
        group = ParameterSyncGroup(src_model, dst_model, "golden", build_mapping=False)
        group.tp_num_mapping = args["tp_num_mapping"]
        getattr(group, method)()
        src_dp_ranks, dst_dp_ranks = group.get_src_and_dst_dp_ranks()
        got: dict[str, Any] = {
            "src_dp_ranks": src_dp_ranks,
            "dst_dp_ranks": dst_dp_ranks,
            "stage1": [list(pair) for pair in group.stage1_rank_pairs],
            "stage2": [list(pair) for pair in group.stage2_rank_pairs],
        }
        if "send_actors_to_regroup_routed_experts" in record["output"]:
            regroup = group.send_actors_to_regroup_routed_experts
            got["send_actors_to_regroup_routed_experts"] = (
                None if regroup is None else [_ranks(actors) for actors in regroup]
            )
        assert_same(got, record["output"], record["id"])

    run.__name__ = f"run_{method}"
    return run


RUNNERS: dict[str, Callable[[Record], None]] = {
    **{name: run_sync_map for name in SYNC_MAPS},
    **{f"{name}.properties": run_sync_map_properties for name in SYNC_MAPS},
    "MegatronVllmSync.map_name_from_src_to_dst": run_map_name,
    "ParameterSyncGroup.build_rank_mapping": rank_mapping_runner("build_rank_mapping"),
    "ParameterSyncGroup.build_rank_mapping_two_stage": rank_mapping_runner(
        "build_rank_mapping_two_stage"
    ),
}
