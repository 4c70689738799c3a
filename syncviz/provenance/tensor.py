"""Symbolic provenance tensors: real shapes and strides, values kept as a compact map.

A :class:`SymbolicTensor` is a ``torch.Tensor`` subclass with no data. Its
shape, strides and errors come from running every op on a meta tensor (so they
are exactly torch's); its values are a :class:`~syncviz.provenance.regions.RegionMap`
kept beside it. Views share their base's :class:`Store`, as torch views share
storage, so ``dst[2:4].copy_(x)`` writes into ``dst``. Ops that only move data
map the regions; ops that compute values run on materialized values when the
tensor is small and otherwise raise a :class:`~syncviz.errors.SyncvizError`
that names the op and the elements whose ids are lost (never a silent pass).

>>> import torch
>>> w = SymbolicTensor.from_map(RegionMap.affine((4, 6), 100, (6, 1)))  # ids 100..123
>>> y = torch.cat([w[:, 3:], w[:, :3]], dim=1).t().contiguous()
>>> y.shape, y.is_contiguous(), len(y.region_map().regions)
(torch.Size([6, 4]), True, 2)
>>> torch.equal(y.materialize(), torch.cat([torch.arange(100.0, 124).view(4, 6)[:, 3:],
...     torch.arange(100.0, 124).view(4, 6)[:, :3]], 1).t())
True
>>> out = torch.empty_like(w)  # unwritten (-2) until copied into
>>> _ = out[1:3].copy_(w[0:2])
>>> out.materialize()[:, 0].tolist()
[-2.0, 100.0, 106.0, -2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from syncviz.errors import SyncvizError
from syncviz.geometry import meetings, row_major, unravel
from syncviz.provenance.regions import MAX_REGIONS, Region, RegionMap, canonical_region, ids_map

aten = torch.ops.aten

# The value a never-written element holds (as the materialized path's UNWRITTEN_ID).
UNWRITTEN = -2.0
# Ops that compute values run on real values up to this many elements (8 MiB of float64).
SMALL = 2**20

ViewFn = Callable[[RegionMap], RegionMap]


class Store:
    """The values of a base tensor, shared by all its views (as torch storage is)."""

    __slots__ = ("map", "version")

    def __init__(self, region_map: RegionMap) -> None:
        self.map = region_map
        self.version = 0

    def set(self, region_map: RegionMap) -> None:
        self.map = _bounded(region_map)
        self.version += 1


class SymbolicTensor(torch.Tensor):
    """A data-free tensor whose values (provenance ids) are a :class:`RegionMap`.

    Build one with :meth:`from_map`; read it with :meth:`region_map` (compact) or
    :meth:`materialize` (a real float64 tensor).
    """

    _meta: torch.Tensor
    _store: Store
    _chain: tuple[ViewFn, ...]
    _cache: tuple[int, RegionMap] | None

    @staticmethod
    def __new__(cls, meta: torch.Tensor, store: Store, chain: tuple[ViewFn, ...] = ()):
        t = torch.Tensor._make_wrapper_subclass(
            cls,
            meta.shape,
            strides=meta.stride(),
            storage_offset=meta.storage_offset(),
            dtype=meta.dtype,
            device="cpu",
            requires_grad=False,
        )
        t._meta, t._store, t._chain, t._cache = meta, store, chain, None
        return t

    @classmethod
    def from_map(cls, region_map: RegionMap, dtype: torch.dtype = torch.float64) -> SymbolicTensor:
        """A fresh (base) tensor holding ``region_map``."""
        return cls(torch.empty(region_map.shape, dtype=dtype, device="meta"), Store(region_map))

    def region_map(self) -> RegionMap:
        """The values of this tensor (a view replays its view ops on the base's map)."""
        version = self._store.version
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        m = self._store.map
        for fn in self._chain:
            m = fn(m)
        self._cache = (version, m)
        return m

    def materialize(self) -> torch.Tensor:
        """The values as a real float64 tensor (allocates every element)."""
        return self.region_map().materialize()

    def __repr__(self, *, tensor_contents=None) -> str:  # type: ignore[override]
        m = self.region_map()
        return f"SymbolicTensor(shape={list(self.shape)}, regions={m.size_hint})"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is None:
            return _compute(func, args, kwargs)
        return handler(func, args, kwargs)


def is_symbolic(t: Any) -> bool:
    return isinstance(t, SymbolicTensor)


def as_symbolic(t: torch.Tensor) -> SymbolicTensor:
    """``t`` as a tensor of maps: a symbolic tensor as it is, a real tensor of ids read in
    runs (:func:`~syncviz.provenance.regions.ids_map`): how real buffers join a result.

    >>> as_symbolic(torch.tensor([4.0, 5, 6, -2])).region_map().regions[0]
    Region(start=(0,), stop=(3,), offset=4.0, strides=(1,))
    """
    return t if isinstance(t, SymbolicTensor) else SymbolicTensor.from_map(ids_map(t))


def map_of(t: Any) -> RegionMap:
    """The map of a symbolic tensor, or of a real tensor's values."""
    if isinstance(t, SymbolicTensor):
        return t.region_map()
    return RegionMap.from_values(t)


# ---------------------------------------------------------------- helpers


def _meta(x: Any) -> Any:
    if isinstance(x, SymbolicTensor):
        return x._meta
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    return x


def _metas(x: Any) -> Any:
    """``x`` with every tensor inside (lists, tuples, dicts) on the meta device.

    A plain walk: ops' arguments nest at most a list deep, and pytree's general
    walk cost more than the op itself."""
    if isinstance(x, torch.Tensor):
        return _meta(x)
    if type(x) in (list, tuple):
        return type(x)(_metas(v) for v in x)
    if type(x) is dict:
        return {k: _metas(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, dict)):  # a named tuple or other container: pytree
        return tree_map(_meta, x)
    return x


def _run_meta(func, args, kwargs):
    """The op on meta tensors: torch's own shapes, strides and errors."""
    return func(*_metas(args), **_metas(kwargs))


def _view(base: SymbolicTensor, meta: torch.Tensor, fn: ViewFn) -> SymbolicTensor:
    return SymbolicTensor(meta, base._store, (*base._chain, fn))


def _bounded(region_map: RegionMap) -> RegionMap:
    """``region_map``, re-compressed from its values when it fragmented but is small."""
    if region_map.size_hint <= MAX_REGIONS:
        return region_map
    if region_map.numel <= SMALL:
        return RegionMap.from_values(region_map.materialize())
    raise SyncvizError(
        f"ids of a tensor of shape {list(region_map.shape)} fragmented into"
        f" {region_map.size_hint} pieces (limit {MAX_REGIONS}):"
        f" {region_map.numel} elements not checkable",
        fix="use the materialized provenance (--scaled) for this synchronizer",
    )


def _fresh(meta: torch.Tensor, region_map: RegionMap) -> SymbolicTensor:
    """A new base tensor: ``meta`` (a fresh meta result, torch's strides) holding the map."""
    return SymbolicTensor(meta, Store(_bounded(region_map)))


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _index_values(index: Any) -> list[int]:
    if isinstance(index, SymbolicTensor):
        index = index.materialize()
    return [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]


# ---------------------------------------------------------------- view ops


def _slice(func, args, kwargs):
    params = dict(zip(("dim", "start", "end", "step"), args[1:], strict=False)) | kwargs
    x = args[0]
    dim = _dim(params.get("dim", 0), x.dim())
    meta = _run_meta(func, args, kwargs)
    bounds = range(x.shape[dim])[slice(params.get("start"), params.get("end"), params.get("step"))]
    start, step, count = bounds.start, bounds.step, meta.shape[dim]
    return _view(x, meta, lambda m: m.take(dim, start, step, count))


def _select(func, args, kwargs):
    x, dim, index = args
    dim = _dim(dim, x.dim())
    index = index + x.shape[dim] if index < 0 else index
    return _view(x, _run_meta(func, args, kwargs), lambda m: m.select(dim, index))


def _permute_like(func, args, kwargs):
    x = args[0]
    meta = _run_meta(func, args, kwargs)
    nd = x.dim()
    if func is aten.permute.default:
        dims = tuple(_dim(d, nd) for d in args[1])
    elif func is aten.t.default:
        dims = (1, 0) if nd == 2 else tuple(range(nd))
    else:  # transpose.int
        a, b = _dim(args[1], nd), _dim(args[2], nd)
        dims = list(range(nd))
        dims[a], dims[b] = b, a
        dims = tuple(dims)
    return _view(x, meta, lambda m: m.permute(dims))


def _reshape_view(func, args, kwargs):
    """A view given by its shape alone: the map reshaped to it (expanded, for ``expand``)."""
    meta = _run_meta(func, args, kwargs)
    shape = tuple(meta.shape)
    if func is aten.expand.default:
        return _view(args[0], meta, lambda m: m.expand(shape))
    return _view(args[0], meta, lambda m: m.reshape(shape))


def _alias(func, args, kwargs):
    x = args[0]
    return _view(x, _run_meta(func, args, kwargs), lambda m: m)


def _split(func, args, kwargs):
    x = args[0]
    metas = _run_meta(func, args, kwargs)
    dim = _dim(kwargs.get("dim", args[2] if len(args) > 2 else 0), x.dim())
    out, start = [], 0
    for meta in metas:
        n = meta.shape[dim]
        out.append(_view(x, meta, lambda m, s=start, n=n: m.take(dim, s, 1, n)))
        start += n
    return out


def _unbind(func, args, kwargs):
    x = args[0]
    dim = _dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), x.dim())
    metas = _run_meta(func, args, kwargs)
    return [_view(x, meta, lambda m, i=i: m.select(dim, i)) for i, meta in enumerate(metas)]


