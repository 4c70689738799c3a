"""Symbolic provenance: every data-moving op against the same op on real ids."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.errors import SyncvizError
from syncviz.provenance import (
    RegionMap,
    SymbolicTensor,
    copy_whole,
    row_major,
    symbolic_factories,
)

# Region-level tests take every name from the regions module itself: pytest's importlib mode
# may import that module anew for its doctests, and its classes must not mix with the old.
from syncviz.provenance.regions import RegionMap as Map
from syncviz.provenance.regions import (
    ReshapedMap,
    _coalesce,
    _eager_forms,
    canonical_region,
)


def pair(shape, offset=1000):
    """A real tensor of ids and its symbolic twin (one affine region)."""
    real = (torch.arange(math.prod(shape), dtype=torch.float64) + offset).view(shape)
    sym = SymbolicTensor.from_map(RegionMap.affine(shape, offset, row_major(shape)))
    return real, sym


def same(sym, real):
    """The symbolic result equals the real one: values, shape, strides, contiguity."""
    assert isinstance(sym, SymbolicTensor), type(sym)
    assert sym.shape == real.shape
    assert sym.stride() == real.stride()
    assert sym.is_contiguous() == real.is_contiguous()
    assert torch.equal(sym.materialize(), real), (sym.materialize(), real)


OPS = {
    "getitem slices": lambda x: x[1:3, ::2],
    "getitem negative": lambda x: x[-2:, -3:-1],
    "getitem int": lambda x: x[1],
    "getitem none ellipsis": lambda x: x[None, ..., 1],
    "getitem tensor": lambda x: x[torch.tensor([2, 0, 3, 3])],
    "getitem bool mask": lambda x: x[torch.tensor([True, False, True, True])],
    "narrow": lambda x: x.narrow(1, 2, 3),
    "select": lambda x: x.select(1, -1),
    "cat": lambda x: torch.cat([x[:, 4:], x[:, :4]], dim=1),
    "concat": lambda x: torch.concat([x[2:], x[:2]]),
    "stack": lambda x: torch.stack([x[0], x[2]], dim=1),
    "split": lambda x: x.split([1, 3])[1],
    "split even": lambda x: x.split(2, dim=1)[2],
    "chunk": lambda x: x.chunk(3, dim=1)[1],
    "unbind": lambda x: x.unbind(1)[4],
    "view": lambda x: x.view(2, 2, 6),
    "view -1": lambda x: x.view(-1),
    "reshape of transposed": lambda x: x.t().reshape(3, 8),
    "flatten": lambda x: x.view(2, 2, 6).flatten(1),
    "unflatten": lambda x: x.unflatten(1, (3, 2)),
    "transpose": lambda x: x.transpose(0, 1),
    "t": lambda x: x.t(),
    "permute": lambda x: x.view(2, 2, 6).permute(2, 0, 1),
    "contiguous": lambda x: x.t().contiguous(),
    "clone": lambda x: x[:, 1:4].clone(),
    "index_select": lambda x: torch.index_select(x, 1, torch.tensor([5, 4, 0, 2, 4])),
    "index_select rows": lambda x: x.index_select(0, torch.tensor([3, 1])),
    "expand": lambda x: x[:, :1].expand(4, 3),
    "expand new dim": lambda x: x[0].expand(2, 6),
    "repeat": lambda x: x[:2, :3].repeat(2, 3),
    "repeat new dim": lambda x: x[0, :2].repeat(3, 2),
    "unsqueeze squeeze": lambda x: x.unsqueeze(1).squeeze(1),
    "movedim": lambda x: x.view(2, 2, 6).movedim(0, 2),
    "detach data": lambda x: x.detach().data,
    "to same dtype": lambda x: x.to(torch.float64),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_matches_real_ids(name):
    """Each listed op on a symbolic [4, 6] shard gives exactly the real op's ids."""
    real, sym = pair((4, 6))
    same(OPS[name](sym), OPS[name](real))


