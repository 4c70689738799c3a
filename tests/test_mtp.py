"""The multi-token-prediction (MTP) layer, laid out on request: hand-worked shards of eh_proj
and of the MTP head, names on both engines, the refusals, the CLI."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from syncviz.check import check
from syncviz.diagnose.fixtures import tiny_spec
from syncviz.errors import SyncvizError
from syncviz.oracle import conventions, model_layout
from syncviz.oracle.dest import dest_maps
from syncviz.oracle.hf_names import HF_NAMES
from syncviz.oracle.layout import layer_kinds
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec
from tests.test_families_glm import GLM_CONFIG

# hidden 8, 4 heads, 2 K/V heads, head_dim 2; layer 0 dense, layer 1 MoE, vocab 60 (vLLM
# pads it to 64); one MTP layer at index 2.
GLM = ModelSpec("glm", "glm4-moe", 2, 8, 4, 2, 4, 60, head_dim=2, qkv_bias=True,
                num_experts=2, moe_ffn_hidden_size=4, shared_expert_ffn_hidden_size=4,
                first_k_dense_replace=1, router_bias=True, use_qk_norm=True,
                mtp_layers=1)  # fmt: skip
M2 = "model.model.layers.2."


def _ids(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.arange(torch.Size(shape).numel()).view(shape)


def test_mtp_layer_kinds_wrap_a_moe_decoder_layer():
    """Layer 2 (the MTP layer): enorm, hnorm, eh_proj, then layer 1's kinds, then its head."""
    kinds = layer_kinds(GLM, 2)
    assert kinds[:3] == ["mtp_enorm", "mtp_hnorm", "mtp_eh_proj"]
    assert kinds[-2:] == ["mtp_norm", "mtp_head"]
    assert kinds[3:-2] == layer_kinds(GLM, 1)


def test_eh_proj_rows_split_on_trainer_whole_on_vllm_at_d2():
    """eh_proj [8, 16]: trainer tp r holds output rows 4r-4r+3 (full[4r:4r+4]); vLLM every
    rank the whole tensor."""
    layout = model_layout(GLM, Parallel(tp=2), Parallel(tp=2), layers=[2])
    eh = layout.param(M2 + "eh_proj.weight")
    full = _ids((8, 16))
    assert eh.global_shape == (8, 16)
    for r in range(2):
        assert torch.equal(eh.src[r].index.ids(), full[4 * r : 4 * r + 4])
        assert eh.src[r].name == "module.module.mtp.layers.0.eh_proj.weight"
        assert torch.equal(eh.dst[r].index.ids(), full)
    assert eh.describe(eh.src[1].index).startswith("rows 0-3: embedding rows 4-7, hidden rows 4-7")


def test_mtp_head_vocab_rows_with_padding_at_d2():
    """shared_head.head [60, 8] (the checkpoint's; vLLM's draft then shares lm_head) padded to
    64: rank 0 rows 0-31, rank 1 rows 32-59 and four padding rows (id -1); the trainer's
    source is its output layer; no engine's layout lists it."""
    maps = dest_maps("mtp_head", GLM, 2)
    full = _ids((60, 8))
    assert torch.equal(maps[0].ids(), full[0:32])
    rank1 = maps[1].ids()
    assert torch.equal(rank1[:28], full[32:60])
    assert bool((rank1[28:] == -1).all())
    assert conventions("glm4-moe").mtp_src_names["mtp_head"] == (
        "module.module.output_layer.weight",
    )
    for engine in ("vllm", "sglang"):
        dst = Parallel(tp=2, engine=engine)
        assert "mtp_head" not in {p.kind for p in model_layout(GLM, Parallel(1), dst, [2])}


