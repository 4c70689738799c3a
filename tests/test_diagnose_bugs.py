"""Weight-sync bugs met in the field, planted in dumps cut from a checkpoint, diagnosed in words:
gate/up halves exchanged, expert ids local under EP, tied and untied lm_head mixed up, a router
never sent, a fused norm regrouped as QKV, the MHA regroup applied to a GQA model. Each dump is
also fingerprinted and diagnosed from the fingerprints: the same exit code, tensors, ranks, rows
and words. DeepSeek-V3 (MLA) adds a router score-correction bias never sent, MLA's fused
down-projection half from the previous step, kv_b heads shifted on a rank, and q_b heads written
[rope; nope]."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.diagnose import diagnose as diagnose_full
from syncviz.diagnose.fingerprints import fingerprint_dumps
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
from syncviz.diagnose.words import W13_SWAP
from syncviz.fingerprint_dump import SUFFIX
from tests.diagnose_support import bad
from tests.test_diagnose_fingerprints import _same

L0 = "model.model.layers.0."
MOE = L0 + "block_sparse_moe.experts."


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny bf16 Llama (I 24) and Mixtral (4 experts, I 8, vocab 64), and a tied Qwen2."""
    out = {}
    for family in ("llama-mcore", "mixtral"):
        out[family] = tmp_path_factory.mktemp(family)
        write_checkpoint(tiny_spec(family), out[family])
    out["tied"] = tmp_path_factory.mktemp("tied")
    write_checkpoint(dataclasses.replace(tiny_spec("qwen2"), tie_word_embeddings=True), out["tied"])
    return out


def diagnose(ref, dump, tp, **kwargs):
    """The full dump's report, after checking it against the dump's fingerprints: one per row,
    the same report; in groups of rows as save_vllm_rank writes them (here whole tensors of
    tiny rows), the same exit code, statuses, and wrong tensors on the same ranks."""
    full = diagnose_full(ref, dump, tp, **kwargs)
    for min_bytes in (0, 8192):
        prints = dump.parent / f"{dump.name}-prints-{min_bytes}"
        fingerprint_dumps(dump, prints, tp=tp, min_bytes=min_bytes)
        fp = diagnose_full(ref, prints, tp, **kwargs)
        if min_bytes == 0:
            _same(full, fp)
            named = full.text().replace(".safetensors", SUFFIX)  # the rank files' names
            assert fp.text().splitlines()[1:] == named.splitlines()[1:]
        assert (fp.exit_code, fp.counts()) == (full.exit_code, full.counts())
        assert ranks(fp) == ranks(full)
    return full


def ranks(report) -> dict[str, tuple[str, list[str]]]:
    """Per parameter: its status and the ranks its lines name."""
    return {
        p.key: (p.status, sorted({line.split(",")[0].split(":")[0] for line in p.lines()}))
        for p in report.params
    }


def run(checkpoints, tmp_path, family, **kwargs):
    spec = tiny_spec(family)
    write_dumps(spec, checkpoints[family], tmp_path / "dump", tp=2, **kwargs)
    return diagnose(checkpoints[family], tmp_path / "dump", 2)


def test_dense_gate_up_halves_exchanged(checkpoints, tmp_path):
    """A fused gate_up sent as [up; gate] (HF fused experts read the wrong way round): I 24 at
    tp 2 puts gate rows 12r.. then up rows 12r.. on rank r; both ranks hold them exchanged."""
    report = run(checkpoints, tmp_path, "llama-mcore", bugs={"gate_up": "swap_halves"})
    assert bad(report) == {
        L0 + "mlp.gate_up_proj.weight": [
            "tp 0, rows 0-23: holds rows 0-11: up rows 0-11; rows 12-23: gate rows 0-11,"
            " expected rows 0-11: gate rows 0-11; rows 12-23: up rows 0-11",
            "tp 1, rows 0-23: holds rows 0-11: up rows 12-23; rows 12-23: gate rows 12-23,"
            " expected rows 0-11: gate rows 12-23; rows 12-23: up rows 12-23",
        ]
    }
    assert report.exit_code == 1