# ---------------------------------------------------------------- copying ops


def _clone(func, args, kwargs):
    x = args[0]
    meta = _run_meta(func, args, kwargs)
    if func is aten._to_copy.default and meta.dtype != x.dtype:
        return _compute(func, args, kwargs)
    return _fresh(meta, map_of(x))


def _cat_meta(tensors: Sequence[torch.Tensor], dim: int, op: str = "cat") -> torch.Tensor:
    """The meta result of ``torch.cat``, with the CPU kernel's checks and messages.

    (torch's meta ``cat`` is Python that imports torch._dynamo, seconds on first use.)
    """
    if not tensors:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    used = [(i, t) for i, t in enumerate(tensors) if not (t.dim() == 1 and t.shape[0] == 0)]
    if not used:
        return torch.empty((0,), dtype=tensors[0].dtype, device="meta")
    first = used[0][1]
    nd = first.dim()
    if not -nd <= dim < max(nd, 1):
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-nd}, {nd - 1}], but got {dim})"
        )
    dim = _dim(dim, nd)
    total = 0
    for i, t in used:
        if t.dim() != nd:
            raise RuntimeError(
                f"Tensors must have same number of dimensions: got {nd} and {t.dim()}"
            )
        for d in range(nd):
            if d != dim and t.shape[d] != first.shape[d]:
                raise RuntimeError(
                    f"Sizes of tensors must match except in dimension {dim}. Expected size"
                    f" {first.shape[d]} but got size {t.shape[d]} for tensor number {i} in the"
                    " list."
                )
        total += t.shape[dim]
    shape = list(first.shape)
    shape[dim] = total
    dtype = first.dtype
    for _, t in used:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.empty(shape, dtype=dtype, device="meta")


