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
        sums = _row_sums_triton(w, multipliers(w.shape[1], w.device))
    else:
        sums = _row_sums_torch(w)
    return fmix64(sums)


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
    out = torch.empty(rows, dtype=torch.int64, device=w.device)
    step = max(1, _CHUNK_WORDS // max(n, 1))
    buf = torch.empty(min(step, rows), n, dtype=torch.int64, device=w.device)
    for r in range(0, rows, step):
        part = buf[: min(step, rows - r)]
        part.copy_(w[r : r + step])  # sign-extends each word: an injective widening
        part.mul_(d)
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
        tl.store(out_ptr + r, tl.sum(acc, axis=1), mask=r < rows)

    return triton, row_sums


def _row_sums_triton(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    triton, kernel = _kernel()
    rows, n = w.shape
    out = torch.empty(rows, dtype=torch.int64, device=w.device)
    block_c = min(1024, triton.next_power_of_2(n))
    block_r = max(1, 2048 // block_c)
    grid = (triton.cdiv(rows, block_r),)
    kernel[grid](w, d, out, rows, n, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4)
    return out
