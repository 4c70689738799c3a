"""Diagnose on MoE dumps with the bugs of shared experts and of gpt-oss's experts and sinks:
shared experts of the wrong rank (DeepSeek-V3), w13 de-interleaved, w2_bias on every rank and
attention sinks unsharded (gpt-oss). Dumps are what the corrected synchronizer writes at vLLM
tp 2 (tests/diagnose_support.py), edited. Every dump is also diagnosed from its fingerprints (the
same report). gpt-oss's w13_bias (a rank's [4, 128], gate and up elements interleaved along
each row, 1-element segments) is fingerprinted per row: bugs planted in it read the same wrong
rows on the same ranks from fingerprints as from the full dump, named whole.

Sizes, worked by hand (both tiny specs, vLLM tp 2):

- DeepSeek-V3: layer 0 dense (first_k_dense_replace 1), layer 1 MoE with one shared expert
  of FFN 128: shared_experts.gate_up_proj [2 x 128, 64] is cut [gate 64r..; up 64r..] per
  rank r, 128 rows (gate rows 0-63, up rows 64-127 of the rank's tensor);
  shared_experts.down_proj [64, 128] is cut by columns, 64 a rank.
- gpt-oss: 8 Q heads (4 a rank): attn.sinks [8] cut 4 a rank (tp r: heads 4r..4r+3);
  4 experts of FFN 128, 64 a rank: w13 [4, 128, 64] per rank holds gate and up rows 64r..
  interleaved (g, u, g, u, ...), w13_bias [4, 128] likewise (row e: expert e's gate and up
  cols 64r.. interleaved; 256-byte rows, fingerprinted in pairs by default: at most half the
  rows); w2_bias [4, 64] whole on tp 0 and zeros on tp 1 (vLLM adds it once after the
  all-reduce).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.diagnose import diagnose as diagnose_full
from syncviz.diagnose.core import run_diagnosis
from syncviz.diagnose.fingerprints import PrintFiles, fingerprint_dumps, open_prints
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
from syncviz.parallel import Parallel
from tests.diagnose_support import bad, dumps_from_corrected
from tests.test_diagnose_bugs import diagnose

L0, L1 = "model.layers.0.", "model.layers.1."


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Per family: its tiny checkpoint and the corrected synchronizer's tp 2 dumps of it."""
    out = {}
    for family in ("deepseek-v3", "gpt-oss"):
        root = tmp_path_factory.mktemp(family)
        spec = tiny_spec(family)
        write_checkpoint(spec, root / "ref")
        dumps_from_corrected(spec, root / "ref", root / "dump", Parallel(tp=2), Parallel(tp=2))
        out[family] = root
    return out


def edited(root, out, edit):
    """The family's dumps, both ranks' tensors passed through ``edit(ranks)``, written to out."""
    ranks = [load_file(str(root / "dump" / f"tp{t}.safetensors")) for t in (0, 1)]
    edit(ranks)
    out.mkdir()
    for t, tensors in enumerate(ranks):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"tp{t}.safetensors"))
    return out


@pytest.mark.parametrize("family", ["deepseek-v3", "gpt-oss"])
def test_corrected_dumps_are_ok(made, family):
    """The unedited dumps (experts, shared experts, biases, sinks) are all OK (exit 0), from
    fingerprints too."""
    report = diagnose(made[family] / "ref", made[family] / "dump", 2)
    assert report.exit_code == 0 and set(report.counts()) == {"ok"}, report.text()


def test_shared_experts_of_the_wrong_rank(made, tmp_path):
    """Layer 1's shared expert exchanged between the ranks: each rank's gate_up holds the
    other's gate and up rows (64 each), its down_proj the other's 64 columns."""
    names = [L1 + f"mlp.shared_experts.{n}.weight" for n in ("gate_up_proj", "down_proj")]

    def exchange(ranks):
        assert ranks[0][names[0]].shape == (128, 64) and ranks[0][names[1]].shape == (64, 64)
        for name in names:
            ranks[0][name], ranks[1][name] = ranks[1][name], ranks[0][name]

    root = made["deepseek-v3"]
    report = diagnose(root / "ref", edited(root, tmp_path / "dump", exchange), 2)

    def gate_up(t):
        return f"rows 0-63: shared gate rows {64 * t}-{64 * t + 63}; rows 64-127: shared up rows" \
            f" {64 * t}-{64 * t + 63}"  # fmt: skip

    assert bad(report) == {
        "model." + names[0]: [
            f"tp {t}, rows 0-127: holds tp {1 - t}'s {gate_up(1 - t)}, expected {gate_up(t)}"
            for t in (0, 1)
        ],
        "model." + names[1]: [
            f"tp {t}, rows 0-63: holds tp {1 - t}'s shared down cols {64 * (1 - t)}-"
            f"{64 * (1 - t) + 63}, expected shared down cols {64 * t}-{64 * t + 63}"
            for t in (0, 1)
        ],
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 25, "wrong": 2}