WRITES = {
    "copy_ whole": lambda x, d: d.copy_(x),
    "copy_ into rows": lambda x, d: d[1:3].copy_(x[0:2]),
    "copy_ into columns": lambda x, d: d[:, 2:5].copy_(x[:, 0:3]),
    "copy_ into transposed view": lambda x, d: d.t()[1:3].copy_(x.t()[0:2]),
    "copy_ broadcast": lambda x, d: d[1:3].copy_(x[0]),
    "setitem slice": lambda x, d: d.__setitem__((slice(0, 2), slice(1, 3)), x[2:, 4:]),
    "copy_ into flat view": lambda x, d: d.view(-1)[5:17].copy_(x.reshape(-1)[0:12]),
    "copy_ into stepped view": lambda x, d: d[::2].copy_(x[1::2]),
    "fill_": lambda x, d: d[1:3, 2:].fill_(7.0),
    "zero_": lambda x, d: d[:, 1].zero_(),
}


@pytest.mark.parametrize("name", sorted(WRITES))
@pytest.mark.parametrize("make", ["empty_like", "zeros", "full", "new_empty"])
def test_write_matches_real_ids(name, make):
    """Writes through views land in the base exactly as real writes do."""
    real, sym = pair((4, 6))
    outs = []
    for x, fresh in ((real, False), (sym, True)):
        if make in ("empty_like", "new_empty"):
            d = torch.empty_like(x) if make == "empty_like" else x.new_empty((4, 6))
            if not fresh:  # real empty memory is undefined; symbolic reads "unwritten"
                d.fill_(-2.0)
        elif make == "zeros":
            d = torch.zeros_like(x)
        else:
            d = torch.full_like(x, -1.0)
        WRITES[name](x, d)
        outs.append(d)
    same(outs[1], outs[0])


LIKE_INPUTS = {
    "contiguous": lambda x: x,
    "size-1 dim": lambda x: x.view(4, 1, 6),
    "transposed (dense)": lambda x: x.t(),
    "strided (not dense)": lambda x: x[:, ::2],
}
LIKE_OPS = {
    "empty_like": torch.empty_like,
    "zeros_like": torch.zeros_like,
    "ones_like float32": lambda x: torch.ones_like(x, dtype=torch.float32),
    "empty_like contiguous": lambda x: torch.empty_like(x, memory_format=torch.contiguous_format),
}


@pytest.mark.parametrize("inp", sorted(LIKE_INPUTS))
@pytest.mark.parametrize("op", sorted(LIKE_OPS))
def test_like_ops_keep_torch_strides_and_dtype(inp, op):
    """empty/zeros/ones_like of a symbolic tensor: torch's shape, strides and dtype, and
    the fill (unwritten -2 for empty), dense inputs and others alike."""
    real, sym = pair((4, 6))
    want = LIKE_OPS[op](LIKE_INPUTS[inp](real))
    got = LIKE_OPS[op](LIKE_INPUTS[inp](sym))
    assert isinstance(got, SymbolicTensor)
    assert (got.shape, got.stride(), got.dtype) == (want.shape, want.stride(), want.dtype)
    fill = {"empty": -2.0, "zeros": 0.0, "ones": 1.0}[op.split("_")[0]]
    assert got.materialize().unique().tolist() == [fill]


def test_copy_whole_shares_the_map_and_later_writes_stay_apart():
    """copy_whole hands dst the source's map itself; a later write into either one
    replaces that tensor's map only (the other keeps its ids)."""
    real, src = pair((4, 6))
    dst = torch.empty_like(src)
    assert copy_whole(dst, src)
    assert dst.region_map() is src.region_map()
    dst[1].fill_(7.0)
    src[0].copy_(src[3])
    want_dst, want_src = real.clone(), real.clone()
    want_dst[1] = 7.0
    want_src[0] = real[3]
    assert torch.equal(dst.materialize(), want_dst)
    assert torch.equal(src.materialize(), want_src)


