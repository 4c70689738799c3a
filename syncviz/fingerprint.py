"""Exact integer fingerprints of tensor segments: 8 bytes that stand for a row's bits.

A segment (a row of a 2-D weight, a row of one expert of a 3-D stack, a run of
elements of a 1-D tensor) is read as its bytes ``b[i]`` (signed, little-endian)
by a bitcast, never by a value conversion. Each byte position ``i`` has 16 signed
8-bit coefficients ``C[i, k]`` drawn by splitmix64 (their sum made odd), and 16 odd
64-bit constants ``G[k]`` mix the 16 exact integer sums:

    S[k] = sum_i b[i] * C[i, k]                 (exact: |S[k]| < 2**31 per 64 KiB)
    fingerprint = fmix64( sum_k G[k] * S[k]  mod 2**64 )

``fmix64`` is MurmurHash3's bijective finaliser. Every step is exact integer
arithmetic (wrapping modulo 2**64 where it says so), so the result is the same on
any device and whichever way the sums are grouped. A change of one byte by
``delta`` (0 < |delta| < 2**8) changes the inner sum by ``delta * E[i]``, ``E[i] =
sum_k C[i, k] * G[k]``, which is odd, so the change is never 0 modulo 2**64, and
``fmix64`` is a bijection: **any one-bit change of a segment changes its
fingerprint**. Coefficients differ by position, so rows holding the same values in
another order differ too. A segment of zero bits fingerprints to 0.

>>> import torch
>>> w = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=torch.bfloat16)
>>> fp = fingerprint(w)
>>> fp.shape, bool(fp[0] != fp[1])
(torch.Size([2]), True)
>>> fingerprint(torch.zeros(2, 8)).tolist()
[0, 0]
>>> flipped = w.clone(); flipped.view(torch.int16)[1, 2] ^= 1
>>> bool(fingerprint(flipped)[1] != fp[1]), bool(fingerprint(flipped)[0] == fp[0])
(True, True)

On the CPU the sums ``S`` are one int8 matrix product (``torch._int_mm``: the
bytes are read where they lie, at about the speed of one pass); on a CUDA device
with Triton one fused kernel sums ``b[i] * E[i]`` modulo 2**64; elsewhere plain
torch does the same. All three give the same bits (tested).
"""

from __future__ import annotations

import functools
import importlib.util

import torch

VERSION = 1
"""Bump when the function changes: files written by another version are refused."""