W13 = L0 + "mlp.experts.w13_weight"


def test_gpt_oss_w13_de_interleaved(made, tmp_path):
    """Every expert's w13 written [gate; up] (64 rows each) where vLLM interleaves them: each
    rank's experts 0-3 are named with the rows they hold and the interleaving expected."""

    def de_interleave(ranks):
        for tensors in ranks:
            w = tensors[W13]
            assert w.shape == (4, 128, 64)
            tensors[W13] = torch.cat([w[:, 0::2], w[:, 1::2]], dim=1)

    root = made["gpt-oss"]
    report = diagnose(root / "ref", edited(root, tmp_path / "dump", de_interleave), 2)
    rows = {0: "rows 0-63", 1: "rows 64-127"}
    assert bad(report) == {
        "model." + W13: [
            f"tp {t}, experts 0-3: holds experts 0-3 each (rows 0-63: gate {rows[t]}, rows"
            f" 64-127: up {rows[t]}), expected experts 0-3 each (rows 0-127: gate {rows[t]} and"
            f" up {rows[t]}, interleaved)"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 28, "wrong": 1}


def test_gpt_oss_w2_bias_on_every_rank(made, tmp_path):
    """w2_bias copied onto tp 1 too (added twice after the all-reduce): tp 1's 4 expert rows
    hold tp 0's down biases where zeros are due; tp 0 is right."""
    bias = L0 + "mlp.experts.w2_bias"

    def everywhere(ranks):
        assert ranks[0][bias].shape == (4, 64) and not ranks[1][bias].any()
        ranks[1][bias] = ranks[0][bias].clone()

    root = made["gpt-oss"]
    report = diagnose(root / "ref", edited(root, tmp_path / "dump", everywhere), 2)
    assert bad(report) == {
        "model." + bias: ["tp 1, rows 0-3: holds tp 0's experts 0-3 down bias, expected zeros"]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 28, "wrong": 1}


def test_gpt_oss_sinks_unsharded(made, tmp_path):
    """Every rank given all 8 heads' sinks: shape [8] where [4] is due, said to be the whole
    tensor, with the heads each rank is due (tp 0: 0-3, tp 1: 4-7)."""
    sinks = L0 + "attn.sinks"
    whole = load_file(str(made["gpt-oss"] / "ref" / "model.safetensors"))
    whole = whole["model.layers.0.self_attn.sinks"]

    def unsharded(ranks):
        assert whole.shape == (8,) and ranks[1][sinks].shape == (4,)
        for tensors in ranks:
            tensors[sinks] = whole.clone()

    root = made["gpt-oss"]
    report = diagnose(root / "ref", edited(root, tmp_path / "dump", unsharded), 2)
    assert bad(report) == {
        "model." + sinks: [
            f"tp {t}: shape [8], the whole tensor's (unsharded), expected [4]: Q heads"
            f" {4 * t}-{4 * t + 3} sink"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 28, "wrong": 1}


def test_first_heads_sinks_on_every_rank(made, tmp_path):
    """Every rank given the first 4 heads' sinks (the right shape, never cut by rank): tp 1
    holds tp 0's heads 0-3 where 4-7 are due; tp 0 is right."""
    sinks = L0 + "attn.sinks"

    def first(ranks):
        ranks[1][sinks] = ranks[0][sinks].clone()

    root = made["gpt-oss"]
    report = diagnose(root / "ref", edited(root, tmp_path / "dump", first), 2)
    assert bad(report) == {
        "model." + sinks: ["tp 1, elements 0-3: holds tp 0's Q heads 0-3 sink, expected Q heads"
                           " 4-7 sink"]
    }  # fmt: skip
    assert report.exit_code == 1


B13 = L0 + "mlp.experts.w13_bias"


def wrong_rows(ref, dump, files=None, **kwargs) -> dict[tuple[str, int], list[int]]:
    """Per wrong tensor and rank: the rows (experts of a 3-D stack) holding a wrong segment; of a
    1-D tensor, its wrong segments."""
    diagnosis = run_diagnosis(ref, dump, 2, files=files, **kwargs)
    out = {}
    for param, per_rank in zip(diagnosis.layout.params, diagnosis.decoded, strict=True):
        for dec in per_rank:
            if dec.status == "wrong":
                rows = (
                    dec.wrong.view(dec.shape[0], -1).any(dim=1) if len(dec.shape) > 1 else dec.wrong
                )
                out[(param.key, dec.tp)] = torch.nonzero(rows).flatten().tolist()
    return out


def by_rows(ref, dump, same_missed=True, **kwargs):
    """The full dump's report, after its fingerprints agree with it: one per row, and in pairs of
    rows (save_vllm_rank's default for 256-byte rows): the same exit code, counts, ranks that
    missed the update, and wrong tensors on the same ranks; the same wrong rows (in groups:
    those and no more than the rest of their groups). Returns the full report and the two
    fingerprint ones."""
    full, want = diagnose_full(ref, dump, 2, **kwargs), wrong_rows(ref, dump, **kwargs)
    out = [full]
    for min_bytes in (0, 8192):
        prints = fingerprint_dumps(
            dump, dump.parent / f"{dump.name}-{min_bytes}", 2, min_bytes=min_bytes
        )
        fp = diagnose_full(ref, prints, 2, **kwargs)
        assert (fp.exit_code, fp.counts()) == (full.exit_code, full.counts())
        assert fp.missed_ranks == full.missed_ranks or not same_missed
        got = wrong_rows(ref, prints, PrintFiles(), **kwargs)
        assert got.keys() == want.keys()
        for (key, tp), rows in want.items():
            entry = open_prints(prints, 2)[(0, tp)].tensors[key]
            assert entry.group == 1 or min_bytes
            assert key != "model." + B13 or entry.group == (2 if min_bytes else 1)
            g = entry.group if len(entry.shape) == 2 else 1  # 3-D: groups inside an expert
            pairs = {r // g * g + i for r in rows for i in range(g)}
            assert set(rows) <= set(got[(key, tp)]) <= pairs  # rows of the wrong groups
            assert got[(key, tp)] == rows or g > 1
        out.append(fp)
    return out


NOTE = (
    "model.{key} ({files}): fingerprinted one per {unit} of 128 elements, but the layout fills"
    " its rows in segments of 1: its wrong rows are named whole, not the elements in them; a"
    " full dump (save_vllm_rank without fingerprints=True) names those"
)


def expected_bias(t: int, e: int) -> str:
    """What row e of tp t's w13_bias holds: expert e's gate and up cols 64t.. interleaved."""
    cols = f"cols {64 * t}-{64 * t + 63}"
    return f"expert {e} gate {cols} and expert {e} up {cols}, interleaved"


def all_rows(t: int) -> str:
    return f"row 0: {expected_bias(t, 0)}; ... 2 more alike ...; row 3: {expected_bias(t, 3)}"


def test_gpt_oss_w13_bias_de_interleaved(made, tmp_path):
    """Every expert's w13_bias written [gate; up] where vLLM interleaves them: all 4 rows of
    both ranks wrong (row e holds values found nowhere as one row), from fingerprints as from
    the full dump; the fingerprint report says once its rows are named whole."""

    def de_interleave(ranks):
        for tensors in ranks:
            b = tensors[B13]
            assert b.shape == (4, 128)
            tensors[B13] = torch.cat([b[:, 0::2], b[:, 1::2]], dim=1)

    root = made["gpt-oss"]
    full, fp, paired = by_rows(root / "ref", edited(root, tmp_path / "dump", de_interleave))
    assert full.exit_code == 1 and full.counts() == {"ok": 28, "wrong": 1}
    want = [
        f"tp {t}, rows 0-3: holds values not found in the reference, expected {all_rows(t)}"
        for t in (0, 1)
    ]
    assert bad(fp) == bad(paired) == {"model." + B13: want}
    files = "tp0.fingerprints.safetensors, tp1.fingerprints.safetensors"
    assert fp.flow_errors == [NOTE.format(key=B13, files=files, unit="row")]
    assert paired.flow_errors == [NOTE.format(key=B13, files=files, unit="2 rows")]
    assert not full.flow_errors


def test_gpt_oss_w13_bias_of_the_other_rank(made, tmp_path):
    """w13_bias exchanged between the ranks: each rank's 4 rows hold the other rank's rows,
    found among every rank's expected rows and named so."""

    def exchange(ranks):
        ranks[0][B13], ranks[1][B13] = ranks[1][B13], ranks[0][B13]

    root = made["gpt-oss"]
    full, fp, paired = by_rows(root / "ref", edited(root, tmp_path / "dump", exchange))
    assert full.exit_code == 1
    want = [
        f"tp {t}, rows 0-3: holds tp {1 - t}'s {all_rows(1 - t)}, expected {all_rows(t)}"
        for t in (0, 1)
    ]
    assert bad(fp) == bad(paired) == {"model." + B13: want}


def test_gpt_oss_w13_bias_one_flipped_bit(made, tmp_path):
    """One bit of tp 1's w13_bias row 2 (expert 2) flipped: that row alone from fingerprints one
    per row (the full dump's row), rows 2-3 from pairs (their expected rows numbered as the
    rank's rows, as the report numbers any span); every other tensor right."""

    def flip(ranks):
        ranks[1][B13].view(torch.int16)[2, 77] ^= 1 << 3

    root = made["gpt-oss"]
    full, fp, paired = by_rows(root / "ref", edited(root, tmp_path / "dump", flip))
    assert [line.split(":")[0] for line in bad(full)["model." + B13]] == ["tp 1, row 2"]
    wrong = "holds values not found in the reference, expected"
    assert bad(fp) == {"model." + B13: [f"tp 1, row 2: {wrong} {expected_bias(1, 2)}"]}
    pair = f"row 2: {expected_bias(1, 2)}; row 3: {expected_bias(1, 3)}"  # rows of the pair
    assert bad(paired) == {"model." + B13: [f"tp 1, rows 2-3: {wrong} {pair}"]}


def stale_dump(made, tmp_path, case: str):
    """A next step (every value + 0.5) and its tp 2 dumps where tp 0's w13_bias is the previous
    step's (``tensor``), or where tp 1 holds the previous step everywhere (``rank``)."""
    from tests.test_diagnose_stale import next_step

    spec, step1 = tiny_spec("gpt-oss"), made["gpt-oss"] / "ref"
    step2 = next_step(step1, tmp_path / "step2")
    write_dumps(spec, step1, tmp_path / "old", tp=2)
    dump = tmp_path / case
    write_dumps(spec, step2, dump, tp=2)
    for t in range(2):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        stale = load_file(str(tmp_path / "old" / f"tp{t}.safetensors"))
        for name in tensors:
            if (case == "tensor" and t == 0 and name == B13) or (case == "rank" and t == 1):
                tensors[name] = stale[name]
        save_file(tensors, str(dump / f"tp{t}.safetensors"))
    return step1, step2, dump


def test_gpt_oss_stale_w13_bias(made, tmp_path):
    """tp 0's w13_bias kept from the previous step: with --previous, its 4 rows read stale in
    place from fingerprints and from the full dump alike (whose 1-element segments are stale in
    place before any look-up by value)."""
    step1, step2, dump = stale_dump(made, tmp_path, "tensor")
    full, fp, paired = by_rows(step2, dump, previous=[step1])
    assert full.missed_ranks == [] and [p.key for p in full.bad()] == ["model." + B13]
    want = [f"tp 0, rows 0-3: holds the previous checkpoint's values (stale): {step1}"]
    assert bad(full) == bad(fp) == bad(paired) == {"model." + B13: want}


MISSED = "tp 1 missed the update: every tensor holds the previous checkpoint's values"


def test_gpt_oss_missed_rank_from_fingerprints(made, tmp_path):
    """tp 1 holds the previous step everywhere: with --previous, fingerprints one per row and in
    groups (embedding and lm_head rows 64-127 of tp 1 one group, vocab rows 192-199 and
    padding: the previous rows and zeros) say once that it missed the update; the full dump
    finds the same wrong tensors, ranks and rows."""
    step1, step2, dump = stale_dump(made, tmp_path, "rank")
    full, fp, paired = by_rows(step2, dump, same_missed=False, previous=[step1])
    assert full.exit_code == 1 and fp.missed_ranks == paired.missed_ranks == [1]
    assert MISSED in fp.text() and MISSED in paired.text()


def test_gpt_oss_missed_rank_from_the_full_dump(made, tmp_path):
    """The same rank from the full dump: said to have missed the update, as from fingerprints
    (w13_bias's 1-element segments are stale in place before their values are looked up, by
    chance equal, in other tensors)."""
    step1, step2, dump = stale_dump(made, tmp_path, "rank")
    assert diagnose_full(step2, dump, 2, previous=[step1]).missed_ranks == [1]


def test_cli_on_fingerprints_as_save_vllm_rank_writes_them(made, tmp_path, capsys):
    """gpt-oss ranks fingerprinted with save_fingerprints' defaults (runs of 16 elements, groups
    up to 8 KiB): `syncviz diagnose` exits 0 on the right ranks, 1 with one bit of tp 1's
    w13_bias flipped (naming its rows 2-3), where it once refused them as bad input (2)."""
    from syncviz.cli import main
    from syncviz.fingerprint_dump import save_fingerprints

    root = made["gpt-oss"]
    for case, code in (("right", 0), ("flipped", 1)):
        prints = tmp_path / case
        for t in range(2):
            tensors = load_file(str(root / "dump" / f"tp{t}.safetensors"))
            if case == "flipped" and t == 1:
                tensors[B13].view(torch.int16)[2, 5] ^= 1
            save_fingerprints(tensors, prints, tp_rank=t)
        args = ["diagnose", "--reference", str(root / "ref"), "--dump", str(prints)]
        assert main([*args, "--dst-tp", "2"]) == code
    assert "tp 1, rows 2-3: holds values not found in the reference" in capsys.readouterr().out