def test_w13_halves_exchanged_in_every_expert(checkpoints, tmp_path):
    """Every expert [up; gate] on every rank: the MoE back end's layout, named once (exit 2)."""
    report = run(checkpoints, tmp_path, "mixtral", bugs={"experts_w13": "swap_halves"})
    assert bad(report) == {
        MOE + "w13_weight": [
            f"tp {t}, experts 0-3: every expert's w13 halves exchanged ([up; gate] instead of"
            " [gate; up])"
            for t in (0, 1)
        ]
    }
    assert report.text().count(W13_SWAP) == 1 and report.exit_code == 2


def test_local_expert_ids_under_ep(checkpoints, tmp_path):
    """Trainer EP 2 naming experts by local id: experts 0-1 hold experts 2-3 (the last EP rank's
    write wins) on both TP ranks, each rank its own columns (I 8 / 2 = 4) of them."""
    bugs = {"experts_w13": "local_experts", "experts_w2": "local_experts"}
    found = bad(run(checkpoints, tmp_path, "mixtral", bugs=bugs))
    assert found[MOE + "w2_weight"] == [
        "tp 0, experts 0-1: holds experts 2-3 down cols 0-3, expected experts 0-1 down cols 0-3",
        "tp 1, experts 0-1: holds experts 2-3 down cols 4-7, expected experts 0-1 down cols 4-7",
    ]
    assert found[MOE + "w13_weight"][0].startswith(
        "tp 0, experts 0-1: holds expert 0 (rows 0-3: expert 2 gate rows 0-3, rows 4-7: expert 2"
        " up rows 0-3); expert 1 (rows 0-3: expert 3 gate rows 0-3"
    )
    assert len(found) == 2


def test_untied_lm_head_given_the_embedding(checkpoints, tmp_path):
    """An untied model whose sync copied the embedding into lm_head: each rank's lm_head holds
    the embedding's vocab rows (64 / 2 = 32 a rank), named as the embedding's."""
    dump = tmp_path / "dump"
    write_dumps(tiny_spec("mixtral"), checkpoints["mixtral"], dump, tp=2)
    for t in (0, 1):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
        save_file(tensors, str(dump / f"tp{t}.safetensors"))
    found = bad(diagnose(checkpoints["mixtral"], dump, 2))
    assert found == {
        "model.lm_head.weight": [
            "tp 0, rows 0-31: holds model.model.embed_tokens.weight's vocab rows 0-31,"
            " expected vocab rows 0-31",
            "tp 1, rows 0-31: holds model.model.embed_tokens.weight's vocab rows 32-63,"
            " expected vocab rows 32-63",
        ]
    }


def test_tied_and_untied_lm_head_mixed_up(checkpoints, tmp_path):
    """A tied model's dump with an lm_head of its own is told the config ties it; an untied
    model dumped as if tied (no lm_head) is missing it on every rank."""
    tied = dataclasses.replace(tiny_spec("qwen2"), tie_word_embeddings=True)
    dump = tmp_path / "dump"
    write_dumps(tied, checkpoints["tied"], dump, tp=2)
    for t in (0, 1):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        tensors["lm_head.weight"] = torch.zeros(48, 16, dtype=torch.bfloat16)
        save_file(tensors, str(dump / f"tp{t}.safetensors"))
    report = diagnose(checkpoints["tied"], dump, 2)
    assert report.flow_errors == [
        f"tp {t} (tp{t}.safetensors): lm_head.weight is no parameter of qwen2-tiny: its config"
        " ties lm_head to the embedding"
        for t in (0, 1)
    ]
    assert report.exit_code == 1 and report.counts() == {"ok": 16}  # 2 layers x 7 + embed, norm
    untied = tmp_path / "untied"
    write_dumps(tiny_spec("mixtral"), checkpoints["mixtral"], untied, tp=2)
    for t in (0, 1):
        tensors = load_file(str(untied / f"tp{t}.safetensors"))
        del tensors["lm_head.weight"]
        save_file(tensors, str(untied / f"tp{t}.safetensors"))
    assert bad(diagnose(checkpoints["mixtral"], untied, 2)) == {
        "model.lm_head.weight": [
            "tp 0: missing from tp0.safetensors",
            "tp 1: missing from tp1.safetensors",
        ]
    }


