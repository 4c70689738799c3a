"""Exact integer fingerprints of tensor segments: a few bytes that stand for a row's bits.

A segment (a row of a 2-D weight, a row of one expert of a 3-D stack, a run of
elements of a 1-D tensor) is read as integer words by a bitcast (16-bit words
for elements of two bytes or more, 8-bit words for one-byte elements), never by
a value conversion. Its fingerprint is

    fmix64( sum_j D[j] * word[j]  mod 2**64 )

with ``D[j]`` odd 64-bit multipliers drawn per position by splitmix64 and
``fmix64`` MurmurHash3's bijective finaliser. Every step is integer arithmetic
that wraps modulo 2**64, so the result is the same on any device. A change of one
word changes the sum by ``D[j] * delta`` with ``D[j]`` odd and ``0 < |delta| <
2**16``, which is never 0 modulo 2**64, and ``fmix64`` is a bijection: **any
one-bit change of a segment changes its fingerprint**. The multipliers differ by
position, so rows holding the same words in another order differ too. A segment
of zero bits fingerprints to 0.

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

On a CUDA device with Triton installed, one fused kernel computes the sums
(same words, same multipliers, same wrapping); elsewhere plain torch does.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

VERSION = 1
"""Bump when the function changes: files written by another version are refused."""

_SEED = 0x5EC0F1A9E2B7
_GOLDEN = 0x9E3779B97F4A7C15
_CHUNK_WORDS = 1 << 20  # plain-torch path: words widened to int64 at a time (8 MiB)
TRITON_TILE = (2048, 1024, 4)  # words per program step, widest row block, warps
CPU_FUSED_MIN_WORDS = 1 << 24
"""On the CPU, tensors of this many words or more take one loop compiled by torch.compile
(the same integer arithmetic; compiled once per process, about a minute): set
SYNCVIZ_FINGERPRINT_COMPILE=0 to keep plain torch."""


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


@functools.lru_cache(maxsize=64)
def _multipliers_cpu(n: int) -> torch.Tensor:
    z = (torch.arange(n, dtype=torch.int64) + 1) * _signed(_GOLDEN) + _SEED
    z = (z ^ _shr(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shr(z, 27)) * _signed(0x94D049BB133111EB)
    return (z ^ _shr(z, 31)) | 1


@functools.lru_cache(maxsize=64)
def multipliers(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The odd per-position multipliers ``D[0..n-1]`` (splitmix64 of the position).

    >>> d = multipliers(5)
    >>> bool((d % 2 != 0).all()), multipliers(3).tolist() == d[:3].tolist()
    (True, True)
    """
    return _multipliers_cpu(n).to(device)


def words(t: torch.Tensor, run: int | None = None) -> torch.Tensor:
    """``t``'s bits as a 2-D integer tensor, one segment of ``run`` elements per row.

    ``run`` defaults to the last dimension (the rows of a 2-D weight; of a 3-D
    stack [E, R, C], its E*R rows). Elements of two bytes or more are split into
    16-bit words (little-endian, as every supported device stores them).

    >>> words(torch.ones(2, 3, dtype=torch.float32)).shape
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
    flat = t.detach().contiguous().reshape(-1, run)
    kind = torch.int8 if t.element_size() == 1 else torch.int16
    return flat.view(kind)


def fingerprint(t: torch.Tensor, run: int | None = None) -> torch.Tensor:
    """The int64 fingerprint of each segment of ``run`` elements of ``t`` (rows by default),
    on ``t``'s device."""
    w = words(t, run)
    if w.is_cuda and w.shape[0] and _has_triton():
        return _fingerprint_triton(w, multipliers(w.shape[1], w.device))
    return fmix64(_row_sums_torch(w))