def test_mtp_block_names_on_both_sides_and_stage():
    """The decoder block: mtp.layers.0.transformer_layer.* on the last trainer stage,
    layers.2.mtp_block.* on vLLM; the checkpoint names it model.layers.2.* (HF_NAMES)."""
    layout = model_layout(GLM, Parallel(tp=1, pp=2), Parallel(tp=1), layers=[2])
    qkv = layout.param(M2 + "mtp_block.self_attn.qkv_proj.weight")
    assert qkv.src[0].name == (
        "module.module.mtp.layers.0.transformer_layer.self_attention.linear_qkv.weight"
    )
    assert qkv.src[0].pp == 1 and layout.src_stage(2) == 1
    w13 = layout.param(M2 + "mtp_block.mlp.experts.w13_weight")
    assert w13.src[0].name.endswith("mtp.layers.0.transformer_layer.mlp.experts.linear_fc1.weight0")
    assert HF_NAMES["glm4-moe"]["mtp_eh_proj"] == ("model.layers.{i}.eh_proj.weight",)
    assert HF_NAMES["deepseek-v3"]["mtp_head"] == ("model.layers.{i}.shared_head.head.weight",)


def test_sglang_names_nextn_and_uses_the_target_head():
    """SGLang: model.model.decoder.*, model.model.eh_proj/enorm/hnorm/shared_head.norm; one
    name for each of vLLM's."""
    dst = Parallel(tp=2, engine="sglang")
    keys = model_layout(GLM, Parallel(tp=2), dst, layers=[2]).keys()
    vllm = model_layout(GLM, Parallel(tp=2), Parallel(tp=2), layers=[2]).keys()
    assert "model.model.eh_proj.weight" in keys and "model.model.shared_head.norm.weight" in keys
    assert "model.model.decoder.self_attn.qkv_proj.weight" in keys
    assert not any("shared_head.head" in k or "mtp_block" in k for k in keys)
    assert len(keys) == len(vllm)


def test_deepseek_preset_mtp_names_round_trip_and_count():
    """deepseek-v3 with mtp: 62 layers; every MTP name is unique and maps back to its kind."""
    spec = preset("deepseek-v3", mtp=True).scaled(num_layers=2)
    assert (spec.mtp_layers, spec.all_layers) == (1, 3)
    for engine in ("vllm", "sglang"):
        layout = model_layout(spec, Parallel(tp=2), Parallel(tp=4, engine=engine), layers=[2])
        keys = layout.keys()
        assert len(keys) == len(set(keys))
        assert {layout.param(k).kind for k in keys} == set(layer_kinds(spec, 2)) - {"mtp_head"}
    fused = model_layout(spec, Parallel(tp=2), Parallel(tp=4, engine="sglang"), layers=[2])
    assert "model.model.decoder.self_attn.fused_qkv_a_proj_with_mqa.weight" in set(fused.keys())


def test_config_mtp_reads_the_count_and_notes_otherwise():
    """A config with num_nextn_predict_layers 1: mtp=True lays it out (no note); without, a
    note and no MTP layer; 0 layers or a family without MTP is refused."""
    spec = ModelSpec.from_hf_config(GLM_CONFIG, mtp=True)
    assert spec.mtp_layers == 1 and not spec.notes
    plain = ModelSpec.from_hf_config(GLM_CONFIG)
    assert plain.mtp_layers == 0 and any("--mtp" in n for n in plain.notes)
    with pytest.raises(SyncvizError, match="num_nextn_predict_layers 0"):
        ModelSpec.from_hf_config({**GLM_CONFIG, "num_nextn_predict_layers": 0}, mtp=True)
    with pytest.raises(SyncvizError, match="no multi-token-prediction layer"):
        preset("qwen3-8b", mtp=True)
    with pytest.raises(SyncvizError, match="mtp_layers"):
        ModelSpec("m", "qwen2", 2, 64, 4, 2, 96, 100, mtp_layers=1)


def test_eh_proj_needs_hidden_divisible_by_trainer_tp():
    """hidden 6 with one MTP layer: trainer tp 4 cannot split eh_proj's rows; refused."""
    spec = ModelSpec("m", "glm4-moe", 1, 6, 4, 4, 4, 64, head_dim=2, num_experts=2,
                     moe_ffn_hidden_size=4, mtp_layers=1)  # fmt: skip
    with pytest.raises(SyncvizError, match="eh_proj"):
        model_layout(spec, Parallel(tp=4), Parallel(tp=4), layers=[1])
    model_layout(spec, Parallel(tp=2), Parallel(tp=4), layers=[1])