def test_router_never_sent_reads_stale(checkpoints, tmp_path):
    """A router the sync never sends (as a buffer bias is never sent) keeps the previous step's
    values on every rank: stale with --previous, and no rank counts as having missed the update."""
    from tests.test_diagnose_stale import next_step

    spec = tiny_spec("mixtral")
    step1, step2 = checkpoints["mixtral"], next_step(checkpoints["mixtral"], tmp_path / "step2")
    write_dumps(spec, step1, tmp_path / "old", tp=2)
    write_dumps(spec, step2, tmp_path / "dump", tp=2)
    for t in (0, 1):
        tensors = load_file(str(tmp_path / "dump" / f"tp{t}.safetensors"))
        old = load_file(str(tmp_path / "old" / f"tp{t}.safetensors"))
        for i in (0, 1):
            name = f"model.layers.{i}.block_sparse_moe.gate.weight"
            tensors[name] = old[name]
        save_file(tensors, str(tmp_path / "dump" / f"tp{t}.safetensors"))
    report = diagnose(step2, tmp_path / "dump", 2, previous=[step1])
    stale = f"holds the previous checkpoint's values (stale): {step1}"
    assert report.text().splitlines()[2:] == [
        "WRONG layers 0-1: block_sparse_moe.gate.weight",
        f"  tp 0, rows 0-3: {stale}",  # the router [4 experts, 16] is replicated
        f"  tp 1, rows 0-3: {stale}",
    ]
    assert report.flow_errors == [] and report.exit_code == 1


def test_fused_norm_regrouped_as_qkv(tmp_path):
    """The input norm given the QKV regroup (Qwen2: 2 groups of 2 Q heads + K + V, 16 elements:
    blocks of 2) holds its own elements reordered, on every rank; the order is checked by hand."""
    spec = tiny_spec("qwen2")
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "dump", tp=2, bugs={"input_norm": "regroup_qkv"})
    norm = load_file(str(tmp_path / "ref" / "model.safetensors"))[
        "model.layers.0.input_layernorm.weight"
    ]
    held = load_file(str(tmp_path / "dump" / "tp1.safetensors"))[
        "model.layers.0.input_layernorm.weight"
    ]
    order = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15]  # q0 q1 | k0 k1 | v0 v1
    assert torch.equal(held, norm[order])
    report = diagnose(tmp_path / "ref", tmp_path / "dump", 2)
    assert bad(report) == {
        L0 + "input_layernorm.weight": [
            f"tp {t}, elements 0-15: holds its expected elements in another order,"
            " expected input norm"
            for t in (0, 1)
        ]
    }


def mha_regroup(held: torch.Tensor, heads: int, groups: int, head_dim: int) -> torch.Tensor:
    """A rank's fused QKV as the MHA regroup makes it of a GQA model's Megatron QKV: the rank's
    interleaved rows (per query group: its Q heads, K, V) cut as if every head were [q; k; v]."""
    per = heads // groups
    q, k, v = held.split([groups * per * head_dim, groups * head_dim, groups * head_dim])
    cols = held.shape[-1]
    parts = [q.view(groups, per * head_dim, cols), k.view(groups, head_dim, cols)]
    interleaved = torch.cat([*parts, v.view(groups, head_dim, cols)], dim=1)
    slots = interleaved.reshape(-1, 3, head_dim, cols)
    return torch.cat([slots[:, 0], slots[:, 1], slots[:, 2]]).reshape(held.shape)