_SEED = 0x5EC0F1A9E2B7
_GOLDEN = 0x9E3779B97F4A7C15
_K = 16  # coefficients per byte position: 16 exact sums per segment
_GEMM_BYTES = 1 << 16  # bytes per int8 product block: |S| <= 2**14 * 2**16 < 2**31
_CHUNK_BYTES = 1 << 21  # plain-torch path: bytes widened to int64 at a time (16 MiB)
TRITON_TILE = (4096, 1024, 4)  # bytes per program step, widest row block, warps


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 words (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def fmix64(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 64-bit finaliser on int64 (a bijection; 0 maps to 0).

    >>> fmix64(torch.tensor([0, 1])).tolist()
    [0, -5451962507482445012]
    """
    x = x ^ _shr(x, 33)
    x = x * _signed(0xFF51AFD7ED558CCD)
    x = x ^ _shr(x, 33)
    x = x * _signed(0xC4CEB9FE1A85EC53)
    return x ^ _shr(x, 33)


def splitmix64(i: torch.Tensor) -> torch.Tensor:
    """splitmix64 of counters ``i`` (int64, wrapping), seeded with the fingerprint's seed."""
    z = (i + 1) * _signed(_GOLDEN) + _SEED
    z = (z ^ _shr(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shr(z, 27)) * _signed(0x94D049BB133111EB)
    return z ^ _shr(z, 31)


_MIX = splitmix64(torch.arange(-_K, 0, dtype=torch.int64)) | 1  # G[k]: odd


@functools.lru_cache(maxsize=64)
def coefficients(m: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``C``: the int8 coefficients of byte positions ``0..m-1``, shape [m, 16].

    >>> c = coefficients(5)
    >>> c.shape, bool((c.to(torch.int64).sum(dim=1) % 2 == 1).all())
    (torch.Size([5, 16]), True)
    >>> torch.equal(coefficients(3), c[:3])
    True
    """
    c = splitmix64(torch.arange(2 * m, dtype=torch.int64)).view(torch.int8).view(m, _K).clone()
    odd = (c[:, 1:].to(torch.int64).sum(dim=1) + 1) & 1  # makes each row's sum odd
    c[:, 0] = ((c[:, 0].to(torch.int64) & ~1) | odd).to(torch.int8)
    return c.to(device)


@functools.lru_cache(maxsize=64)
def multipliers(m: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``E[i] = sum_k C[i, k] * G[k]`` modulo 2**64 (int64, odd): one multiplier per byte.

    >>> bool((multipliers(7) % 2 != 0).all())
    True
    """
    e = (coefficients(m).to(torch.int64) * _MIX).sum(dim=1)
    return e.to(device)


def words(t: torch.Tensor, run: int | None = None) -> torch.Tensor:
    """``t``'s bytes as a 2-D int8 tensor, one segment of ``run`` elements per row.

    ``run`` defaults to the last dimension (the rows of a 2-D weight; of a 3-D
    stack [E, R, C], its E*R rows). Multi-byte elements are read little-endian, as
    every supported device stores them.

    >>> words(torch.ones(2, 3, dtype=torch.bfloat16)).shape
    torch.Size([2, 6])
    """
    if t.dim() == 0:
        t = t.reshape(1)
    run = t.shape[-1] if run is None else run
    if run < 1 or t.numel() % run:
        from syncviz.errors import SyncvizError

        raise SyncvizError(
            f"a tensor of shape {list(t.shape)} has {t.numel()} elements, not a multiple of"
            f" the segment length {run}",
            fix="fingerprint rows (the default) or a run that divides the tensor",
        )
    return t.detach().contiguous().reshape(-1, run).view(torch.int8)


def fingerprint(t: torch.Tensor, run: int | None = None) -> torch.Tensor:
    """The int64 fingerprint of each segment of ``run`` elements of ``t`` (rows by default),
    on ``t``'s device."""
    return fingerprint_many([t], [run])[0]


def fingerprint_many(
    tensors: list[torch.Tensor], runs: list[int | None] | None = None
) -> list[torch.Tensor]:
    """:func:`fingerprint` of each tensor (``runs[i]`` elements per segment); on CUDA with
    Triton, one kernel launch per row width for all of them (a rank's hundreds).

    >>> a, b = torch.ones(3, 4), torch.arange(8.0)
    >>> [p.tolist() for p in fingerprint_many([a, b], [None, 2])] == [
    ...     fingerprint(a).tolist(), fingerprint(b, 2).tolist()]
    True
    """
    runs = runs if runs is not None else [None] * len(tensors)
    ws = [words(t, run) for t, run in zip(tensors, runs, strict=True)]
    out: list[torch.Tensor | None] = [None] * len(ws)
    groups: dict[tuple, list[int]] = {}
    for i, w in enumerate(ws):
        if not w.shape[0]:
            out[i] = torch.zeros(0, dtype=torch.int64, device=w.device)
        elif w.is_cuda and _has_triton():
            groups.setdefault((w.device, w.shape[1]), []).append(i)
        elif w.device.type == "cpu":
            out[i] = fmix64(_sums_int_mm(w))
        else:
            out[i] = fmix64(_sums_torch(w))
    for (device, m), members in groups.items():
        prints = _fingerprint_triton([ws[i] for i in members], multipliers(m, device))
        for i, p in zip(members, prints, strict=True):
            out[i] = p
    return out  # type: ignore[return-value]


def fingerprint_torch(t: torch.Tensor, run: int | None = None) -> torch.Tensor:
    """The same as :func:`fingerprint` from plain elementwise torch ops (any device)."""
    return fmix64(_sums_torch(words(t, run)))


def unfmix64(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`fmix64` (xor-shifts by 33 undo themselves; the products undo by
    the multipliers' inverses modulo 2**64).

    >>> x = torch.tensor([0, 1, -7, 2**62])
    >>> torch.equal(unfmix64(fmix64(x)), x)
    True
    """
    x = x ^ _shr(x, 33)
    x = x * _signed(_INVERSE_2)
    x = x ^ _shr(x, 33)
    x = x * _signed(_INVERSE_1)
    return x ^ _shr(x, 33)


_INVERSE_1 = pow(0xFF51AFD7ED558CCD, -1, 1 << 64)
_INVERSE_2 = pow(0xC4CEB9FE1A85EC53, -1, 1 << 64)


def compose(prints: torch.Tensor, k: int) -> torch.Tensor:
    """One fingerprint per ``k`` consecutive fingerprints: the fingerprint of their segments
    together. Each fingerprint's inner sum (``fmix64`` undone) is weighted by an odd
    constant ``O[j]`` of its place and the weighted sums added modulo 2**64:

        compose = fmix64( sum_j O[j] * unfmix64(p[j])  mod 2**64 )

    which is the fingerprint of the ``k`` segments' bytes with the multipliers
    ``E[i] * O[j]`` (odd). So **any change confined to one of the segments that changes
    its fingerprint changes the composed one** (its inner sum moves by a non-zero ``x``,
    the composed by ``O[j] * x``, non-zero modulo 2**64 as ``O[j]`` is odd): a one-bit
    change of a group of rows always shows. Segments of zero bits compose to 0. The
    result is the same whichever side (and device) computed the fingerprints.

    >>> a = fingerprint(torch.arange(8.0), run=2)
    >>> compose(a, 2).shape, int(compose(torch.zeros(4, dtype=torch.int64), 2)[0])
    (torch.Size([2]), 0)
    """
    inner = unfmix64(prints.reshape(-1, k))
    weights = places(k, prints.device)
    return fmix64((inner * weights).sum(dim=1))


@functools.lru_cache(maxsize=64)
def places(k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``O[j]``: the odd weights of places ``0..k-1`` in :func:`compose` (splitmix64 of
    counters apart from the byte coefficients').

    >>> bool((places(5) % 2 != 0).all())
    True
    """
    return (splitmix64(torch.arange(k, dtype=torch.int64) - (1 << 40)) | 1).to(device)


def _sums_int_mm(b: torch.Tensor) -> torch.Tensor:
    """``sum_k G[k] * S[k]`` with ``S`` from int8 products (exact int32 per 64 KiB block)."""
    m = b.shape[1]
    c = coefficients(m, b.device)
    s = torch._int_mm(b[:, :_GEMM_BYTES], c[:_GEMM_BYTES]).to(torch.int64)
    for c0 in range(_GEMM_BYTES, m, _GEMM_BYTES):
        s += torch._int_mm(b[:, c0 : c0 + _GEMM_BYTES], c[c0 : c0 + _GEMM_BYTES])
    return (s * _MIX.to(b.device)).sum(dim=1)


def _sums_torch(b: torch.Tensor) -> torch.Tensor:
    """``sum_i b[i] * E[i]`` modulo 2**64, widening a chunk of rows at a time."""
    rows, m = b.shape
    e = multipliers(m, b.device)
    out = torch.empty(rows, dtype=torch.int64, device=b.device)
    step = max(1, _CHUNK_BYTES // max(m, 1))
    buf = torch.empty(min(step, rows), m, dtype=torch.int64, device=b.device)
    for r in range(0, rows, step):
        part = buf[: min(step, rows - r)]
        part.copy_(b[r : r + step])  # sign-extends each byte
        part.mul_(e)
        torch.sum(part, dim=1, out=out[r : r + step])
    return out


@functools.lru_cache(maxsize=1)
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=1)
def _kernel():  # defined on first use: importing triton costs a second
    import triton
    import triton.language as tl

    @triton.jit
    def many(
        table,
        e_ptr,
        out_ptr,
        count,
        m,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
        SUPER: tl.constexpr,
    ):
        # table: per tensor its data pointer, first block, first output row, rows; then
        # the tensor of each run of SUPER blocks (each tensor's blocks padded to whole runs).
        pid = tl.program_id(0)
        t = tl.load(table + 4 * count + pid // SUPER)
        w_ptr = tl.load(table + t).to(tl.pointer_type(tl.int8))
        rows = tl.load(table + 3 * count + t)
        r = (pid - tl.load(table + count + t)) * BLOCK_R + tl.arange(0, BLOCK_R)
        acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.int64)
        base = r.to(tl.int64)[:, None] * m
        for c0 in range(0, m, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            inside = (r[:, None] < rows) & (c[None, :] < m)
            byte = tl.load(w_ptr + base + c[None, :], mask=inside, other=0)
            e = tl.load(e_ptr + c, mask=c < m, other=0)
            acc += byte.to(tl.int64) * e[None, :]  # sign-extended, wrapping like torch
        x = tl.sum(acc, axis=1).to(tl.uint64, bitcast=True)  # fmix64, logical shifts
        x = x ^ (x >> 33)
        x = x * 0xFF51AFD7ED558CCD
        x = x ^ (x >> 33)
        x = x * 0xC4CEB9FE1A85EC53
        x = x ^ (x >> 33)
        out = out_ptr + tl.load(table + 2 * count + t) + r
        tl.store(out, x.to(tl.int64, bitcast=True), mask=r < rows)

    return triton, many


_SUPER = 64  # blocks per entry of the kernel's block-to-tensor map


def _fingerprint_triton(ws: list[torch.Tensor], e: torch.Tensor) -> list[torch.Tensor]:
    """Fingerprints of tensors of one row width ``m`` (int8 rows), in one launch."""
    triton, kernel = _kernel()
    m = ws[0].shape[1]
    tile, widest, warps = TRITON_TILE
    block_c = min(widest, triton.next_power_of_2(m))
    block_r = max(1, tile // block_c)
    rows = [w.shape[0] for w in ws]
    starts, firsts, owner = [], [], []
    total = 0
    for t, r in enumerate(rows):
        starts.append(len(owner) * _SUPER)
        firsts.append(total)
        total += r
        owner += [t] * triton.cdiv(triton.cdiv(r, block_r), _SUPER)
    host = [w.data_ptr() for w in ws] + starts + firsts + rows + owner
    table = torch.tensor(host, dtype=torch.int64).to(e.device)
    out = torch.empty(total, dtype=torch.int64, device=e.device)
    grid = (len(owner) * _SUPER,)
    kernel[grid](
        table, e, out, len(ws), m,
        BLOCK_R=block_r, BLOCK_C=block_c, SUPER=_SUPER, num_warps=warps,
    )  # fmt: skip
    return list(out.split(rows))
