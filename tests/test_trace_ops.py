"""The tracer records exactly the ops of small hand-written programs, with their flags."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from syncviz.trace import OpRecord, TensorRef, Tracer


def regroup_row_parallel(param_data: torch.Tensor, tp_division: int) -> torch.Tensor:
    """Written the way the seed writes the row-parallel (self_attention.dense) regroup."""
    param_data_shape = param_data.shape
    param_data_list = []
    col_offset = param_data_shape[1] // tp_division
    for idx in range(tp_division):
        start = idx * col_offset
        end = start + col_offset
        param_data_list.append(param_data[:, start:end])
    return torch.concat(param_data_list, dim=0).contiguous().view(param_data_shape)


def traced_run(fn, *args, label: str = "src"):
    """Run fn(tracked args[0], *args[1:]) in a scope; return (result, its ParamTrace, tracer)."""
    tracer = Tracer()
    with tracer.scope(param="p", rank=0, phase="regroup") as scope:
        result = fn(tracer.track(args[0], label), *args[1:])
    return result, scope, tracer


def shapes(ops: list[OpRecord]) -> list[tuple]:
    """(op, input shapes, args, kwargs, output shapes) per op: compact expected listings."""
    return [
        (op.op, [t.shape for t in op.inputs], op.args, op.kwargs, [t.shape for t in op.outputs])
        for op in ops
    ]


def test_row_parallel_regroup_records_exact_op_list():
    """A [4, 8] row-parallel regroup with tp_division 2 records the five ops, literally."""
    x = torch.arange(32.0).view(4, 8)
    out, scope, tracer = traced_run(regroup_row_parallel, x, 2)
    f32 = "float32"
    assert scope.ops == [
        OpRecord(
            index=0,
            op="getitem",
            inputs=[TensorRef(0, [4, 8], f32)],
            args=[[[None, None, None], [0, 4, None]]],
            outputs=[TensorRef(1, [4, 4], f32)],
            derived_from=[0],
        ),
        OpRecord(
            index=1,
            op="getitem",
            inputs=[TensorRef(0, [4, 8], f32)],
            args=[[[None, None, None], [4, 8, None]]],
            outputs=[TensorRef(2, [4, 4], f32)],
            derived_from=[0],
        ),
        OpRecord(
            index=2,
            op="cat",
            inputs=[TensorRef(1, [4, 4], f32), TensorRef(2, [4, 4], f32)],
            kwargs={"dim": 0},
            outputs=[TensorRef(3, [8, 4], f32)],
            derived_from=[1, 2],
        ),
        OpRecord(
            index=3,
            op="contiguous",
            inputs=[TensorRef(3, [8, 4], f32)],
            outputs=[TensorRef(3, [8, 4], f32)],
            derived_from=[3],
        ),
        OpRecord(
            index=4,
            op="view",
            inputs=[TensorRef(3, [8, 4], f32)],
            args=[[4, 8]],
            outputs=[TensorRef(4, [4, 8], f32)],
            derived_from=[3],
        ),
    ]
    assert scope.output_refs == [4]
    assert tracer.trace.warnings == []
    assert out[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]


def test_gate_up_regroup_records_pairs_then_concat():
    """The fused gate/up regroup of an [8, 2] tensor, tp_division 2, records 9 ops in order."""

    def regroup_gate_up(param_data, tp_division):
        shape = param_data.shape
        rows = shape[0] // tp_division // 2
        pieces = []
        for idx in range(tp_division):
            w1 = param_data[idx * rows : (idx + 1) * rows, :]
            w2 = param_data[(idx + tp_division) * rows : (idx + tp_division + 1) * rows, :]
            pieces.append(torch.concat([w1, w2], dim=0))
        return torch.concat(pieces, dim=0).contiguous().view(shape)

    _, scope, _ = traced_run(regroup_gate_up, torch.zeros(8, 2), 2)
    full = [None, None, None]
    assert shapes(scope.ops) == [
        ("getitem", [[8, 2]], [[[0, 2, None], full]], {}, [[2, 2]]),
        ("getitem", [[8, 2]], [[[4, 6, None], full]], {}, [[2, 2]]),
        ("cat", [[2, 2], [2, 2]], [], {"dim": 0}, [[4, 2]]),
        ("getitem", [[8, 2]], [[[2, 4, None], full]], {}, [[2, 2]]),
        ("getitem", [[8, 2]], [[[6, 8, None], full]], {}, [[2, 2]]),
        ("cat", [[2, 2], [2, 2]], [], {"dim": 0}, [[4, 2]]),
        ("cat", [[4, 2], [4, 2]], [], {"dim": 0}, [[8, 2]]),
        ("contiguous", [[8, 2]], [], {}, [[8, 2]]),
        ("view", [[8, 2]], [[8, 2]], {}, [[8, 2]]),
    ]


def test_chunk_and_view_family_are_named_and_shaped():
    """chunk, transpose, permute, reshape, flatten, narrow, clone, stack, split, T: as named."""

    def program(x):
        a, b = x.chunk(2, dim=1)
        t = a.transpose(0, 1)
        p = b.permute(1, 0)
        r = t.reshape(2, 4)
        f = p.flatten()
        n = x.narrow(0, 1, 2)
        c = n.clone()
        s = torch.stack([a, b])
        first, _ = torch.split(x, 2, dim=0)
        return r, f, c, s, first.T

    _, scope, tracer = traced_run(program, torch.zeros(4, 4))
    assert shapes(scope.ops) == [
        ("chunk", [[4, 4]], [2], {"dim": 1}, [[4, 2], [4, 2]]),
        ("transpose", [[4, 2]], [0, 1], {}, [[2, 4]]),
        ("permute", [[4, 2]], [1, 0], {}, [[2, 4]]),
        ("reshape", [[2, 4]], [2, 4], {}, [[2, 4]]),
        ("flatten", [[2, 4]], [], {}, [[8]]),
        ("narrow", [[4, 4]], [0, 1, 2], {}, [[2, 4]]),
        ("clone", [[2, 4]], [], {}, [[2, 4]]),
        ("stack", [[4, 2], [4, 2]], [], {}, [[2, 4, 2]]),
        ("split", [[4, 4]], [2], {"dim": 0}, [[2, 4], [2, 4]]),
        ("T", [[2, 4]], [], {}, [[4, 2]]),
    ]
    assert scope.ops[0].outputs[0].ref != scope.ops[0].outputs[1].ref
    assert tracer.trace.warnings == []


def test_cast_to_bfloat16_is_flagged():
    """Casting float64 ids to bfloat16 is recorded as a 'to' op with a cast warning."""
    _, scope, tracer = traced_run(
        lambda x: x.to(torch.bfloat16), torch.zeros(2, 2, dtype=torch.float64)
    )
    (op,) = scope.ops
    assert (op.op, op.args, op.outputs[0].dtype) == ("to", ["bfloat16"], "bfloat16")
    assert op.warnings == ["cast float64->bfloat16 may destroy ids"]
    assert tracer.trace.warnings == [
        "param 'p' rank 0 phase 'regroup' op 0 (to): cast float64->bfloat16 may destroy ids"
    ]


@pytest.mark.parametrize(
    ("src", "dst", "flagged"),
    [
        (torch.float32, torch.float64, False),
        (torch.bfloat16, torch.float32, False),
        (torch.int32, torch.float64, False),
        (torch.int32, torch.int64, False),
        (torch.float64, torch.float32, True),
        (torch.float32, torch.float16, True),
        (torch.float16, torch.bfloat16, True),
        (torch.int64, torch.float32, True),
        (torch.int64, torch.float64, True),
        (torch.float64, torch.int64, True),
        (torch.int64, torch.int32, True),
    ],
)
def test_cast_flags_only_narrowing(src, dst, flagged):
    """A cast is flagged exactly when the target cannot hold every value of the source."""
    _, scope, _ = traced_run(lambda x: x.to(dst), torch.zeros(3, dtype=src))
    expected = [f"cast {str(src)[6:]}->{str(dst)[6:]} may destroy ids"] if flagged else []
    assert scope.ops[0].warnings == expected


def test_copy_into_narrower_buffer_is_flagged_as_cast():
    """copy_ of float64 ids into a bfloat16 buffer carries the cast warning."""
    buf = torch.empty(2, dtype=torch.bfloat16)
    _, scope, _ = traced_run(lambda x: buf.copy_(x), torch.zeros(2, dtype=torch.float64))
    assert scope.ops[0].warnings == ["cast float64->bfloat16 may destroy ids"]


def test_arithmetic_is_flagged_not_movement():
    """add (operator), mul and in-place add_ on traced tensors each carry the arithmetic warning."""

    def program(x):
        y = x + 1
        z = torch.mul(y, 2)
        z.add_(3)
        return z

    _, scope, tracer = traced_run(program, torch.zeros(2))
    assert [op.op for op in scope.ops] == ["add", "mul", "add_"]
    assert [op.warnings for op in scope.ops] == [
        ["arithmetic op 'add' changes values: ids no longer valid"],
        ["arithmetic op 'mul' changes values: ids no longer valid"],
        ["arithmetic op 'add_' changes values: ids no longer valid"],
    ]
    # add_ writes in place: same tensor object, new ref derived from the old one.
    assert scope.ops[2].outputs[0].ref != scope.ops[2].inputs[0].ref
    assert scope.ops[2].derived_from == [scope.ops[2].inputs[0].ref]
    assert len(tracer.trace.warnings) == 3


def test_traced_and_untraced_results_are_identical():
    """Tracing changes nothing: values, dtype, shape and strides match an untraced run."""
    x = torch.arange(10240 // 8 * 64, dtype=torch.float64).view(10240 // 8, 64)
    plain = regroup_row_parallel(x, 4)
    traced, _, _ = traced_run(regroup_row_parallel, x, 4)
    assert torch.equal(plain, traced)
    assert (plain.dtype, plain.shape, plain.stride()) == (
        traced.dtype,
        traced.shape,
        traced.stride(),
    )


def test_untracked_tensors_produce_no_ops():
    """Ops on tensors never tracked are not recorded, even inside an active scope."""
    tracer = Tracer()
    with tracer, tracer.scope(param="p"):
        regroup_row_parallel(torch.zeros(4, 8), 2)
        tracer.track(torch.ones(2), "unused")
    assert tracer.trace.params[0].ops == []
    assert tracer.trace.params[0].output_refs == []


def test_metadata_queries_are_not_ops():
    """shape, size(), numel(), dim() and dtype on a traced tensor record nothing."""

    def program(x):
        return x.shape, x.size(0), x.numel(), x.dim(), x.dtype, len(x)

    _, scope, _ = traced_run(program, torch.zeros(3, 2))
    assert scope.ops == []


def test_copy_into_untracked_destination_makes_it_traced():
    """dst.copy_(src): dst gets a new ref derived from src only, and later ops on dst record."""
    dst = torch.empty(2, 3)

    def program(x):
        dst.copy_(x)
        return dst.t()

    _, scope, tracer = traced_run(program, torch.ones(2, 3))
    copy, transpose = scope.ops
    dst_before, src = copy.inputs
    assert (copy.op, src.ref, copy.derived_from) == ("copy_", 0, [0])
    assert tracer.trace.source(dst_before.ref).label is None  # joined untracked
    assert copy.outputs[0].ref not in (dst_before.ref, 0)
    assert transpose.inputs[0].ref == copy.outputs[0].ref


def test_copy_into_view_of_untracked_buffer_traces_the_buffer():
    """Writing into buf[:, 0:2] gives the view and buf itself new refs, so buf is traced."""
    buf = torch.zeros(2, 4)

    def program(x):
        buf[:, 0:2].copy_(x)
        return buf.view(8)

    _, scope, tracer = traced_run(program, torch.ones(2, 2))
    copy, view = scope.ops
    assert [t.shape for t in copy.outputs] == [[2, 2], [2, 4]]
    assert view.inputs[0].ref == copy.outputs[1].ref
    assert tracer.is_traced(buf)


def test_setitem_records_value_and_target():
    """buf[0] = x[1] records setitem: target buf gets a new ref derived from buf and the row."""
    buf = torch.zeros(2, 3)

    def program(x):
        buf[0] = x[1]
        buf[1] = 7.0
        return buf

    _, scope, _ = traced_run(program, torch.ones(2, 3))
    _getitem, set_row, set_const = scope.ops
    assert (set_row.op, set_row.args) == ("setitem", [0])
    old_buf, row = set_row.inputs
    assert set_row.derived_from == [old_buf.ref, row.ref]
    assert set_row.outputs[0].ref not in (old_buf.ref, row.ref)
    assert set_const.warnings == ["setitem writes a constant: those elements carry no id"]


def test_index_tensor_is_input_but_not_value_source():
    """x[idx] lists the index tensor as an input, but the output derives from x alone."""
    idx = torch.tensor([2, 0])
    _, scope, _ = traced_run(lambda x: x[idx], torch.zeros(3, 2))
    (op,) = scope.ops
    assert [t.shape for t in op.inputs] == [[3, 2], [2]]
    assert op.args == []  # top-level tensors are listed in inputs, not args
    assert op.derived_from == [0]
    assert op.warnings == []


def test_arguments_are_rendered_safely():
    """Ellipsis, slices, dtypes and devices in arguments become plain JSON values."""

    def program(x):
        return x[..., 1:], x.to(dtype=torch.float16), x.new_zeros([2], device=torch.device("cpu"))

    _, scope, _ = traced_run(program, torch.zeros(2, 3))
    assert [op.args for op in scope.ops] == [[["...", [1, None, None]]], [], [[2]]]
    assert [op.kwargs for op in scope.ops] == [{}, {"dtype": "float16"}, {"device": "cpu"}]


def test_arbitrary_objects_render_as_type_name_without_repr():
    """An arbitrary object argument is shown by its type name only; its repr is never called."""
    from syncviz.trace.ops import render_arg

    class Opaque:
        def __repr__(self):
            raise AssertionError("repr must not be called")

    assert render_arg([Opaque(), (1, 2.5, float("inf"))], ref_of=id) == [
        "<Opaque>",
        [1, 2.5, "inf"],
    ]


def test_unknown_op_is_flagged_as_unknown():
    """An op outside the movement and arithmetic tables warns that ids may be invalid."""
    _, scope, _ = traced_run(lambda x: torch.nn.functional.pad(x, [1, 1]), torch.zeros(2))
    assert scope.ops[0].warnings == [
        "op 'pad' is not a known data-movement op: ids may no longer be valid"
    ]


def test_freed_tensor_id_reused_is_not_traced():
    """A new tensor that reuses a freed traced tensor's id is not mistaken for it."""
    tracer = Tracer()
    x = tracer.track(torch.zeros(2), "src")
    freed_id = id(x)
    del x
    gc.collect()
    kept = []  # keep misses alive so the freed slot is not taken by a later miss
    for _ in range(10000):
        candidate = torch.zeros(2)
        if id(candidate) == freed_id:
            break
        kept.append(candidate)
    else:
        pytest.skip("the interpreter did not reuse the freed id")
    with tracer:
        candidate.view(1, 2)
    assert not tracer.is_traced(candidate)
    assert tracer.trace.params == []