def test_mha_regroup_applied_to_gqa(checkpoints, tmp_path):
    """GQA (8 Q heads, 2 groups, heads of 2 rows) given the MHA regroup at tp 2: a rank's 6 head
    slots [q0 q1 q2 q3 k v] come out [q0 q3 q1 k q2 v] (worked by hand); slots 1-4 are named."""
    spec, dump = tiny_spec("llama-mcore"), tmp_path / "dump"
    write_dumps(spec, checkpoints["llama-mcore"], dump, tp=2)
    name = "model.layers.0.self_attn.qkv_proj.weight"
    for t in (0, 1):
        tensors = load_file(str(dump / f"tp{t}.safetensors"))
        held = tensors[name]
        tensors[name] = mha_regroup(held, 8 // 2, 2 // 2, 2).contiguous()
        slots = held.view(6, 2, -1)
        assert torch.equal(tensors[name].view(6, 2, -1), slots[[0, 3, 1, 4, 2, 5]])
        save_file(tensors, str(dump / f"tp{t}.safetensors"))
    report = diagnose(checkpoints["llama-mcore"], dump, 2)
    assert bad(report) == {
        L0 + "self_attn.qkv_proj.weight": [
            f"tp {t}, rows 2-9: holds rows 2-3: Q head {4 * t + 3}; rows 4-5: Q head {4 * t + 1};"
            f" rows 6-7: K head {t}; rows 8-9: Q head {4 * t + 2}, expected rows 2-7: Q heads"
            f" {4 * t + 1}-{4 * t + 3}; rows 8-9: K head {t}"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 14, "wrong": 1}


DS = "deepseek-v3"
ATTN = "model.layers.0.self_attn."  # a dump's (and the checkpoint's) names of layer 0's MLA


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    """Tiny DeepSeek-V3 (4 heads, q_lora 24, kv_lora 16, nope 8, rope 4, v 8; layer 1 MoE with a
    router bias): a previous checkpoint, the current one (every value + 0.5), their tp 2 dumps."""
    from tests.test_diagnose_stale import next_step

    root, spec = tmp_path_factory.mktemp("deepseek"), tiny_spec(DS)
    write_checkpoint(spec, root / "prev")
    next_step(root / "prev", root / "cur")
    for step in ("prev", "cur"):
        write_dumps(spec, root / step, root / f"{step}-dump", tp=2)
    return root


def edited(deepseek, out, edit) -> None:
    """The current step's dumps, each rank's tensors passed through ``edit(tp, tensors)``."""
    out.mkdir()
    for t in (0, 1):
        tensors = load_file(str(deepseek / "cur-dump" / f"tp{t}.safetensors"))
        edit(t, tensors)
        save_file(tensors, str(out / f"tp{t}.safetensors"))


def test_router_bias_never_sent(deepseek, tmp_path):
    """mlp.gate.e_score_correction_bias (a buffer a parameter walk skips) keeps vLLM's initial
    float32 zeros on both ranks: named there as holding none of the checkpoint's values."""
    bias = "model.layers.1.mlp.gate.e_score_correction_bias"  # layer 0 is dense: no router

    def zero(t, tensors):
        assert tensors[bias].shape == (4,)  # replicated: all 4 experts' biases on every rank
        tensors[bias] = torch.zeros(4, dtype=torch.float32)

    edited(deepseek, tmp_path / "dump", zero)
    report = diagnose(deepseek / "cur", tmp_path / "dump", 2)
    assert bad(report) == {
        "model." + bias: [
            f"tp {t}, elements 0-3: holds zeros (none of the checkpoint's values: as if never"
            " written), expected router bias"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 26, "wrong": 1}


def test_mla_fused_down_projection_half_stale(deepseek, tmp_path, capsys):
    """fused_qkv_a_proj = [q_a_proj (q_lora 24 rows); kv_a_proj_with_mqa (kv_lora 16 + rope 4)],
    replicated: its kv_a rows 24-43 from the previous step read stale on both ranks; q_a is fine."""
    fused = ATTN + "fused_qkv_a_proj.weight"
    q_rows, kv_rows = 24, 16 + 4
    old = {t: load_file(str(deepseek / "prev-dump" / f"tp{t}.safetensors")) for t in (0, 1)}

    def half_stale(t, tensors):
        assert tensors[fused].shape == (q_rows + kv_rows, 64)
        tensors[fused][q_rows:] = old[t][fused][q_rows:]

    edited(deepseek, tmp_path / "dump", half_stale)
    report = diagnose(deepseek / "cur", tmp_path / "dump", 2, previous=[deepseek / "prev"])
    stale = f"holds the previous checkpoint's values (stale): {deepseek / 'prev'}"
    assert bad(report) == {"model." + fused: [f"tp {t}, rows 24-43: {stale}" for t in (0, 1)]}
    assert report.flow_errors == [] and report.exit_code == 1
    # The command line says the same of the dump and of its fingerprints (exit 1).
    from syncviz.cli import main

    for dump in (tmp_path / "dump", tmp_path / "dump-prints-0"):
        args = ["--reference", str(deepseek / "cur"), "--dump", str(dump), "--dst-tp", "2"]
        assert main(["diagnose", *args, "--previous", str(deepseek / "prev")]) == 1
        out = capsys.readouterr().out
        assert out.count(stale) == 2 and f"tp 1, rows 24-43: {stale}" in out
    # Without --previous the same rows are wrong and unexplained; q_a's rows 0-23 still pass.
    bare = diagnose(deepseek / "cur", tmp_path / "dump", 2)
    assert bad(bare) == {
        "model." + fused: [
            f"tp {t}, rows 24-43: holds values not found in the reference, expected kv_a"
            for t in (0, 1)
        ]
    }


def test_mla_kv_b_heads_shifted_on_a_rank(deepseek, tmp_path):
    """kv_b_proj (4 heads of [k_nope 8; v 8] = 16 rows, 2 heads a rank) with tp 1 cut one head
    early: it holds heads 1-2 (checkpoint rows 16-47) where heads 2-3 are due; tp 0 is right."""
    kv_b = ATTN + "kv_b_proj.weight"
    glob = load_file(str(deepseek / "cur" / "model.safetensors"))[kv_b]
    assert glob.shape == (4 * (8 + 8), 16)

    def shift(t, tensors):
        if t == 1:
            assert torch.equal(tensors[kv_b], glob[32:64])
            tensors[kv_b] = glob[16:48].clone()

    edited(deepseek, tmp_path / "dump", shift)
    report = diagnose(deepseek / "cur", tmp_path / "dump", 2)
    assert bad(report) == {
        "model." + kv_b: ["tp 1, rows 0-31: holds kv_b heads 1-2, expected kv_b heads 2-3"]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 26, "wrong": 1}


def test_mla_q_b_heads_rope_before_nope(deepseek, tmp_path):
    """q_b_proj heads (nope 8 + rope 4 = 12 rows) written [rope; nope] on both ranks: rank t's
    rows 0-3 hold Q head 2t's rope, 4-11 its nope, 12-15 head 2t+1's rope, 16-23 its nope."""
    q_b = ATTN + "q_b_proj.weight"

    def rope_first(t, tensors):
        heads = tensors[q_b].view(2, 12, 24)
        tensors[q_b] = torch.cat([heads[:, 8:], heads[:, :8]], dim=1).reshape(24, 24)

    edited(deepseek, tmp_path / "dump", rope_first)
    report = diagnose(deepseek / "cur", tmp_path / "dump", 2)
    h = (0, 2)
    assert bad(report) == {
        "model." + q_b: [
            f"tp {t}, rows 0-23: holds rows 0-3: Q head {h[t]} rope; rows 4-11: Q head {h[t]}"
            f" nope; rows 12-15: Q head {h[t] + 1} rope; rows 16-23: Q head {h[t] + 1} nope,"
            f" expected Q heads {h[t]}-{h[t] + 1}"
            for t in (0, 1)
        ]
    }
    assert report.exit_code == 1 and report.counts() == {"ok": 26, "wrong": 1}