def test_copy_whole_leaves_to_torch_what_torch_must_judge():
    """A view, another dtype or shape, the same store or a real tensor: copy_whole does
    nothing (returns False) and the destination keeps its values."""
    real, src = pair((4, 6))
    fresh = torch.empty_like(src)
    cases = {
        "view destination": (fresh[1:3], src[0:2]),
        "transposed destination": (fresh.t(), src.t()),
        "other dtype": (torch.empty_like(src, dtype=torch.float32), src),
        "other shape": (torch.empty(2, 6, dtype=torch.float64, device="meta"), src[:2]),
        "same store": (src, src[0:4]),
        "real destination": (torch.empty(4, 6, dtype=torch.float64), src),
        "real source": (fresh, real),
    }
    for name, (dst, s) in cases.items():
        assert not copy_whole(dst, s), name
    assert fresh.materialize().unique().tolist() == [-2.0]


def test_factories_make_symbolic_buffers():
    """Under symbolic_factories, empty/zeros/full allocate nothing and hold constants."""
    real, sym = pair((2, 3), offset=0)
    with symbolic_factories():
        buf = torch.empty(6, dtype=torch.float64)
        zeros = torch.zeros(2, 3, dtype=torch.float64)
        full = torch.full((2,), 5.0, dtype=torch.float64)
        index = torch.tensor([1, 0])  # integer tensors stay real
        buf.copy_(sym.reshape(-1))
    assert isinstance(buf, SymbolicTensor) and not isinstance(index, SymbolicTensor)
    assert torch.equal(buf.materialize(), real.reshape(-1))
    assert zeros.materialize().tolist() == [[0.0] * 3] * 2
    assert full.materialize().tolist() == [5.0, 5.0]


def test_computing_op_small_is_exact():
    """A small op that computes values runs on the real values (same result)."""
    real, sym = pair((4, 6))
    same(sym * 2 + 1, real * 2 + 1)
    d = sym.clone()
    d.mul_(3)
    same(d, real * 3)


def test_computing_op_large_is_a_finding():
    """A large op that computes values refuses, naming the op and the lost elements."""
    shape = (16384, 8192)
    sym = SymbolicTensor.from_map(RegionMap.affine(shape, 0, row_major(shape)))
    with pytest.raises(SyncvizError, match=r"op add computes values: ids lost, 134217728"):
        _ = sym + 1
    with pytest.raises(SyncvizError, match="op _to_copy computes values"):
        sym.to(torch.bfloat16)


