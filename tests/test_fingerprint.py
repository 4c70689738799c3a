"""Segment fingerprints: exact functions of the bits, sensitive to every bit and every position."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from syncviz.errors import SyncvizError
from syncviz.fingerprint import VERSION, compose, fingerprint, fingerprint_torch, fmix64
from syncviz.fingerprint_dump import (
    FILE_VERSION,
    read_fingerprints,
    save_fingerprints,
    tensor_group,
    tensor_run,
)

M64 = (1 << 64) - 1
DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int8, torch.int32]
DTYPES += [torch.int64, torch.uint8]
DTYPES += [d for d in (getattr(torch, "float8_e4m3fn", None),) if d is not None]


def _py_splitmix(i: int) -> int:
    z = ((i + 1) * 0x9E3779B97F4A7C15 + 0x5EC0F1A9E2B7) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _py_fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def _py_coefficients(i: int) -> list[int]:
    """Byte position i's 16 signed coefficients: the bytes of two splitmix64 draws, the
    first one's lowest bit set so that their sum is odd."""
    raw = struct.pack("<QQ", _py_splitmix(2 * i), _py_splitmix(2 * i + 1))
    c = list(struct.unpack("<16b", raw))
    c[0] = (c[0] & ~1) | ((sum(c[1:]) + 1) & 1)
    return c


def _py_fingerprint(raw: bytes) -> int:
    """The definition, from the segment's raw little-endian bytes, in Python integers."""
    mix = [_py_splitmix(k - 16) | 1 for k in range(16)]
    coef = [_py_coefficients(i) for i in range(len(raw))]
    signed = struct.unpack(f"<{len(raw)}b", raw)
    sums = [sum(b * c[k] for b, c in zip(signed, coef, strict=True)) for k in range(16)]
    out = _py_fmix(sum(g * s for g, s in zip(mix, sums, strict=True)) & M64)
    return out - (1 << 64) if out >> 63 else out


def _random(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(-(2**62), 2**62, (math.prod(shape),), generator=gen)
    size = torch.empty(0, dtype=dtype).element_size()
    return bits.view(torch.uint8)[: math.prod(shape) * size].view(dtype).view(shape).clone()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_python_definition(dtype):
    """Every dtype: each row's fingerprint equals the definition computed on its raw bytes."""
    t = _random((3, 7), dtype, seed=1)
    expected = [
        _py_fingerprint(t[r].contiguous().view(torch.uint8).numpy().tobytes()) for r in range(3)
    ]
    assert fingerprint(t).tolist() == expected


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_single_bit_flip_changes_its_row_only(dtype):
    """Exhaustive: each of the segment's bits flipped changes that row's fingerprint, no other."""
    t = _random((3, 5), dtype, seed=2)
    base = fingerprint(t)
    raw = t.view(torch.uint8).reshape(3, -1)
    for row in range(3):
        for byte in range(raw.shape[1]):
            for bit in range(8):
                flipped = raw.clone()
                flipped[row, byte] ^= 1 << bit
                now = fingerprint(flipped.view(dtype).view(t.shape))
                assert now[row] != base[row], (row, byte, bit)
                assert torch.equal(now[torch.arange(3) != row], base[torch.arange(3) != row])


@settings(max_examples=60, deadline=None)
@given(
    cols=st.integers(1, 300),
    seed=st.integers(0, 2**31),
    where=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 15),
)
def test_one_bit_flip_in_long_rows(cols, seed, where, bit):
    """Rows of any length: a flip of any bit anywhere changes the row's fingerprint."""
    t = _random((2, cols), torch.bfloat16, seed)
    words = t.view(torch.int16).clone()
    col = int(where * cols)
    words[1, col] ^= torch.tensor(1 << bit).to(torch.int16)
    before, after = fingerprint(t), fingerprint(words.view(torch.bfloat16))
    assert after[0] == before[0] and after[1] != before[1]


def test_same_words_in_other_order_differ():
    """Rows holding the same values in another order (exchanged, reversed, rolled) differ."""
    row = _random((1, 64), torch.bfloat16, 3)[0]
    swapped = row.clone()
    swapped[[3, 40]] = swapped[[40, 3]]
    rows = torch.stack([row, row.flip(0), row.roll(1), swapped, row[torch.randperm(64)]])
    assert fingerprint(rows).unique().numel() == 5
    pair = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    assert fingerprint(pair)[0] != fingerprint(pair)[1]


