"""The flow on symbolic shards gives the reports and ids of the flow on real float64 ids
(the test oracle), exactly; either way the result holds maps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings

from syncviz import Parallel, SyncvizError, preset
from syncviz.check import check
from syncviz.oracle import model_layout
from syncviz.provenance import SymbolicTensor
from syncviz.run.inprocess import run_sync
from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync
from tests.test_corrected import _is_valid, small_configs


class ReversedRowsSync(MegatronVllmLlamaSync):
    """A user's synchronizer: reverses the rows of every 2-D buffer via transpose + index_select."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        out = super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)
        if out.dim() == 2 and out.shape[0] > 1:
            rows = torch.arange(out.shape[0] - 1, -1, -1)
            out = out.t().index_select(1, rows).t().contiguous()
        return out


SYNCS = {"chatlearn": "chatlearn", "corrected": "corrected", "user": ReversedRowsSync}


def _both(spec, src, dst, synchronizer, **kw):
    a = run_sync(spec, src, dst, synchronizer=synchronizer, trace=False, **kw)
    b = run_sync(
        spec, src, dst, synchronizer=synchronizer, trace=False, provenance="symbolic", **kw
    )
    return a, b


def _assert_same(a, b):
    """Same findings, same report, and every destination element equal."""
    assert [(f.param, f.rank, f.stage, f.message) for f in a.findings] == [
        (f.param, f.rank, f.stage, f.message) for f in b.findings
    ]
    assert check(a).to_json() == check(b).to_json()
    for world, tensors in b.dst_tensors.items():
        for name, t in tensors.items():
            other = a.dst_tensors[world][name]
            assert isinstance(t, SymbolicTensor) and isinstance(other, SymbolicTensor)
            assert torch.equal(t.materialize(), other.materialize()), (world, name)


@pytest.mark.parametrize("sync", sorted(SYNCS))
@pytest.mark.parametrize(
    ("name", "s", "d"), [("llama3-8b", 2, 4), ("qwen2-7b", 1, 4), ("mixtral-8x7b", 2, 4)]
)
def test_presets_symbolic_equals_materialized(name, s, d, sync):
    """Scaled presets (dense GQA, qwen bias, MoE experts): identical reports and tensors."""
    spec = preset(name).scaled(Parallel(tp=s), Parallel(tp=d), num_layers=1)
    _assert_same(*_both(spec, Parallel(tp=s), Parallel(tp=d), SYNCS[sync]))


def test_faithful_finds_wrong_blocks_symbolically():
    """The faithful port's known llama3-8b 2 -> 4 faults are found the same way symbolically."""
    spec = preset("llama3-8b").scaled()
    a, b = _both(spec, Parallel(tp=2), Parallel(tp=4), "chatlearn", layers=[0])
    assert not check(b).ok
    _assert_same(a, b)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(small_configs())
def test_random_specs_symbolic_equals_materialized(config):
    """Random specs and sizes: faithful, corrected and a user subclass give identical reports."""
    spec, src, dst = config
    assume(_is_valid(spec, src, dst))
    try:
        model_layout(spec, src, dst)
    except SyncvizError:
        assume(False)
    for sync in SYNCS.values():
        _assert_same(*_both(spec, src, dst, sync))


def test_symbolic_refuses_ray_and_random_weights():
    """Ray and random weights need real buffers: symbolic provenance refuses with the fix."""
    spec = preset("llama3-8b").scaled()
    for kw in ({"values": "random"}, {"executor": "ray"}):
        with pytest.raises(SyncvizError, match="provenance='materialized'"):
            run_sync(spec, Parallel(tp=1), Parallel(tp=2), provenance="symbolic", **kw)


def test_trace_is_the_same_on_symbolic_shards():
    """The tracer records the same ops, shapes and collectives on symbolic shards."""
    spec = preset("llama3-8b").scaled()
    runs = [
        run_sync(spec, Parallel(tp=2), Parallel(tp=4), layers=[0], provenance=p)
        for p in ("materialized", "symbolic")
    ]
    a, b = (r.trace for r in runs)
    assert [p.summary() for p in a.params] == [p.summary() for p in b.params]
    assert len(a.collectives) == len(b.collectives) > 0


@pytest.mark.parametrize("name", ["llama3-8b", "mixtral-8x7b"])
def test_layers_share_checks_and_still_match(name):
    """Several layers (the checker reuses one layer's comparisons and words for the next):
    the faithful port's report is still the materialized one, layer by layer."""
    spec = preset(name).scaled(Parallel(tp=2), Parallel(tp=4), num_layers=3)
    a, b = _both(spec, Parallel(tp=2), Parallel(tp=4), "chatlearn")
    assert not check(b).ok
    _assert_same(a, b)