def test_real_size_regroup_stays_compact():
    """A 405B-sized QKV regroup (heads split, K/V interleaved) costs a few regions."""
    heads, groups, hd, hidden, tp = 128, 8, 128, 16384, 8
    rows = (heads + 2 * groups) * hd // tp
    shard = SymbolicTensor.from_map(RegionMap.affine((rows, hidden), 0, (hidden, 1)))
    per_group = shard.view(groups // tp, -1, hd, hidden)
    q, k, v = per_group.split([heads // groups, 1, 1], dim=1)
    out = torch.cat([q.reshape(-1, hidden), k.reshape(-1, hidden), v.reshape(-1, hidden)])
    assert out.shape == (rows, hidden)
    assert len(out.region_map().regions) <= 3


def test_index_select_runs_stay_compact():
    """index_select of evenly spaced rows is one region, not one per row."""
    _, sym = pair((1000, 64))
    picked = sym.index_select(0, torch.arange(10, 1000, 3))
    assert len(picked.region_map().regions) == 1


# ------------------------------------------------------------ eager forms of lazy maps

_LAZY = {
    "row cut in two (a flat chunk of a row-parallel shard)": lambda o: Map.affine(
        (64, 16), o, (128, 1)
    ).reshape((128, 8)),
    "rows read backwards, cut in two": lambda o: (
        Map.affine((64, 16), o, (128, 1)).take(0, 63, -1, 64).reshape((128, 8))
    ),
    "stacked column slices seen side by side": lambda o: Map.affine(
        (2, 64, 4), o, (1024, 16, 1)
    ).reshape((64, 8)),
    "two lazy maps stacked": lambda o: Map.cat(
        [
            Map.affine((64, 16), o, (128, 1)).reshape((128, 8)),
            Map.affine((32, 16), o + 5, (64, 2)).reshape((64, 8)),
        ],
        0,
    ),
    "a float segment beside an int one, into three dims": lambda o: ReshapedMap(
        [Map.affine((64, 16), o, (128, 1)), Map.constant((32, 16), float(o) - 2.0)],
        (48, 4, 8),
    ),
}


@pytest.mark.parametrize("name", list(_LAZY))
def test_shifted_maps_reuse_exact_eager_forms(name):
    """A lazy map shifted by a constant reuses another's eager form: the same regions, each
    offset of the same type, as working it out again, and the same ids as its segments."""
    make = _LAZY[name]
    _eager_forms.clear()
    first = make(1000)
    assert isinstance(first, ReshapedMap)
    assert first.regions == first._eager_uncached().regions
    for shift in (1, 977, -1000, 3 * 2**40):
        m = make(1000 + shift)
        got = m.regions
        assert len(_eager_forms) == 1  # read from the first one's form, none added
        want = make(1000 + shift)._eager_uncached().regions
        assert [(r, type(r.offset)) for r in got] == [(r, type(r.offset)) for r in want]
        assert torch.equal(Map(m.shape, got, merge=False).materialize(), m.materialize())


def test_eager_forms_are_shared_only_by_shifted_maps():
    """Maps that are not one shift of another (a marker that stays, another cut, an offset
    that is not an integer) get their own eager form."""
    _eager_forms.clear()
    data = Map.affine((64, 16), 0, (128, 1))
    marker = Map.constant((32, 16), -2.0)
    base = ReshapedMap([data, marker], (96, 16))
    moved = ReshapedMap([Map.affine((64, 16), 7, (128, 1)), marker], (96, 16))
    other_cut = ReshapedMap([Map.affine((64, 16), 0, (64, 1)), marker], (96, 16))
    for m in (base, moved, other_cut):
        assert m.regions == m._eager_uncached().regions
    assert len(_eager_forms) == 3
    half = ReshapedMap([data, Map.constant((32, 16), 0.5)], (96, 16))
    assert half.regions == half._eager_uncached().regions
    assert len(_eager_forms) == 3  # 0.5 could not be shifted exactly: not kept
    assert [r.offset for r in moved.regions if r.is_constant] == [-2.0]


def _one_affine_function(ids: torch.Tensor) -> bool:
    """Whether ``ids`` (a box of values) is ``first + sum(c * step)`` for one integer step
    per dim, checked element by element."""
    first = ids.flatten()[0]
    want = torch.full_like(ids, float(first))
    for d, n in enumerate(ids.shape):
        if n > 1:
            step = ids.select(d, 1).flatten()[0] - first
            if step != torch.round(step):
                return False
            shape = [1] * ids.dim()
            shape[d] = n
            want = want + step * torch.arange(n, dtype=ids.dtype).view(shape)
    return torch.equal(ids, want)


def _box(region):
    return tuple(slice(a, b) for a, b in zip(region.start, region.stop, strict=True))


def _inside(a0, a1, b0, b1):
    return b0 <= a0 and a1 <= b1


def _put_stop(region, d, stop):
    """``region`` stretched along ``d`` to ``stop`` (its box only)."""
    return region._replace(stop=(*region.stop[:d], stop, *region.stop[d + 1 :]))


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    data=st.data(),
)
def test_joining_pass_joins_every_face_that_continues_one_function(shape, data):
    """The joining pass over boxes of a grid cut of 1-3 dims (some continuing one affine
    function, some constant, some with their own offset, shuffled) keeps every id, makes
    each region a union of given ones with the offset type of its first, and leaves no two
    regions that share a whole face and whose union is one affine function, element by
    element."""
    cuts = [
        sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=3)) if n > 1 else [])
        for n in shape
    ]
    edges = [[0, *c, n] for c, n in zip(cuts, shape, strict=True)]
    strides = row_major(shape)
    regions = []
    for box in itertools.product(*(list(itertools.pairwise(e)) for e in edges)):
        start = tuple(a for a, _ in box)
        stop = tuple(b for _, b in box)
        kind = data.draw(st.sampled_from(["affine", "affine", "constant", "own"]))
        if kind == "affine":
            offset = 100 + sum(a * s for a, s in zip(start, strides, strict=True))
            regions.append(canonical_region(start, stop, offset, strides))
        elif kind == "constant":
            regions.append(canonical_region(start, stop, -2.0, (0,) * len(shape)))
        else:
            own = tuple(data.draw(st.integers(-3, 3)) for _ in shape)
            regions.append(canonical_region(start, stop, data.draw(st.integers(0, 50)), own))
    order = data.draw(st.permutations(range(len(regions))))
    shuffled = [regions[i] for i in order]
    got = _coalesce(shuffled)
    ids = Map(shape, shuffled, merge=False).materialize()
    assert torch.equal(Map(shape, got, merge=False).materialize(), ids)
    assert len(got) <= len(regions)
    for r in regions:  # a region is never cut: it lies in one joined region
        (outer,) = [g for g in got if all(map(_inside, r.start, r.stop, g.start, g.stop))]
        if outer.start == r.start:
            assert type(outer.offset) is type(r.offset)
    for a, b in itertools.permutations(got, 2):
        for d in range(len(shape)):
            apart = [k for k in range(len(shape)) if k != d]
            face = all((a.start[k], a.stop[k]) == (b.start[k], b.stop[k]) for k in apart)
            if face and a.stop[d] == b.start[d]:
                union = _put_stop(a, d, b.stop[d])
                assert not _one_affine_function(ids[_box(union)]), (a, b)


