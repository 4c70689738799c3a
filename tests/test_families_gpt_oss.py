"""gpt-oss: each placement rule worked by hand on small sizes, the corrected synchronizer over
several vLLM tp and trainer ep, and planted mistakes the checker must catch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from syncviz import ModelSpec, Parallel, SyncvizError
from syncviz.check import check
from syncviz.diagnose.fixtures import tiny_spec
from syncviz.oracle import model_layout
from syncviz.parallel import validate
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync
from syncviz.sync.corrected import CorrectedMegatronVllmMCoreSync

FAMILY = "gpt-oss"
L0 = "model.model.layers.0."
SRC = "module.module.decoder.layers.0."


def _spec(heads=4, groups=2, head_dim=2, hidden=4, experts=2, inter=4) -> ModelSpec:
    """A small gpt-oss spec: ids are easy to work out by hand."""
    return ModelSpec("hand", FAMILY, 1, hidden, heads, groups, inter, 64, head_dim=head_dim,
                     qkv_bias=True, router_bias=True, num_experts=experts,
                     moe_ffn_hidden_size=inter)  # fmt: skip


def _dst_ids(spec, kind_key, d):
    layout = model_layout(spec, Parallel(tp=1), Parallel(tp=d), layers=[0])
    return [t.index.ids().tolist() for t in layout.param(L0 + kind_key).dst]


# ---------------------------------------------------------------------- the rules by hand


def test_expert_w13_rows_are_interleaved_on_vllm():
    """1 expert, I 4, H 2, d 2: global rows are [g0..g3; u0..u3]; rank 1 holds g2 u2 g3 u3."""
    spec = _spec(experts=1, inter=4, hidden=2)
    ranks = _dst_ids(spec, "mlp.experts.w13_weight", 2)
    # Global row k holds ids 2k, 2k+1; gate c is row c, up c is row 4 + c.
    rows = {0: [0, 4, 1, 5], 1: [2, 6, 3, 7]}
    for r, want in rows.items():
        assert ranks[r] == [[[2 * k, 2 * k + 1] for k in want]]


def test_expert_w13_bias_is_interleaved_like_its_rows():
    """2 experts, I 4, d 2: rank 0 holds each expert's gate/up cols 0-1 as g0 u0 g1 u1."""
    spec = _spec(experts=2, inter=4)
    ranks = _dst_ids(spec, "mlp.experts.w13_bias", 2)
    # Global [2, 8]: expert e col c has id 8e + c; up c is col 4 + c.
    assert ranks[0] == [[0, 4, 1, 5], [8, 12, 9, 13]]
    assert ranks[1] == [[2, 6, 3, 7], [10, 14, 11, 15]]
    layout = model_layout(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])
    words = layout.param(L0 + "mlp.experts.w13_bias").describe(
        layout.param(L0 + "mlp.experts.w13_bias").dst[1].index
    )
    assert words == (
        "row 0: expert 0 gate cols 2-3 and expert 0 up cols 2-3, interleaved;"
        " row 1: expert 1 gate cols 2-3 and expert 1 up cols 2-3, interleaved"
    )


def test_trainer_expert_fc1_is_de_interleaved():
    """The trainer's linear_fc1.bias{j} at tp 1 of 2 is [gate cols 2-3; up cols 2-3]."""
    layout = model_layout(_spec(), Parallel(tp=2), Parallel(tp=2), layers=[0])
    shards = layout.param(L0 + "mlp.experts.w13_bias").src_for(1)
    assert [s.name for s in shards] == [SRC + f"mlp.experts.linear_fc1.bias{j}" for j in (0, 1)]
    assert [s.index.ids().tolist() for s in shards] == [[2, 3, 6, 7], [10, 11, 14, 15]]