def test_zero_rows_read_zero_and_minus_zero_does_not():
    """All-zero bits give 0 at any length; -0.0 differs from +0.0."""
    assert fingerprint(torch.zeros(3, 17, dtype=torch.bfloat16)).tolist() == [0, 0, 0]
    assert int(fingerprint(torch.full((1, 4), -0.0))[0]) != 0


def test_rows_of_3d_stacks_and_runs_of_1d():
    """[E, R, C] is E*R rows of C; a 1-D tensor is cut in runs; one row is one fingerprint."""
    t = _random((2, 3, 4), torch.float16, 4)
    assert torch.equal(fingerprint(t), fingerprint(t.reshape(6, 4)))
    v = t.reshape(-1)
    assert torch.equal(fingerprint(v, run=4), fingerprint(t.reshape(6, 4)))
    with pytest.raises(SyncvizError, match="not a multiple of the segment length 5"):
        fingerprint(v, run=5)


def test_non_contiguous_reads_logical_order():
    """A transposed view is fingerprinted by its logical rows, like its contiguous copy."""
    t = _random((4, 6), torch.bfloat16, 5)
    assert torch.equal(fingerprint(t.t()), fingerprint(t.t().contiguous()))


def test_compose_is_the_fingerprint_with_weighted_multipliers():
    """Composed runs: the fingerprint of the runs' bytes with multipliers E[i] * O[j] (computed
    here with Python integers); one bit changes it; zeros compose to 0."""
    from syncviz.fingerprint import multipliers, places

    v = _random((32,), torch.bfloat16, 6)
    runs = fingerprint(v, run=2)
    e, o = multipliers(4).tolist(), places(4).tolist()
    b = v.view(torch.int8).view(4, 4, 4).tolist()  # [segment][run][byte]
    want = []
    for seg in b:
        inner = sum(x * e[i] * o[j] for j, run in enumerate(seg) for i, x in enumerate(run))
        f = _py_fmix(inner & M64)
        want.append(f - (1 << 64) if f >> 63 else f)
    assert compose(runs, 4).tolist() == want
    flipped = v.view(torch.int16).clone()
    flipped[9] ^= 1
    other = compose(fingerprint(flipped.view(torch.bfloat16), run=2), 4)
    assert (other != compose(runs, 4)).tolist() == [False, True, False, False]
    assert compose(torch.zeros(6, dtype=torch.int64), 3).tolist() == [0, 0]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=2, max_value=8),
    st.integers(min_value=0, max_value=7),
    st.integers(min_value=0, max_value=63),
    st.integers(min_value=0, max_value=2**31),
)
def test_one_bit_in_a_group_changes_its_fingerprint(k, row, bit, seed):
    """A group of k rows of 4 bf16 values: flipping any one bit of any row changes the group's
    composed fingerprint (the odd place weights keep the row's change)."""
    rows = _random((k, 4), torch.bfloat16, seed)
    row %= k
    flipped = rows.view(torch.int16).clone().view(torch.int64)
    flipped[row] ^= 1 << bit if bit < 63 else -(1 << 63)
    before = compose(fingerprint(rows), k)
    after = compose(fingerprint(flipped.view(torch.bfloat16).view(k, 4)), k)
    assert int(before[0]) != int(after[0])