def test_meta_tensors_trace_without_reading_values():
    """Tracing works on meta tensors (no data at all): it reads shapes, never elements."""
    x = torch.empty(10240 // 8, 8192, device="meta", dtype=torch.bfloat16)
    out, scope, _ = traced_run(regroup_row_parallel, x, 8)
    assert out.shape == (1280, 8192)
    assert [op.op for op in scope.ops] == ["getitem"] * 8 + ["cat", "contiguous", "view"]


def test_list_argument_changed_after_the_call_is_recorded_as_passed():
    """A shape list mutated after view() was called still shows the shape view used."""
    shape = [2, 2]

    def program(x):
        y = x.view(shape)
        shape[0] = 99
        return y

    _, scope, _ = traced_run(program, torch.zeros(4))
    assert scope.ops[0].args == [[2, 2]]


def test_trace_keeps_no_tensor_alive():
    """Intermediate results and index tensors are freed although their ops are recorded."""
    alive = []

    def program(x):
        idx = torch.tensor([1, 0])
        y = x[(idx, slice(None))]
        alive.extend([weakref.ref(idx), weakref.ref(y)])
        return None

    _, scope, tracer = traced_run(program, torch.zeros(2, 3))
    gc.collect()
    assert [w() for w in alive] == [None, None]
    (op,) = scope.ops
    assert op.args == [[f"#{op.inputs[1].ref}", [None, None, None]]]
    assert tracer.trace.to_json()  # plain data only: serialises without torch objects