def test_w2_bias_is_held_on_tp_rank_0_only():
    """2 experts, H 4, d 4: tp 0 holds all 8 ids; tp 1-3 hold zeros (padding, id -1)."""
    spec = _spec(heads=4, groups=4, hidden=4, experts=2)
    ranks = _dst_ids(spec, "mlp.experts.w2_bias", 4)
    assert ranks[0] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ranks[1:] == [[[-1] * 4] * 2] * 3
    layout = model_layout(spec, Parallel(tp=2), Parallel(tp=4), layers=[0])
    param = layout.param(L0 + "mlp.experts.w2_bias")
    # The trainer holds each expert's whole fc2 bias on every tp rank.
    assert [s.index.ids().tolist() for s in param.src_for(1)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert param.describe(param.dst[0].index) == "rows 0-1: experts 0-1 down bias"
    assert param.describe(param.dst[1].index) == "rows 0-1: zeros"


def test_destination_ep_holds_whole_experts_interleaved_with_their_biases():
    """4 experts, I 4, H 2, vLLM tp 2 ep 2 (linear): rank 1 holds experts 2-3 whole, each
    w13 row order g0 u0 g1 u1 g2 u2 g3 u3 as the checkpoint keeps it, its w13 bias alike and
    its w2 bias too (vLLM 0.32's gpt-oss loader narrows every expert tensor to the EP rank's
    experts and zeroes w2_bias only without EP)."""
    spec = _spec(experts=4, inter=4, hidden=2)
    dst = Parallel(tp=2, ep=2)
    layout = model_layout(spec, Parallel(tp=1), dst, layers=[0])

    def ids(key):
        return [t.index.ids().tolist() for t in layout.param(L0 + key).dst]

    order = [0, 4, 1, 5, 2, 6, 3, 7]  # interleaved rows of one expert, by global row
    # w13 [4, 8, 2]: expert e row k holds ids 16e + 2k, 16e + 2k + 1.
    assert ids("mlp.experts.w13_weight")[1] == [
        [[16 * e + 2 * k, 16 * e + 2 * k + 1] for k in order] for e in (2, 3)
    ]
    # w13 bias [4, 8]: expert e col c has id 8e + c.
    assert ids("mlp.experts.w13_bias")[1] == [[8 * e + c for c in order] for e in (2, 3)]
    # w2 bias [4, 2]: every EP rank its own experts' bias, no zeros.
    assert ids("mlp.experts.w2_bias") == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    robin = model_layout(spec, Parallel(tp=1), Parallel(tp=2, ep=2, expert_placement="round_robin"),
                         layers=[0])  # fmt: skip
    assert [t.index.ids().tolist() for t in robin.param(L0 + "mlp.experts.w2_bias").dst] == [
        [[0, 1], [4, 5]],
        [[2, 3], [6, 7]],
    ]


@pytest.mark.parametrize("placement", ["linear", "round_robin"])
def test_corrected_sync_fills_destination_ep_ranks_exactly(placement):
    """The tiny spec from trainer tp 1 (ep 1 and 2) to vLLM tp 2 ep 2: every tensor OK, biases
    and interleaved experts included."""
    for src in (Parallel(tp=1), Parallel(tp=1, ep=2)):
        dst = Parallel(tp=2, ep=2, expert_placement=placement)
        result = run_sync(tiny_spec(FAMILY), src, dst, synchronizer="corrected", trace=False)
        report = check(result)
        assert report.ok, report.text()


def test_sinks_are_split_by_query_heads():
    """8 heads: trainer tp 2 holds 4 sinks each, vLLM tp 4 two each, as Q heads r*h/d.."""
    spec = _spec(heads=8, groups=4)
    layout = model_layout(spec, Parallel(tp=2), Parallel(tp=4), layers=[0])
    sinks = layout.param(L0 + "attn.sinks")
    assert [s.index.ids().tolist() for s in sinks.src] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sinks.src[1].name == SRC + "self_attention.core_attention.softmax_offset"
    assert [t.index.ids().tolist() for t in sinks.dst] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sinks.describe(sinks.dst[2].index) == "elements 0-1: Q heads 4-5 sink"


def test_qkv_bias_splits_like_its_rows_and_o_proj_bias_is_whole():
    """4 heads, 2 K/V heads, head size 2, d 2: rank 1's bias is Q heads 2-3, K head 1, V head 1."""
    spec = _spec(heads=4, groups=2, head_dim=2)
    ranks = _dst_ids(spec, "attn.qkv_proj.bias", 2)
    # [Q0..Q3 | K0 K1 | V0 V1], 2 ids a head: Q ids 0-7, K 8-11, V 12-15.
    assert ranks[1] == [4, 5, 6, 7, 10, 11, 14, 15]
    assert _dst_ids(spec, "attn.o_proj.bias", 2) == [[0, 1, 2, 3]] * 2
    assert _dst_ids(spec, "mlp.router.bias", 2) == [[0, 1]] * 2


def test_a_vllm_tp_that_does_not_divide_the_kv_heads_is_refused():
    """2 K/V heads, d 4: gpt-oss never replicates K/V heads; the fix lists 1 and 2."""
    spec = _spec(heads=4, groups=2)
    with pytest.raises(SyncvizError, match=r"^dst tp \(4\) must divide num_query_groups \(2\)"):
        validate(spec, Parallel(tp=1), Parallel(tp=4))
    with pytest.raises(SyncvizError) as info:
        model_layout(spec, Parallel(tp=1), Parallel(tp=4))
    assert info.value.fix == "use 1 or 2"


def test_cli_refuses_a_dst_tp_above_the_kv_heads_in_one_line():
    """gpt-oss-20b at --dst-tp 16 (8 K/V heads): exit 2, one line naming dst tp and 1-8."""
    out = subprocess.run(
        [sys.executable, "-m", "syncviz", "layout", "--preset", "gpt-oss-20b", "--dst-tp", "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("syncviz: error: dst tp (16) must divide")
    assert lines[0].endswith("use 1, 2, 4 or 8")


def test_layer_kinds_and_names():
    """A layer lists the biases and sinks after their weights, under vLLM's attn. names."""
    layout = model_layout(tiny_spec(FAMILY), Parallel(tp=1), Parallel(tp=1), layers=[0])
    assert [p.key.removeprefix(L0) for p in layout] == [
        "input_layernorm.weight", "attn.qkv_proj.weight", "attn.qkv_proj.bias",
        "attn.o_proj.weight", "attn.o_proj.bias", "attn.sinks",
        "post_attention_layernorm.weight", "mlp.router.weight", "mlp.router.bias",
        "mlp.experts.w13_weight", "mlp.experts.w13_bias", "mlp.experts.w2_weight",
        "mlp.experts.w2_bias",
    ]  # fmt: skip
    full = model_layout(tiny_spec(FAMILY), Parallel(tp=1), Parallel(tp=1))
    assert full.params[0].key == "model.model.embedding.weight"


def test_published_config_reads_with_its_notes():
    """Sliding-window layers do not change the layout; the MXFP4 quantization is noted."""
    config = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "num_hidden_layers": 24, "hidden_size": 2880, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880,
        "num_local_experts": 32, "vocab_size": 201088, "attention_bias": True,
        "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 12,
        "quantization_config": {"quant_method": "mxfp4"}, "tie_word_embeddings": False,
    }  # fmt: skip
    spec = ModelSpec.from_hf_config(config, name="gpt-oss-20b")
    assert spec == preset("gpt-oss-20b")
    assert len(spec.notes) == 1 and "quantization_config" in spec.notes[0]


# ---------------------------------------------------------------------- the corrected sync


@pytest.mark.parametrize(
    ("s", "d", "ep", "values"),
    [(1, 1, 1, "ids"), (1, 2, 1, "ids"), (1, 4, 1, "random"), (2, 4, 1, "ids"),
     (2, 2, 2, "ids"), (1, 4, 2, "random"), (4, 4, 1, "ids")],
)  # fmt: skip
def test_corrected_sync_fills_every_rank_exactly(s, d, ep, values):
    """The tiny spec (2 layers, 4 experts) at several vLLM tp and trainer ep: every tensor OK."""
    result = run_sync(tiny_spec(FAMILY), Parallel(tp=s, ep=ep), Parallel(tp=d),
                      synchronizer="corrected", trace=False, values=values)  # fmt: skip
    report = check(result)
    assert report.ok, report.text()
    assert report.counts() == {"ok": 29}


def test_faithful_port_has_no_class_for_the_family():
    """The original's synchronizer refuses GptOssForCausalLM, as it does Mixtral."""
    result = run_sync(tiny_spec(FAMILY), Parallel(tp=1), Parallel(tp=1), trace=False)
    messages = {f.message for f in result.findings if f.stage == "flow"}
    assert any("Unsupported model GptOssForCausalLM" in m for m in messages), messages


# ---------------------------------------------------------------------- planted mistakes


class _DeInterleaved(CorrectedMegatronVllmMCoreSync):
    """Sends each expert's fc1 as the trainer keeps it: [gate; up], not interleaved."""

    def _interleaved_experts(self) -> bool:
        return False


class _W2BiasEverywhere(CorrectedMegatronVllmMCoreSync):
    """Gives every vLLM rank the fc2 bias (it would be added d times after the all-reduce)."""

    def _rank0_slots(self, bias: torch.Tensor) -> torch.Tensor:
        per = super()._rank0_slots(bias).shape[1]
        return bias[:, None].expand(-1, per, *bias.shape[1:]).contiguous()


class _SinksFromHeadZero(CorrectedMegatronVllmMCoreSync):
    """Sends every vLLM rank the first heads' sinks: the vector is never sharded by rank."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        if name.endswith("softmax_offset") and tp_division > 1:
            first = param_data[: param_data.numel() // tp_division]
            return first.repeat(tp_division)
        return super().regroup_params_to_sync(name, param_data, tp_division, regroup_routed_experts)


def _wrong(sync_cls, d=2):
    result = run_sync(tiny_spec(FAMILY), Parallel(tp=1), Parallel(tp=d), synchronizer=sync_cls,
                      trace=False, layers=[0])  # fmt: skip
    report = check(result)
    return {p.key.removeprefix(L0): p for p in report.bad()}


def test_checker_catches_de_interleaved_experts():
    """w13 weight and bias sent [gate; up]: both wrong on every rank, and only they."""
    bad = _wrong(_DeInterleaved)
    assert set(bad) == {"mlp.experts.w13_weight", "mlp.experts.w13_bias"}
    text = "\n".join(bad["mlp.experts.w13_weight"].lines())
    assert (
        "holds experts 0-3 each (rows 0-63: gate rows 0-63, rows 64-127: up rows 0-63),"
        " expected experts 0-3 each (rows 0-127: gate rows 0-63 and up rows 0-63, interleaved)"
    ) in text


def test_checker_catches_w2_bias_on_every_rank():
    """The fc2 bias on tp 1 too: w2_bias wrong on tp 1 only, where zeros are due."""
    bad = _wrong(_W2BiasEverywhere)
    assert set(bad) == {"mlp.experts.w2_bias"}
    tensors = bad["mlp.experts.w2_bias"].tensors
    assert [t.tp for t in tensors if t.status != "ok"] == [1]
    assert "expected zeros" in "\n".join(bad["mlp.experts.w2_bias"].lines())


def test_checker_catches_unsharded_sinks():
    """Every rank gets Q heads 0-3's sinks: tp 1 holds heads 0-3 where 4-7 are due."""
    bad = _wrong(_SinksFromHeadZero)
    assert set(bad) == {"attn.sinks"}
    text = "\n".join(bad["attn.sinks"].lines())
    assert "holds Q heads 0-3 sink, expected Q heads 4-7 sink" in text


# ---------------------------------------------------------------------- checkpoints, diagnose


def test_fused_checkpoint_experts_read_as_the_oracles_global_tensors(tmp_path):
    """gate_up_proj [E, H, 2I] with columns g0 u0 g1 u1 ... reads as w13 [E, 2I, H] [gate; up];
    down_proj [E, I, H] as w2 [E, H, I]; the biases alike, by hand on the tiny checkpoint."""
    from safetensors.torch import load_file

    from syncviz.diagnose.fixtures import write_checkpoint
    from syncviz.diagnose.reference import Reference

    spec = tiny_spec(FAMILY)
    names = write_checkpoint(spec, tmp_path)
    assert "model.layers.0.mlp.experts.gate_up_proj" in names
    held = load_file(str(tmp_path / "model.safetensors"))
    gate_up = held["model.layers.1.mlp.experts.gate_up_proj"]
    e, hidden, inter = spec.num_experts, spec.hidden_size, spec.moe_ffn_hidden_size
    assert tuple(gate_up.shape) == (e, hidden, 2 * inter)
    ref = Reference(tmp_path)
    w13 = ref.global_tensor("experts_w13", 1)
    for c in (0, 5, inter - 1):  # gate c is column 2c, up c column 2c + 1
        assert torch.equal(w13[2, c], gate_up[2, :, 2 * c])
        assert torch.equal(w13[2, inter + c], gate_up[2, :, 2 * c + 1])
    bias = held["model.layers.1.mlp.experts.gate_up_proj_bias"]
    w13_bias = ref.global_tensor("experts_w13_bias", 1)
    assert torch.equal(w13_bias[3, inter + 7], bias[3, 15])
    down = held["model.layers.1.mlp.experts.down_proj"]
    assert torch.equal(ref.global_tensor("experts_w2", 1)[1, 9, 4], down[1, 4, 9])


@pytest.mark.parametrize(("tp", "naming"), [(1, "vllm"), (2, "routed"), (4, "vllm")])
def test_diagnose_reads_dumps_cut_by_the_rules(tmp_path, tp, naming):
    """Dumps of the tiny checkpoint cut as vLLM holds them (both expert spellings) are OK."""
    from syncviz.diagnose import diagnose
    from syncviz.diagnose.fixtures import write_checkpoint, write_dumps

    spec = tiny_spec(FAMILY)
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "dump", tp=tp, naming=naming)
    report = diagnose(tmp_path / "ref", tmp_path / "dump", tp)
    assert report.ok, report.text()
    assert report.counts() == {"ok": 29}


def test_diagnose_names_a_w2_bias_held_on_every_rank(tmp_path):
    """A dump whose tp 1 holds the whole w2_bias where zeros are due: that tensor is wrong."""
    from safetensors.torch import load_file, save_file

    from syncviz.diagnose import diagnose
    from syncviz.diagnose.fixtures import write_checkpoint, write_dumps

    spec = tiny_spec(FAMILY)
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "dump", tp=2)
    name = "model.layers.0.mlp.experts.w2_bias"
    ranks = [load_file(str(tmp_path / "dump" / f"tp{r}.safetensors")) for r in (0, 1)]
    assert bool((ranks[1][name] == 0).all()) and not bool((ranks[0][name] == 0).any())
    ranks[1][name] = ranks[0][name].clone()
    save_file(ranks[1], str(tmp_path / "dump" / "tp1.safetensors"))
    report = diagnose(tmp_path / "ref", tmp_path / "dump", 2)
    bad = {p.key: p for p in report.bad()}
    assert set(bad) == {L0 + "mlp.experts.w2_bias"}
    assert "tp 1, rows 0-3: holds tp 0's experts 0-3 down bias, expected zeros" in "\n".join(
        bad[L0 + "mlp.experts.w2_bias"].lines()
    )