def test_fmix64_is_murmur3_finaliser():
    """fmix64 on int64 equals the 64-bit finaliser computed with Python integers."""
    xs = [0, 1, -1, 2**63 - 1, -(2**63), 123456789]
    want = [v - (1 << 64) if v >> 63 else v for v in (_py_fmix(x & M64) for x in xs)]
    assert fmix64(torch.tensor(xs)).tolist() == want


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.int8], ids=str)
def test_int8_products_equal_plain_torch(dtype):
    """The CPU's int8 products (64 KiB blocks) and the plain elementwise path agree, rows of
    one byte to 3 blocks long, whichever chunk of rows the plain path widens at a time."""
    import syncviz.fingerprint as fpm

    for shape in [(5, 1), (50, 33), (3, 70000 // torch.empty(0, dtype=dtype).element_size())]:
        t = _random(shape, dtype, shape[1])
        whole = fingerprint_torch(t)
        assert torch.equal(fingerprint(t), whole)
        old = fpm._CHUNK_BYTES
        fpm._CHUNK_BYTES = 40  # one row per chunk
        try:
            assert torch.equal(fingerprint_torch(t), whole)
        finally:
            fpm._CHUNK_BYTES = old


def test_file_roundtrip(tmp_path):
    """A fingerprint file keeps names, shapes, dtypes, runs, groups, the versions; a tied name
    once; rows narrower than min_bytes stored as composed groups of rows."""
    tensors = [
        ("a.weight", _random((8, 8), torch.bfloat16, 8)),
        ("a.bias", _random((24,), torch.float32, 9)),
        ("e.w13", _random((2, 4, 8), torch.float16, 10)),
        ("empty", torch.zeros(0, dtype=torch.bfloat16)),
        ("a.weight", torch.zeros(1)),
    ]
    path = save_fingerprints(tensors, tmp_path, tp_rank=2, pp_rank=1, pp_size=2, min_bytes=64)
    assert path.name == "pp1-tp2.fingerprints.safetensors"
    entries, prints = read_fingerprints(path)
    assert {n: (e.shape, e.dtype, e.run, e.group) for n, e in entries.items()} == {
        "a.weight": ((8, 8), torch.bfloat16, 8, 4),  # 16-byte rows in fours: 64 bytes
        "a.bias": ((24,), torch.float32, 8, 1),
        "e.w13": ((2, 4, 8), torch.float16, 8, 2),  # never across the halves of an expert
        "empty": ((0,), torch.bfloat16, 1, 1),
    }
    rows = fingerprint(tensors[0][1])
    assert torch.equal(prints["a.weight"], compose(rows, 4))
    assert torch.equal(prints["a.bias"], fingerprint(tensors[1][1], run=8))
    assert torch.equal(prints["e.w13"], compose(fingerprint(tensors[2][1]), 2))
    assert prints["empty"].shape == (0,)
    assert VERSION == 1 and FILE_VERSION == 2


def test_version_1_file_reads_as_one_print_per_run(tmp_path):
    """A file of format version 1 (before groups) still reads: every entry a group of 1."""
    from safetensors.torch import save_file

    meta = {"w": {"shape": [2, 4], "dtype": "bfloat16", "run": 4}}
    save_file(
        {"w": torch.tensor([5, 7])},
        str(tmp_path / "tp0.fingerprints.safetensors"),
        metadata={"format": "syncviz-fingerprints", "version": "1", "tensors": json.dumps(meta)},
    )
    entries, prints = read_fingerprints(tmp_path / "tp0.fingerprints.safetensors")
    assert entries["w"].group == 1 and entries["w"].run == 4 and prints["w"].tolist() == [5, 7]


@pytest.mark.parametrize(
    ("version", "function", "words"),
    [("0", None, "file version 0"), ("3", "1", "file version 3"), ("2", "2", "function version 2")],
)
def test_other_version_is_refused(tmp_path, version, function, words):
    """A file of another format or function version is bad input saying to fingerprint again."""
    from safetensors.torch import save_file

    header = {"format": "syncviz-fingerprints", "version": version, "tensors": "{}"}
    if function is not None:
        header["function"] = function
    save_file(
        {"w": torch.zeros(2, dtype=torch.int64)},
        str(tmp_path / "tp0.fingerprints.safetensors"),
        metadata=header,
    )
    with pytest.raises(SyncvizError, match=words) as err:
        read_fingerprints(tmp_path / "tp0.fingerprints.safetensors")
    assert "again" in str(err.value.fix)


def _rank_shapes(name: str) -> list[tuple[int, ...]]:
    """One TP 8 (EP 8) rank's weight shapes at real sizes, per model, all layers."""
    if name == "llama3-70b":
        layer = [(1280, 8192), (8192, 1024), (7168, 8192), (8192, 3584), (8192,), (8192,)]
        return layer * 80 + [(16032, 8192), (16032, 8192), (8192,)]
    layer = [(16, 3072, 4096), (16, 4096, 1536), (4096,), (4096,)]
    return layer * 94


@pytest.mark.parametrize(("name", "share"), [("llama3-70b", 0.00058), ("qwen3-235b-a22b", 0.00087)])
def test_file_share_at_real_shapes(name, share):
    """At most 0.1% of a rank's bf16 bytes: a llama3-70b TP 8 rank 0.058% (o_proj rows of 2 KiB
    in fours, down rows of 7 KiB in pairs), a Qwen3-235B EP 8 rank 0.087% (w2 rows of 1536
    elements in fours: one 8-byte fingerprint per 12 KiB, where one per row cost 0.26%)."""
    shapes = _rank_shapes(name)
    described = sum(math.prod(s) * 2 for s in shapes)
    prints = sum(math.prod(s) // (tensor_run(s) * tensor_group(s, 2)) * 8 for s in shapes)
    assert share <= prints / described <= share + 0.00001 < 0.001, prints / described
    assert tensor_group((16, 4096, 1536), 2) == 4 and tensor_group((8192, 1024), 2) == 4