# ------------------------------------------------------------ random op chains

_UNARY = [
    ("t", lambda x: x.dim() == 2, lambda x, d: x.t()),
    ("transpose", lambda x: x.dim() >= 2, lambda x, d: x.transpose(0, -1)),
    ("contiguous", lambda x: True, lambda x, d: x.contiguous()),
    ("clone", lambda x: True, lambda x, d: x.clone()),
    ("flatten", lambda x: x.dim() >= 2, lambda x, d: x.reshape(-1)),
    ("narrow", lambda x: x.shape[0] > 1, lambda x, d: x.narrow(0, d % x.shape[0] // 2 + 0, 1)),
    ("slice step", lambda x: x.shape[-1] > 2, lambda x, d: x[..., d % 2 :: 2]),
    ("select", lambda x: x.dim() >= 2, lambda x, d: x.select(0, d % x.shape[0])),
    (
        "swap halves",
        lambda x: x.shape[0] % 2 == 0,
        lambda x, d: torch.cat(list(reversed(x.chunk(2)))),
    ),
    (
        "split cat",
        lambda x: x.shape[-1] >= 2,
        lambda x, d: torch.cat(x.split(1 + d % (x.shape[-1] - 1), dim=-1)[::-1], dim=-1),
    ),
    (
        "unflatten",
        lambda x: x.shape[0] % 2 == 0 and x.dim() < 4,
        lambda x, d: x.unflatten(0, (2, x.shape[0] // 2)),
    ),
    (
        "index_select",
        lambda x: True,
        lambda x, d: x.index_select(0, torch.tensor([(d * k) % x.shape[0] for k in range(3)])),
    ),
    ("stack", lambda x: x.dim() < 4, lambda x, d: torch.stack([x, x], dim=d % (x.dim() + 1))),
    ("expand", lambda x: x.dim() < 4, lambda x, d: x.unsqueeze(0).expand(2, *x.shape)),
    ("repeat", lambda x: x.numel() < 200, lambda x, d: x.repeat(*([1] * (x.dim() - 1)), 2)),
    ("write back", lambda x: x.shape[0] >= 2, lambda x, d: _write_back(x, d)),
]


def _write_back(x, d):
    out = torch.zeros_like(x)
    n = x.shape[0] // 2
    out[n:].copy_(x[: x.shape[0] - n])
    out[:n].fill_(-1.0)
    return out


@settings(max_examples=120, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    steps=st.lists(st.tuples(st.integers(0, len(_UNARY) - 1), st.integers(0, 9)), max_size=8),
)
def test_random_chains_match_real_ids(shape, steps):
    """Random chains of data-moving ops give exactly the ids real tensors get."""
    real, sym = pair(tuple(shape))
    for which, d in steps:
        name, ok, op = _UNARY[which]
        if not ok(real) or real.numel() > 2000:
            continue
        real, sym = op(real, d), op(sym, d)
        assert sym.shape == real.shape, name
        assert torch.equal(sym.materialize(), real), name
    if isinstance(sym, SymbolicTensor):
        same(sym, real)


def test_provenance_sits_on_the_bottom_floor():
    """Importing syncviz.provenance loads neither the oracle, the synchronizer nor the runner."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, syncviz.provenance; "
        "print(sorted(m for m in sys.modules if m.startswith(('syncviz.oracle', "
        "'syncviz.sync', 'syncviz.run', 'syncviz.check'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert done.stdout.strip() == "[]"


ERRORS = {
    "cat sizes": lambda x: torch.cat([x, x[:, :5]]),
    "cat ndim": lambda x: torch.cat([x, x[0]]),
    "cat dim": lambda x: torch.cat([x, x], dim=2),
    "stack sizes": lambda x: torch.stack([x, x[:, :5]]),
    "view": lambda x: x.view(5, 5),
    "view of transposed": lambda x: x.t().view(24),
    "index_select range": lambda x: x.index_select(0, torch.tensor([4])),
    "index_select negative": lambda x: x.index_select(0, torch.tensor([-1])),
    "getitem range": lambda x: x[9],
    "getitem tensor range": lambda x: x[torch.tensor([0, 7])],
    "copy_ shapes": lambda x: torch.empty_like(x).copy_(x[:3]),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_read_as_on_real_tensors(name):
    """A synchronizer's shape mistake raises the same exception and words as on real ids."""
    real, sym = pair((4, 6))
    with pytest.raises(Exception) as want:
        ERRORS[name](real)
    with pytest.raises(Exception) as got:
        ERRORS[name](sym)
    assert (type(got.value), str(got.value)) == (type(want.value), str(want.value))


def test_shifted_moves_ids_and_keeps_markers():
    """shifted(100) of [2, -1, 0] (id 2 and the padding joined into one region, as the
    oracle's boxes coalesce) gives [102, -1, 100]; [-2, 5, 6] keeps its constant marker."""
    from syncviz.oracle.index import Box, Pad, boxes_map

    m = boxes_map((3,), (3,), [Box((2,), (3,)), Pad(1), Box((0,), (1,))])
    assert m.materialize().tolist() == [2.0, -1.0, 0.0]
    assert m.shifted(100).materialize().tolist() == [102.0, -1.0, 100.0]
    marked = RegionMap.cat([RegionMap.constant((1,), -2.0), RegionMap.affine((2,), 5, (1,))], 0)
    assert marked.shifted(10).materialize().tolist() == [-2.0, 15.0, 16.0]


def test_a_lazy_reshape_pickles_to_an_equal_map():
    """A ReshapedMap (as an oracle map sent to a Ray worker) pickles, eager form read or not."""
    import pickle

    flat = Map.affine((64, 4), 0, (10, 1)).reshape((256,))
    assert type(flat).__name__ == "ReshapedMap"
    fresh = pickle.loads(pickle.dumps(flat))
    assert torch.equal(fresh.materialize(), flat.materialize())
    assert len(flat.regions) == 64  # the eager form read, and cached
    again = pickle.loads(pickle.dumps(flat))
    assert again.segments == flat.segments and again.shape == (256,)
    assert torch.equal(
        again.materialize(),
        torch.arange(64).repeat_interleave(4) * 10.0 + torch.arange(4).repeat(64),
    )