def fingerprint_many(
    tensors: list[torch.Tensor], runs: list[int | None] | None = None
) -> list[torch.Tensor]:
    """:func:`fingerprint` of each tensor (``runs[i]`` elements per segment); on CUDA with
    Triton, one kernel launch per row width for all of them (a rank's hundreds of tensors).

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
        if w.is_cuda and w.shape[0] and _has_triton():
            groups.setdefault((w.device, w.dtype, w.shape[1]), []).append(i)
        else:
            out[i] = fmix64(_row_sums_torch(w))
    for (device, _, n), members in groups.items():
        prints = _fingerprint_triton_many([ws[i] for i in members], multipliers(n, device))
        for i, p in zip(members, prints, strict=True):
            out[i] = p
    return out  # type: ignore[return-value]


def fingerprint_torch(t: torch.Tensor, run: int | None = None) -> torch.Tensor:
    """The same as :func:`fingerprint`, always with plain torch ops (any device)."""
    return fmix64(_row_sums_torch(words(t, run)))


def compose(prints: torch.Tensor, k: int) -> torch.Tensor:
    """One fingerprint per ``k`` consecutive fingerprints: the fingerprint of their words.

    A segment cut in ``k`` runs has this fingerprint whichever side computed the runs.

    >>> a = fingerprint(torch.arange(8.0), run=2)
    >>> bool(compose(a, 4)[0] == compose(fingerprint(torch.arange(8.0), run=2), 4)[0])
    True
    """
    return fingerprint(prints.reshape(-1, k))


def _row_sums_torch(w: torch.Tensor) -> torch.Tensor:
    rows, n = w.shape
    d = multipliers(n, w.device)
    if w.device.type == "cpu" and w.numel() >= CPU_FUSED_MIN_WORDS:
        fused = _cpu_fused()
        if fused is not None:
            return fused(w, d)
    out = torch.empty(rows, dtype=torch.int64, device=w.device)
    step = max(1, _CHUNK_WORDS // max(n, 1))
    buf = torch.empty(min(step, rows), n, dtype=torch.int64, device=w.device)
    for r in range(0, rows, step):
        part = buf[: min(step, rows - r)]
        part.copy_(w[r : r + step])  # sign-extends each word: an injective widening
        part.mul_(d)
        torch.sum(part, dim=1, out=out[r : r + step])
    return out


def _widened_sums(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return (w.to(torch.int64) * d).sum(dim=1)


@functools.lru_cache(maxsize=1)
def _cpu_fused():
    """``_widened_sums`` compiled into one loop (no int64 temporaries), or None where
    torch.compile has no C++ compiler to use or is switched off."""
    import os

    if os.environ.get("SYNCVIZ_FINGERPRINT_COMPILE", "1") == "0":
        return None
    try:
        fused = torch.compile(_widened_sums, dynamic=True)
        probe = torch.arange(-6, 6, dtype=torch.int16).view(3, 4)
        if not torch.equal(fused(probe, multipliers(4)), _widened_sums(probe, multipliers(4))):
            return None
    except Exception:  # no compiler, no OpenMP, an inductor bug: plain torch is exact too
        return None
    return fused


@functools.lru_cache(maxsize=1)
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=1)
def _kernel():  # defined on first use: importing triton costs a second
    import triton
    import triton.language as tl

    @triton.jit
    def row_sums(w_ptr, d_ptr, out_ptr, rows, n, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.int64)
        base = r.to(tl.int64)[:, None] * n
        for c0 in range(0, n, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            inside = (r[:, None] < rows) & (c[None, :] < n)
            word = tl.load(w_ptr + base + c[None, :], mask=inside, other=0)
            d = tl.load(d_ptr + c, mask=c < n, other=0)
            acc += word.to(tl.int64) * d[None, :]  # sign-extended, wrapping like torch
        x = tl.sum(acc, axis=1).to(tl.uint64, bitcast=True)  # fmix64, logical shifts
        x = x ^ (x >> 33)
        x = x * 0xFF51AFD7ED558CCD
        x = x ^ (x >> 33)
        x = x * 0xC4CEB9FE1A85EC53
        x = x ^ (x >> 33)
        tl.store(out_ptr + r, x.to(tl.int64, bitcast=True), mask=r < rows)

    @triton.jit
    def many_row_sums(
        table,
        d_ptr,
        out_ptr,
        count,
        n,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
        STEPS: tl.constexpr,
        BYTE: tl.constexpr,
    ):
        # table rows: data pointer, first block, first output row, rows; per tensor.
        pid = tl.program_id(0)
        lo = 0
        hi = count
        for _ in tl.static_range(STEPS):  # the tensor this block belongs to
            mid = (lo + hi) // 2
            go = tl.load(table + count + mid) <= pid
            lo = tl.where(go, mid, lo)
            hi = tl.where(go, hi, mid)
        if BYTE:
            w_ptr = tl.load(table + lo).to(tl.pointer_type(tl.int8))
        else:
            w_ptr = tl.load(table + lo).to(tl.pointer_type(tl.int16))
        rows = tl.load(table + 3 * count + lo)
        r = (pid - tl.load(table + count + lo)) * BLOCK_R + tl.arange(0, BLOCK_R)
        acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.int64)
        base = r.to(tl.int64)[:, None] * n
        for c0 in range(0, n, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            inside = (r[:, None] < rows) & (c[None, :] < n)
            word = tl.load(w_ptr + base + c[None, :], mask=inside, other=0)
            d = tl.load(d_ptr + c, mask=c < n, other=0)
            acc += word.to(tl.int64) * d[None, :]
        x = tl.sum(acc, axis=1).to(tl.uint64, bitcast=True)
        x = x ^ (x >> 33)
        x = x * 0xFF51AFD7ED558CCD
        x = x ^ (x >> 33)
        x = x * 0xC4CEB9FE1A85EC53
        x = x ^ (x >> 33)
        first = tl.load(table + 2 * count + lo)
        tl.store(out_ptr + first + r, x.to(tl.int64, bitcast=True), mask=r < rows)

    return triton, row_sums, many_row_sums


def _fingerprint_triton_many(ws: list[torch.Tensor], d: torch.Tensor) -> list[torch.Tensor]:
    triton, _, kernel = _kernel()
    n = ws[0].shape[1]
    tile, widest, warps = TRITON_TILE
    block_c = min(widest, triton.next_power_of_2(n))
    block_r = max(1, tile // block_c)
    rows = [w.shape[0] for w in ws]
    blocks = [triton.cdiv(r, block_r) for r in rows]
    firsts, starts = [0], [0]
    for r, b in zip(rows[:-1], blocks[:-1], strict=True):
        firsts.append(firsts[-1] + r)
        starts.append(starts[-1] + b)
    host = [w.data_ptr() for w in ws] + starts + firsts + rows
    table = torch.tensor(host, dtype=torch.int64).to(d.device, non_blocking=False)
    out = torch.empty(sum(rows), dtype=torch.int64, device=d.device)
    steps = max(1, len(ws).bit_length())
    grid = (sum(blocks),)
    kernel[grid](
        table,
        d,
        out,
        len(ws),
        n,
        BLOCK_R=block_r,
        BLOCK_C=block_c,
        STEPS=steps,
        BYTE=ws[0].element_size() == 1,
        num_warps=warps,
    )
    return list(out.split(rows))


def _fingerprint_triton(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    triton, kernel, _ = _kernel()
    rows, n = w.shape
    out = torch.empty(rows, dtype=torch.int64, device=w.device)
    tile, widest, warps = TRITON_TILE
    block_c = min(widest, triton.next_power_of_2(n))
    block_r = max(1, tile // block_c)
    grid = (triton.cdiv(rows, block_r),)
    kernel[grid](w, d, out, rows, n, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps)
    return out
