"""The in-process sync flow and the checker, on small hand-worked cases."""

from __future__ import annotations

import json

import pytest
import torch

from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.run.inprocess import run_sync
from syncviz.sync.base import BaseSync
from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync


@pytest.mark.slow
def test_equal_tp_is_one_stage_and_exact():
    """With src tp == dst tp every tensor is copied as is: the check passes."""
    report = check(run_sync(preset("llama2-7b").scaled(), Parallel(tp=2), Parallel(tp=2)))
    assert report.ok, report.text()


def test_mcore_o_proj_is_not_column_regrouped_by_the_original(tiny_spec):
    """s=1 -> d=2: the original does not column-split linear_proj, so dst ranks get flat halves:
    tp 0's columns 0-3 (heads 0-1) hold rows 0-3 of all four heads."""
    result = run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
    o_proj = "model.model.layers.0.self_attn.o_proj.weight"
    # Global o_proj is [8, 8] (ids 0..63); dst tp0 must hold columns 0-3 of every row.
    expected_tp0 = [r * 8 + c for r in range(8) for c in range(4)]
    got_tp0 = result.local_ids(1, o_proj).flatten().to(torch.int64).tolist()
    assert got_tp0 == list(range(32))  # the first 32 flat elements: rows 0-3, all columns
    assert got_tp0 != expected_tp0
    report = check(result, "chatlearn")
    param = next(p for p in report.params if p.key == o_proj)
    assert param.status == "wrong"
    assert (
        "dst rank 1 (tp 0), columns 0-3 (heads 0-1): hold heads 0-3 rows 0-3, expected heads 0-1"
        in "\n".join(param.lines())
    )


def test_synchronizer_exception_is_a_finding_not_a_crash(tiny_spec):
    """A synchronizer raising on one parameter is reported; the other parameters still sync."""

    class FailsOnQkv(MegatronVllmLlamaSync):
        def regroup_params_to_sync(
            self, name, param_data, tp_division, regroup_routed_experts=False
        ):
            if "linear_qkv.weight" in name:
                raise RuntimeError("boom")
            return super().regroup_params_to_sync(name, param_data, tp_division)

    result = run_sync(
        tiny_spec, Parallel(tp=1), Parallel(tp=2), synchronizer=FailsOnQkv, layers=[0]
    )
    report = check(result)
    qkv = next(p for p in report.params if "qkv_proj" in p.key)
    assert qkv.status == "error"
    assert any((e.stage, e.note) == ("regroup", "RuntimeError: boom") for e in qkv.errors)
    gate_up = next(p for p in report.params if "gate_up_proj" in p.key)
    assert all(t.writes == 1 for t in gate_up.tensors)  # later parameters were still sent


def test_unknown_destination_names_are_reported(tiny_spec):
    """A synchronizer mapping to names vLLM does not have is told, not silently dropped."""
    report = check(
        run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), synchronizer=BaseSync, layers=[0])
    )
    assert not report.ok
    assert any("vLLM rank 1 has no" in e for e in report.flow_errors)
    assert all(p.status == "wrong" for p in report.params)


def test_report_round_trips_and_escapes_html(tiny_spec):
    """The report serialises to JSON and its HTML escapes names."""
    report = check(run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0]), "<b>x</b>")
    data = json.loads(report.to_json())
    assert data["synchronizer"] == "<b>x</b>"
    assert "&lt;b&gt;x&lt;/b&gt;" in report._repr_html_()
    assert "<b>x</b>" not in report._repr_html_()


def test_trace_records_regroup_ops_and_stage_broadcasts(tiny_spec):
    """The merged trace holds regroup ops per parameter and the stage-1/stage-2 broadcasts."""
    result = run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
    phases = {pt.phase for pt in result.trace.params}
    assert {"regroup", "stage1", "stage2"} <= phases
    broadcasts = [c for c in result.trace.collectives if c.kind == "broadcast"]
    # Each member of a pair records the broadcast: sender (the src) and receiver.
    assert sorted((c.group, c.rank, c.src) for c in broadcasts) == [
        ("stage1:0>1", 0, 0),
        ("stage1:0>1", 1, 0),
        ("stage2:1>2", 1, 1),
        ("stage2:1>2", 2, 1),
    ]


def test_untraced_run_gives_identical_tensors(tiny_spec):
    """Tracing changes nothing: traced and untraced runs give the same destination tensors."""
    a = run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0], trace=True)
    b = run_sync(tiny_spec, Parallel(tp=1), Parallel(tp=2), layers=[0], trace=False)
    for world, tensors in a.dst_tensors.items():
        for name, t in tensors.items():
            assert torch.equal(t.materialize(), b.dst_tensors[world][name].materialize()), name


def test_ids_name_their_parameter():
    """Ids are unique model-wide: data that lands in the wrong parameter is named as such."""

    class SwapsNorms(MegatronVllmLlamaSync):
        def map_name_from_src_to_dst(self, send_actor, recv_actor, src_names, dst_names):
            src, dst = super().map_name_from_src_to_dst(
                send_actor, recv_actor, src_names, dst_names
            )
            swap = {"input_layernorm": "post_attention_layernorm"}
            swap.update({v: k for k, v in swap.items()})
            return src, [_renamed(name, swap) for name in dst]

    result = run_sync(
        preset("llama2-7b").scaled(),
        Parallel(tp=1),
        Parallel(tp=1),
        synchronizer=SwapsNorms,
        layers=[0],
    )
    report = check(result)
    norm = next(p for p in report.params if p.key.endswith("input_layernorm.weight"))
    assert norm.status == "wrong"
    lines = "\n".join(norm.lines())
    assert "holds elements of model.model.layers.0.post_attention_layernorm.weight" in lines
    assert result.local_ids(1, norm.key).eq(-3).all()


def _renamed(name: str, swap: dict[str, str]) -> str:
    for old, new in swap.items():
        if f".{old}." in name:
            return name.replace(f".{old}.", f".{new}.")
    return name


def test_random_weights_give_the_same_verdict_as_ids():
    """Real (random float32) weights are read back bit for bit as the ids an ids run holds."""
    spec = preset("llama3-8b").scaled()
    ids = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
    by_values = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0], values="random")
    for world, tensors in ids.dst_tensors.items():
        for name, t in tensors.items():
            got = by_values.dst_tensors[world][name].materialize()
            assert torch.equal(got, t.materialize()), name
    assert check(by_values).text() == check(ids).text()


def test_p2p_mode_and_small_buckets_give_the_same_tensors():
    """send/recv instead of broadcast, and many small buckets, move exactly the same data."""
    spec = preset("qwen2-7b").scaled()
    base = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0])
    p2p = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], comm="p2p")
    small = run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], bucket_size_mb=0.01)
    for other in (p2p, small):
        for world, tensors in base.dst_tensors.items():
            for name, t in tensors.items():
                assert torch.equal(t.materialize(), other.dst_tensors[world][name].materialize())
    kinds = {c.kind for c in p2p.trace.collectives}
    assert {"send", "recv"} <= kinds and "broadcast" not in kinds
    count = lambda r: sum(c.kind == "broadcast" for c in r.trace.collectives)  # noqa: E731
    assert count(small) > count(base)
