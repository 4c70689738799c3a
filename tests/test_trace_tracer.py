"""Tracer API: scopes, trace_call, traced objects and collectives."""

from __future__ import annotations

import pytest
import torch

from syncviz.errors import SyncvizError
from syncviz.trace import Tracer


class TinySync:
    """A stand-in synchronizer: one regroup method and one plain attribute."""

    def __init__(self) -> None:
        self.calls = 0

    def regroup(self, name: str, param_data: torch.Tensor, tp_division: int) -> torch.Tensor:
        self.calls += 1
        width = param_data.shape[1] // tp_division
        pieces = [param_data[:, i * width : (i + 1) * width] for i in range(tp_division)]
        return torch.cat(pieces, dim=0).contiguous().view(param_data.shape)

    def describe(self) -> str:
        return "tiny"


def test_traced_object_method_runs_in_scope_named_after_it():
    """traced(obj).regroup(...) records a scope: call, phase, param from the name argument."""
    tracer = Tracer()
    sync = TinySync()
    x = torch.arange(16.0).view(2, 8)
    out = tracer.traced(sync).regroup("layers.0.dense", tracer.track(x, "src"), 2)
    (pt,) = tracer.trace.params
    assert (pt.param, pt.rank, pt.phase, pt.call) == (
        "layers.0.dense",
        None,
        "regroup",
        "TinySync.regroup",
    )
    assert [op.op for op in pt.ops] == ["getitem", "getitem", "cat", "contiguous", "view"]
    assert pt.output_refs == [pt.ops[-1].outputs[0].ref] == [tracer.ref_of(out)]
    assert torch.equal(out, TinySync().regroup("n", x, 2))


def test_traced_object_is_left_unchanged():
    """Tracing neither patches the class nor the instance; state changes reach the object."""
    sync = TinySync()
    class_dict = dict(vars(TinySync))
    proxy = Tracer().traced(sync)
    proxy.regroup("w", torch.zeros(2, 4), 2)
    assert dict(vars(TinySync)) == class_dict
    assert vars(sync) == {"calls": 1}
    assert proxy.calls == 1 and proxy.describe() == "tiny"
    proxy.calls = 5
    assert sync.calls == 5
    assert isinstance(proxy, TinySync)
    assert proxy.__wrapped__ is sync


def test_outer_scope_wins_over_inferred_fields():
    """Inside an explicit scope, a traced call keeps the scope's param, rank and phase."""
    tracer = Tracer()
    sync = tracer.traced(TinySync())
    with tracer.scope(param="qkv", rank=3, phase="regroup"):
        sync.regroup("ignored", tracer.track(torch.zeros(2, 4), "src"), 2)
    outer, inner = tracer.trace.params
    assert (inner.param, inner.rank, inner.phase, inner.call) == (
        "qkv",
        3,
        "regroup",
        "TinySync.regroup",
    )
    assert outer.ops == [] and len(inner.ops) == 5


def test_trace_call_with_name_keyword_and_plain_function():
    """trace_call runs any function; name= gives the param; the result is returned as is."""

    def halves(t, name):
        return t.chunk(2)

    tracer = Tracer()
    parts = tracer.trace_call(halves, tracer.track(torch.zeros(4), "src"), name="w")
    (pt,) = tracer.trace.params
    assert (pt.param, pt.phase, len(parts)) == ("w", "halves", 2)
    assert pt.output_refs == [tracer.ref_of(parts[0]), tracer.ref_of(parts[1])]
    assert tracer.traced(halves)(torch.zeros(2), name="v") is not None
    assert tracer.trace.params[1].param == "v"


def test_scope_output_defaults_to_last_op_and_mark_output_overrides():
    """Without mark_output a scope's output is its last op's; mark_output sets it explicitly."""
    tracer = Tracer()
    x = tracer.track(torch.zeros(2, 2), "src")
    with tracer.scope(param="a") as first:
        y = x.t()
        x.view(4)
    with tracer.scope(param="b") as second:
        x.view(4)
        tracer.mark_output(y)
    assert first.output_refs == [first.ops[1].outputs[0].ref]
    assert second.output_refs == [tracer.ref_of(y)]