def test_sync_to_sglang_refuses_mtp_in_one_line():
    """The synchronizers carry the MTP layer with vLLM's names only: SGLang is refused."""
    from syncviz.run.plan import build_plan

    with pytest.raises(SyncvizError, match="vLLM's draft-model names only"):
        build_plan(GLM, Parallel(tp=1), Parallel(tp=2, engine="sglang"))


def test_cli_layout_mtp_and_refusals(capsys):
    """`layout --mtp --layers 2` names eh_proj's trainer rows; kimi-k2 (0 layers) exits 2."""
    from syncviz.cli import main

    rc = main(["layout", "--preset", "glm-4.5-air", "--mtp", "--scaled", "--src-tp", "2",
               "--dst-tp", "4", "--layers", "46"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "holds it as its multi-token-prediction layer 0" in out
    assert "module.module.mtp.layers.0.eh_proj.weight" in out
    assert "model.model.layers.46.mtp_block.mlp.experts.w13_weight" in out
    assert main(["layout", "--preset", "kimi-k2", "--mtp"]) == 2
    assert "num_nextn_predict_layers 0" in capsys.readouterr().err
    assert main(["layout", "--preset", "glm-4.5-air", "--layers", "46"]) == 2


# The corrected synchronizer carries the MTP layer to vLLM.

SYNC_SIZES = [
    (Parallel(tp=1), Parallel(tp=2)),
    (Parallel(tp=2), Parallel(tp=4)),
    (Parallel(tp=2, pp=2, ep=2), Parallel(tp=4)),
]


def _mtp_tiny(family: str) -> ModelSpec:
    return replace(tiny_spec(family), mtp_layers=1)


@pytest.mark.parametrize("family", ["deepseek-v3", "glm4-moe"])
@pytest.mark.parametrize(("src", "dst"), SYNC_SIZES, ids=["s1d2", "s2d4", "s2pp2ep2d4"])
def test_corrected_sync_carries_the_mtp_layer(family, src, dst):
    """The whole model with its MTP layer (MLA or GQA, experts, eh_proj gathered over the
    trainer's tp) lands on every vLLM rank exactly as the oracle says."""
    report = check(run_sync(_mtp_tiny(family), src, dst, synchronizer="corrected"))
    assert report.ok, str(report)
    assert any(p.key.endswith("mtp_block.mlp.experts.w13_weight") for p in report.params)
    assert any(p.key.endswith(".eh_proj.weight") for p in report.params)


def test_planted_eh_proj_not_gathered_is_found():
    """A synchronizer that sends each trainer rank's own eh_proj rows (no gather over tp) is
    wrong on eh_proj, and only there."""
    from syncviz.sync.corrected import CorrectedMegatronVllmMCoreSync
    from syncviz.sync.mtp import with_mtp

    class NoGather(with_mtp(CorrectedMegatronVllmMCoreSync)):
        def allgather_routed_experts(self, name, params_to_sync, group_name, tp_rank):
            if name.endswith("eh_proj.weight"):
                return params_to_sync, False
            return super().allgather_routed_experts(name, params_to_sync, group_name, tp_rank)

    spec = _mtp_tiny("glm4-moe")
    report = check(run_sync(spec, Parallel(tp=2), Parallel(tp=2), synchronizer=NoGather))
    assert not report.ok
    assert [p.key for p in report.bad()] == ["model.model.layers.2.eh_proj.weight"]


def test_cli_check_mtp_corrected_exits_0_on_glm_presets(capsys):
    """`check --mtp --scaled --synchronizer corrected` on GLM-4.5-Air's and GLM-4.5's MTP
    layer at two sizes exits 0; the faithful port names the family it has no class for."""
    from syncviz.cli import main

    for args in (
        ["--preset", "glm-4.5-air", "--layers", "46", "--src-tp", "2", "--dst-tp", "4"],
        ["--preset", "glm-4.5", "--layers", "92", "--src-tp", "2", "--src-ep", "2",
         "--dst-tp", "8"],
    ):  # fmt: skip
        rc = main(["check", *args, "--mtp", "--scaled", "--synchronizer", "corrected"])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "OK" in out.splitlines()[0]