# ---------------------------------------------------------------------- the commands


def test_layout_and_render_commands_show_the_family(tmp_path, capsys):
    """`layout` words the sinks and the interleaved w13 of the tiny config; `render` draws
    its w13 after a corrected sync, every rank as expected (both exit 0)."""
    import json

    from syncviz.cli import main
    from syncviz.diagnose.fixtures import hf_config

    config = tmp_path / "config.json"
    config.write_text(json.dumps(hf_config(tiny_spec(FAMILY))), encoding="utf-8")
    sizes = ["--config", str(config), "--src-tp", "2", "--dst-tp", "4"]
    assert main(["layout", *sizes, "--layers", "0"]) == 0
    text = capsys.readouterr().out
    assert "elements 0-1: Q heads 2-3 sink" in text
    # I 128 over 4 ranks: tp 1 holds gate/up rows 32-63 of each expert, interleaved.
    assert "experts 0-3 each (rows 0-63: gate rows 32-63 and up rows 32-63, interleaved)" in text
    assert "rows 0-3: zeros" in text
    picture = tmp_path / "w13.png"
    args = [
        "render",
        *sizes,
        "--synchronizer",
        "corrected",
        "--param",
        L0 + "mlp.experts.w13_weight",
    ]
    assert main([*args, "-o", str(picture)]) == 0
    assert picture.stat().st_size > 0
    assert "every vLLM rank holds what the oracle expects" in capsys.readouterr().out