def test_ops_outside_any_scope_share_one_unscoped_trace():
    """Ops under `with tracer` but outside scopes go to one ParamTrace with no param."""
    with Tracer() as tracer:
        x = tracer.track(torch.zeros(4), "src")
        x.view(2, 2)
        x.chunk(2)
    (pt,) = tracer.trace.params
    assert (pt.param, pt.rank, [op.op for op in pt.ops]) == (None, None, ["view", "chunk"])


def test_nothing_recorded_after_the_tracer_exits():
    """Ops on a tracked tensor after leaving `with tracer` are not recorded."""
    with Tracer() as tracer:
        x = tracer.track(torch.zeros(4), "src")
    x.view(2, 2)
    assert tracer.trace.params == []


def test_nested_activation_records_each_op_once():
    """`with tracer` around a scope (both activate recording) records every op once."""
    with Tracer() as tracer, tracer.scope(param="w"), tracer:
        tracer.track(torch.zeros(4), "src").view(2, 2)
    assert [op.op for op in tracer.trace.params[0].ops] == ["view"]


def test_collective_in_scope_shares_the_op_index():
    """A collective inside a scope is stored there, indexed after the ops before it."""
    tracer = Tracer()
    with tracer.scope(param="w", rank=1):
        x = tracer.track(torch.zeros(4, 8, dtype=torch.bfloat16), "src")
        y = x.view(32)
        rec = tracer.record_collective("send", "pp", [1, 5], y, dst=5, label="rows 0-3")
        y.view(4, 8)
    (pt,) = tracer.trace.params
    assert [op.index for op in pt.ops] == [0, 2]
    assert pt.collectives == [rec]
    assert (rec.index, rec.rank, rec.src, rec.dst, rec.bytes) == (1, 1, None, 5, 64)
    assert rec.tensors[0].ref == pt.ops[0].outputs[0].ref
    assert tracer.trace.collectives == []


def test_received_buffer_becomes_traced():
    """An untracked tensor passed to record_collective gets a ref; later ops on it record."""
    tracer = Tracer()
    buf = torch.empty(2, 3)
    rec = tracer.record_collective("recv", "tp", [0, 1], [buf], src=0, rank=1)
    with tracer.scope(param="w", rank=1):
        buf.t()
    assert (rec.bytes, rec.rank, rec.index) == (24, 1, 0)
    assert tracer.trace.collectives == [rec]
    assert tracer.trace.params[0].ops[0].inputs[0].ref == rec.tensors[0].ref


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": ""}, "kind"),
        ({"group": 3}, "group"),
        ({"ranks": [0, "1"]}, "ranks"),
        ({"src": "0"}, "src"),
        ({"tensors": [1, 2]}, "tensors"),
        ({"label": 7}, "label"),
    ],
)
def test_bad_collective_arguments_raise(kwargs, field):
    """Each malformed record_collective argument raises SyncvizError naming it."""
    args = {"kind": "broadcast", "group": "tp", "ranks": [0, 1], "tensors": torch.zeros(1)}
    with pytest.raises(SyncvizError, match=f"collective {field}"):
        Tracer().record_collective(**{**args, **kwargs})


def test_bad_scope_and_track_arguments_raise():
    """A non-int rank, a non-tensor to track and a non-string label raise SyncvizError."""
    tracer = Tracer()
    with pytest.raises(SyncvizError, match="scope rank"), tracer.scope(rank="0"):
        pass
    with pytest.raises(SyncvizError, match=r"torch\.Tensor"):
        tracer.track([1, 2], "src")
    with pytest.raises(SyncvizError, match="label"):
        tracer.track(torch.zeros(1), 3)


def test_untraced_output_gets_ref_and_warning():
    """A traced call returning a tensor not derived from tracked data is named and warned."""
    tracer = Tracer()
    tracer.trace_call(lambda name: torch.zeros(2), "w")
    (pt,) = tracer.trace.params
    assert pt.output_refs == [0]
    assert tracer.trace.source(0).label is None
    assert tracer.trace.warnings == [
        "param 'w' rank None phase '<lambda>': output #0 is not derived from any traced tensor"
    ]