def _cat(func, args, kwargs):
    tensors = list(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    meta = _cat_meta(tensors, dim)
    if any(t.dtype != meta.dtype for t in tensors):  # a type promotion computes values
        return _compute(func, args, kwargs)
    dim = _dim(dim, meta.dim())
    maps = [map_of(t) for t in tensors if not (t.dim() == 1 and t.shape[0] == 0)]
    return _fresh(meta, RegionMap.cat(maps, dim) if maps else RegionMap(meta.shape, []))


def _stack(func, args, kwargs):
    tensors = list(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)}"
                f" at entry 0 and {list(t.shape)} at entry {i}"
            )
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    dim = _dim(dim, tensors[0].dim() + 1)
    metas = [t._meta.unsqueeze(dim) if is_symbolic(t) else t.unsqueeze(dim) for t in tensors]
    meta = _cat_meta(metas, dim)
    if any(t.dtype != meta.dtype for t in tensors):
        return _compute(func, args, kwargs)
    return _fresh(meta, RegionMap.cat([map_of(t).unsqueeze(dim) for t in tensors], dim))


def _index_select(func, args, kwargs):
    x, dim, index = args
    meta = _run_meta(func, args, kwargs)
    dim = _dim(dim, x.dim())
    rows = _index_values(index)
    if any(not 0 <= i < x.shape[dim] for i in rows):  # as the CPU kernel checks
        raise IndexError("index out of range in self")
    return _fresh(meta, map_of(x).index_select(dim, rows))


