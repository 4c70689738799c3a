"""The tracer on the synchronizer itself: exact op lists, user subclasses, flagged casts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from syncviz import Parallel
from syncviz.run.inprocess import run_sync
from syncviz.sync.adapter import StageActor, models_for
from syncviz.sync.base import BaseSync
from syncviz.sync.megatron_vllm import MegatronVllmQWen2Sync
from syncviz.sync.select import get_synchronizer
from syncviz.trace import Tracer


@pytest.fixture(scope="module")
def tiny_qwen2(tiny_spec):
    """The tiny model as Qwen2 with a QKV bias: qkv rows = (4 + 2 * 2) * 2 = 16."""
    return replace(tiny_spec, family="qwen2", qkv_bias=True)


def _summary(tracer: Tracer) -> list[str]:
    return tracer.trace.params[0].summary().splitlines()[1:]


def test_row_parallel_regroup_op_list_s1_d2():
    """Seed regroup of a row-parallel [4, 8] weight, tp_division 2: two column slices, cat, view."""
    x = torch.arange(32.0).view(4, 8)
    with Tracer() as tr, tr.scope(param="dense", rank=0, phase="regroup"):
        name = "layers.0.self_attention.dense.weight"
        BaseSync(None, None).regroup_params_to_sync(name, tr.track(x, "src"), 2)
    assert _summary(tr) == [
        "  0: getitem(#0[4, 8] float32, [[None, None, None], [0, 4, None]]) -> #1[4, 4] float32",
        "  1: getitem(#0[4, 8] float32, [[None, None, None], [4, 8, None]]) -> #2[4, 4] float32",
        "  2: cat(#1[4, 4] float32, #2[4, 4] float32, dim=0) -> #3[8, 4] float32",
        "  3: contiguous(#3[8, 4] float32) -> #3[8, 4] float32",
        "  4: view(#3[8, 4] float32, [4, 8]) -> #4[4, 8] float32",
        "  -> #4",
    ]


def test_qkv_regroup_op_list_s1_d2(tiny_qwen2):
    """Faithful QKV regroup, s=1 -> d=2: per slice 2 Q heads, 1 K head, 1 V head, then cat."""
    sync = get_synchronizer(*models_for(tiny_qwen2, Parallel(tp=1), Parallel(tp=2)))
    name = "module.module.language_model.encoder.layers.0.self_attention.query_key_value.weight"
    sync.map_name_from_src_to_dst(StageActor(0), StageActor(0), [name], [name])
    qkv = torch.arange(16 * 8.0).view(16, 8)
    with Tracer() as tr, tr.scope(param="qkv", rank=0, phase="regroup"):
        sync.regroup_params_to_sync(name, tr.track(qkv, "src"), 2)
    f32 = "float32"
    # View as [8 heads (q0-q3, k0-k1, v0-v1), head dim 2, hidden 8]; slice i takes
    # q heads 2i..2i+1 (rows 0:2 / 2:4), k head i (4+i) and v head i (6+i).
    heads = f"#1[8, 2, 8] {f32}"
    expected = [f"  0: view(#0[16, 8] {f32}, [8, 2, 8]) -> {heads}"]
    index, ref = 1, 2
    outputs = []
    for q0, k, v in ((0, 4, 6), (2, 5, 7)):
        parts = []
        for start, stop in ((q0, q0 + 2), (k, k + 1), (v, v + 1)):
            shape = f"[{stop - start}, 2, 8]"
            expected.append(
                f"  {index}: getitem({heads}, [{start}, {stop}, None]) -> #{ref}{shape} {f32}"
            )
            expected.append(
                f"  {index + 1}: contiguous(#{ref}{shape} {f32}) -> #{ref}{shape} {f32}"
            )
            parts.append(f"#{ref}{shape} {f32}")
            index, ref = index + 2, ref + 1
        expected.append(f"  {index}: cat({', '.join(parts)}, dim=0) -> #{ref}[4, 2, 8] {f32}")
        expected.append(
            f"  {index + 1}: reshape(#{ref}[4, 2, 8] {f32}, -1, 8) -> #{ref + 1}[8, 8] {f32}"
        )
        expected.append(
            f"  {index + 2}: contiguous(#{ref + 1}[8, 8] {f32}) -> #{ref + 1}[8, 8] {f32}"
        )
        outputs.append(f"#{ref + 1}[8, 8] {f32}")
        index, ref = index + 3, ref + 2
    expected.append(f"  {index}: cat({', '.join(outputs)}, dim=0) -> #{ref}[16, 8] {f32}")
    expected.append(f"  -> #{ref}")
    assert _summary(tr) == expected


class HalvesInPlace(MegatronVllmQWen2Sync):
    """A user's subclass, defined in this test module, not in the package."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        out = super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)
        return out.flatten().flip(0).view(out.shape)


def test_user_subclass_is_traced_unchanged(tiny_qwen2):
    """A BaseSync subclass from outside the package runs under the tracer, its flip recorded."""
    result = run_sync(tiny_qwen2, Parallel(tp=1), Parallel(tp=2), synchronizer=HalvesInPlace)
    regroups = [pt for pt in result.trace.params if pt.phase == "regroup" and pt.ops]
    assert regroups and all(pt.ops[-1].op == "view" for pt in regroups)
    assert all(any(op.op == "flip" for op in pt.ops) for pt in regroups)
    assert "flip" in HalvesInPlace.regroup_params_to_sync.__code__.co_names  # not wrapped


class CastsToBf16(MegatronVllmQWen2Sync):
    """Casts every regrouped buffer to bfloat16 (and back), which can destroy ids."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        out = super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)
        return out.to(torch.bfloat16).to(out.dtype)


def test_cast_to_bfloat16_is_flagged_in_the_trace(tiny_qwen2):
    """A synchronizer that casts to bfloat16 gets a warning in the trace for each cast."""
    result = run_sync(tiny_qwen2, Parallel(tp=1), Parallel(tp=2), synchronizer=CastsToBf16)
    warnings = [w for w in result.trace.warnings if "float64->bfloat16" in w]
    assert warnings and all("may destroy ids" in w for w in warnings)