def _index(func, args, kwargs):
    x, indices = args
    # A boolean mask names its rows by their values: turn it into their positions first.
    indices = [
        torch.nonzero(i).reshape(-1)
        if isinstance(i, torch.Tensor)
        and not is_symbolic(i)
        and i.dtype == torch.bool
        and i.dim() == 1
        else i
        for i in indices
    ]
    used = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(used) == 1 and not is_symbolic(used[0][1]) and used[0][1].dim() == 1:
        d, index = used[0]
        if not index.dtype.is_floating_point:
            meta = _run_meta(func, (x, indices), kwargs)
            rows = _index_values(index)
            for i in rows:
                if not -x.shape[d] <= i < x.shape[d]:
                    raise IndexError(
                        f"index {i} is out of bounds for dimension {d} with size {x.shape[d]}"
                    )
            return _fresh(meta, map_of(x).index_select(d, rows))
    return _compute(func, args, kwargs)


def _repeat(func, args, kwargs):
    x, repeats = args
    meta = _run_meta(func, args, kwargs)
    return _fresh(meta, map_of(x).repeat(tuple(repeats)))


def _like(value: float | None, fill_at: int = 1):
    def handler(func, args, kwargs):
        x = args[0]
        if len(args) == 1 and _plain_like(func, kwargs) and _dense(x):
            # What the branch below makes, without running the op on meta first: the
            # synchronizer's all-gather allocates (tp * ep)^2 buffers a tensor.
            dtype = kwargs.get("dtype") or x.dtype
            meta = torch.empty_strided(x.shape, x.stride(), dtype=dtype, device="meta")
            return _fresh(meta, RegionMap.constant(meta.shape, float(value)))
        meta = _run_meta(func, args, kwargs)
        if (
            func.__name__.split(".")[0].endswith("_like")
            and kwargs.get("memory_format", torch.preserve_format) == torch.preserve_format
            and _dense(x)
        ):  # torch keeps a dense input's strides, size-1 dims' included (meta may not)
            meta = torch.empty_strided(meta.shape, x.stride(), dtype=meta.dtype, device="meta")
        fill = args[fill_at] if value is None else value
        return _fresh(meta, RegionMap.constant(meta.shape, float(fill)))

    return handler


_LIKE_KEYS = frozenset(("dtype", "layout", "device", "pin_memory", "memory_format"))
_LIKE_FAST = frozenset((aten.empty_like.default, aten.zeros_like.default, aten.ones_like.default))


def _plain_like(func, kwargs: dict[str, Any]) -> bool:
    """``empty_like``/``zeros_like``/``ones_like`` that keeps the input's dtype or names a
    plain one, and its layout, device and memory format: nothing torch could refuse."""
    return (
        func in _LIKE_FAST
        and kwargs.keys() <= _LIKE_KEYS
        and isinstance(kwargs.get("dtype") or torch.float64, torch.dtype)
        and kwargs.get("layout") in (None, torch.strided)
        and kwargs.get("device") is None
        and not kwargs.get("pin_memory")
        and kwargs.get("memory_format", torch.preserve_format) == torch.preserve_format
    )


def _dense(x: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill their memory exactly."""
    dims = sorted((st, n) for st, n in zip(x.stride(), x.shape, strict=True) if n != 1)
    step = 1
    for st, n in dims:
        if st != step:
            return False
        step *= n
    return True


# ---------------------------------------------------------------- in place


def _copy_(func, args, kwargs):
    dst, src = args[0], args[1]
    if not kwargs and copy_whole(dst, src):
        return dst
    _run_meta(func, args, kwargs)  # shape and broadcast errors, as torch raises them
    if not is_symbolic(dst):
        if dst.numel() > SMALL:
            raise SyncvizError(
                f"copy of ids into a real tensor of {dst.numel()} elements: ids lost",
                fix="allocate the destination with torch.empty_like(symbolic tensor)",
            )
        dst.copy_(map_of(src).materialize().to(dst.dtype))
        return dst
    if src.dtype != dst.dtype:  # a cast: rounding may change ids
        return _compute(func, args, kwargs)
    _write(dst, map_of(src).expand(tuple(dst.shape)))
    return dst


def copy_whole(dst: torch.Tensor, src: torch.Tensor) -> bool:
    """``dst.copy_(src)`` without torch's dispatch where nothing could refuse it: both
    symbolic, one shape and dtype, ``dst`` a dense base tensor that ``src`` does not
    share. Returns whether it copied (``False``: nothing done, use ``copy_``).

    A collective's copy into a fresh buffer is this case, and an all-gather of routed
    experts over ``tp * ep`` ranks makes ``(tp * ep)^2`` of them a tensor; the map is
    shared, not copied (maps never change: a write replaces a store's map).

    >>> src = SymbolicTensor.from_map(RegionMap.affine((2, 3), 10, (3, 1)))
    >>> dst = torch.empty_like(src)
    >>> copy_whole(dst, src), dst.materialize()[1].tolist()
    (True, [13.0, 14.0, 15.0])
    >>> copy_whole(dst.t(), src.t())  # a view: torch's copy_ writes through it
    False
    """
    if not (
        type(dst) is SymbolicTensor
        and type(src) is SymbolicTensor
        and not dst._chain
        and dst._store is not src._store
        and dst.dtype == src.dtype
        and dst.shape == src.shape
        and _dense(dst)
    ):
        return False
    _write(dst, src.region_map())
    return True


def _fill_(func, args, kwargs):
    dst = args[0]
    value = 0.0 if func is aten.zero_.default else float(args[1])
    _write(dst, RegionMap.constant(tuple(dst.shape), value))
    return dst


def _write(dst: SymbolicTensor, src: RegionMap) -> None:
    """Write ``src`` (of ``dst``'s shape) into ``dst`` and so into its base."""
    store = dst._store
    if not dst._chain:
        store.set(src)
        return
    base_shape = store.map.shape
    positions = RegionMap.affine(base_shape, 0, row_major(base_shape))
    for fn in dst._chain:
        positions = fn(positions)
    new: list[Region] = []
    boxes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for p, q, lo, hi in meetings(positions.regions, src.regions):
        extents = tuple(b - a for a, b in zip(lo, hi, strict=True))
        pos, val = int(p.value_at(lo)), q.value_at(lo)
        for region in _to_base(pos, p.strides, val, q.strides, extents, base_shape):
            new.append(region)
            boxes.append((region.start, region.stop))
        if len(new) > MAX_REGIONS:
            raise SyncvizError(
                f"a write into a view of shape {list(dst.shape)} scatters into more than"
                f" {MAX_REGIONS} pieces",
                fix="use the materialized provenance (--scaled) for this synchronizer",
            )
    m = store.map
    for box in boxes:
        m = m.write(box, [])
    store.set(RegionMap(base_shape, [*m.regions, *new]))


def _to_base(pos, pstrides, val, vstrides, extents, base_shape) -> list[Region]:
    """The base-coordinate regions a written box covers (positions affine in its coords)."""
    rm = row_major(base_shape)
    start = list(unravel(pos, base_shape))
    stop = [c + 1 for c in start]
    strides = [0] * len(base_shape)
    used: set[int] = set()
    for j, (n, t) in enumerate(zip(extents, pstrides, strict=True)):
        if n == 1:
            continue
        k = next(
            (
                k
                for k in range(len(base_shape))
                if rm[k] == t and k not in used and start[k] + n <= base_shape[k]
            ),
            None,
        )
        if k is None:  # this dim wraps or steps in the base: cut it into single slices
            out = []
            for i in range(n):
                sub = list(extents)
                sub[j] = 1
                out += _to_base(
                    pos + i * t, pstrides, val + i * vstrides[j], vstrides, tuple(sub), base_shape
                )
                if len(out) > MAX_REGIONS:
                    raise SyncvizError(
                        f"a write scatters into more than {MAX_REGIONS} pieces",
                        fix="use the materialized provenance (--scaled) for this synchronizer",
                    )
            return out
        used.add(k)
        stop[k] = start[k] + n
        strides[k] = vstrides[j]
    return [canonical_region(tuple(start), tuple(stop), val, tuple(strides))]


# ---------------------------------------------------------------- computing ops


def _compute(func, args, kwargs):
    """An op that computes values: run it on real values when small, else refuse."""
    syms = [a for a in tree_flatten((args, kwargs))[0] if is_symbolic(a)]
    numel = sum(a.numel() for a in syms)
    name = func.overloadpacket.__name__
    if numel > SMALL:
        raise SyncvizError(
            f"op {name} computes values: ids lost, {numel} elements not checkable",
            fix="move data only (slice, cat, view, copy), or check at --scaled sizes",
        )
    real = {id(a): a.materialize().to(a.dtype) for a in syms}
    swap = lambda a: real.get(id(a), a) if is_symbolic(a) else a  # noqa: E731
    out = func(*tree_map(swap, args), **tree_map(swap, kwargs))
    mutated = func._schema.is_mutable
    if mutated and syms and is_symbolic(args[0]):  # write the new values back
        _write(args[0], RegionMap.from_values(real[id(args[0])]))
        return args[0]
    return tree_map(_wrap_float, out)


def _wrap_float(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dtype.is_floating_point and not is_symbolic(x):
        return _fresh(x.to("meta"), RegionMap.from_values(x))
    return x


_HANDLERS: dict[Any, Callable] = {
    aten.slice.Tensor: _slice,
    aten.select.int: _select,
    aten.permute.default: _permute_like,
    aten.transpose.int: _permute_like,
    aten.t.default: _permute_like,
    aten.view.default: _reshape_view,
    aten._unsafe_view.default: _reshape_view,
    aten.reshape.default: _reshape_view,
    aten.unsqueeze.default: _reshape_view,
    aten.squeeze.default: _reshape_view,  # dropping size-1 dims is a reshape
    aten.squeeze.dim: _reshape_view,
    aten.squeeze.dims: _reshape_view,
    aten.expand.default: _reshape_view,
    aten.alias.default: _alias,
    aten.detach.default: _alias,
    aten.split.Tensor: _split,
    aten.split_with_sizes.default: _split,
    aten.unbind.int: _unbind,
    aten.clone.default: _clone,
    aten._to_copy.default: _clone,
    aten.cat.default: _cat,
    aten.stack.default: _stack,
    aten.index_select.default: _index_select,
    aten.index.Tensor: _index,
    aten.repeat.default: _repeat,
    aten.empty_like.default: _like(UNWRITTEN),
    aten.new_empty.default: _like(UNWRITTEN),
    aten.new_empty_strided.default: _like(UNWRITTEN),
    aten.zeros_like.default: _like(0.0),
    aten.new_zeros.default: _like(0.0),
    aten.ones_like.default: _like(1.0),
    aten.new_ones.default: _like(1.0),
    aten.full_like.default: _like(None),
    aten.new_full.default: _like(None, 2),
    aten.copy_.default: _copy_,
    aten.fill_.Scalar: _fill_,
    aten.zero_.default: _fill_,
}


# ---------------------------------------------------------------- factories


_FACTORIES: dict[Any, float | None] = {
    aten.empty.memory_format: UNWRITTEN,
    aten.empty_strided.default: UNWRITTEN,
    aten.zeros.default: 0.0,
    aten.ones.default: 1.0,
    aten.full.default: None,
}


class symbolic_factories(TorchDispatchMode):
    """Inside it, ``torch.empty``/``zeros``/``ones``/``full`` of a floating dtype make
    symbolic tensors (unwritten, 0, 1, or the fill value) instead of allocating.

    Modes are per thread: enter it in each rank's thread.

    >>> with symbolic_factories():
    ...     buf = torch.empty(3, 4, dtype=torch.float64)
    >>> type(buf).__name__, buf.materialize()[0].tolist()
    ('SymbolicTensor', [-2.0, -2.0, -2.0, -2.0])
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here is compiled; torch's default wraps every call in a dynamo guard
        # whose first use imports torch._dynamo (seconds) and whose every use costs time.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            if dtype.is_floating_point:
                meta_kwargs = {**kwargs, "device": "meta", "pin_memory": False}
                meta = func(*args, **meta_kwargs)
                value = _FACTORIES[func]
                fill = float(args[1]) if value is None else value
                return _fresh(meta, RegionMap.constant(tuple(meta.shape), fill))
        return func(*args, **kwargs)
