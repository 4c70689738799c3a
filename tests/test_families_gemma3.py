"""Gemma-3 (text): hand-worked per-rank layouts, config reading (the multimodal wrapper
included), the corrected sync at real sizes, and diagnose on its four norms."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import (
    hf_config,
    tiny_spec,
    vllm_name,
    write_checkpoint,
    write_dumps,
)
from syncviz.errors import SyncvizError
from syncviz.oracle import model_layout
from syncviz.oracle.layout import layer_kinds
from syncviz.parallel import Parallel
from syncviz.presets import preset
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec

L0 = "model.model.layers.0."
M0 = "module.module.decoder.layers.0."

# hidden 6, 4 query heads, 2 K/V heads, head_dim 2 (not 6 / 4): Q rows 0-7, K 8-11, V 12-15;
# vocab 70 (vLLM pads it to 128); embeddings tied.
GEMMA = ModelSpec("g3", "gemma3", 1, 6, 4, 2, 4, 70, head_dim=2, tie_word_embeddings=True)

# (vLLM / Hugging Face name, Megatron-Core name after decoder.layers.0.) of each layer norm.
NORMS = [
    ("input_layernorm", "self_attention.linear_qkv.layer_norm_weight"),
    ("post_attention_layernorm", "self_attention.linear_proj.post_layernorm.weight"),
    ("pre_feedforward_layernorm", "mlp.linear_fc1.layer_norm_weight"),
    ("post_feedforward_layernorm", "mlp.linear_fc2.post_layernorm.weight"),
]

# google/gemma-3-12b-it's config.json: the text model sits in text_config, which leaves
# head_dim, vocab_size and tie_word_embeddings to Gemma3TextConfig's defaults.
WRAPPER_12B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
    "text_config": {
        "hidden_size": 3840, "intermediate_size": 15360, "model_type": "gemma3_text",
        "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
    },
    "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27, "patch_size": 14},
}  # fmt: skip


def _rows(index, width: int) -> list[int]:
    """The global rows a 2-D local tensor holds, in order (ids are row * width + col; -1 pads)."""
    ids = index.ids()[:, 0]
    return [-1 if i < 0 else i // width for i in ids.tolist()]


# ---------------------------------------------------------------------- oracle, hand-worked


def test_gemma3_layer_has_four_norms_and_q_k_norms():
    """A Gemma-3 layer: q/k norms after qkv, a norm on the attention output before the pre-MLP
    norm, and a norm on the MLP output after down."""
    assert layer_kinds(GEMMA) == [
        "input_norm", "qkv", "q_norm", "k_norm", "o_proj", "attn_out_norm",
        "post_attention_norm", "gate_up", "down", "ffn_out_norm",
    ]  # fmt: skip


@pytest.mark.parametrize(("vllm", "mcore"), NORMS)
def test_each_of_the_four_norms_is_hidden_and_whole_on_every_rank(vllm, mcore):
    """Each layer norm is [hidden] = [6], ids 0-5 on all four vLLM ranks and both trainer
    ranks, under its own vLLM name and its Megatron-Bridge name."""
    layout = model_layout(GEMMA, Parallel(tp=2), Parallel(tp=4), layers=[0])
    param = layout.param(f"{L0}{vllm}.weight")
    assert param.global_shape == (6,)
    assert [t.index.ids().tolist() for t in param.dst] == [list(range(6))] * 4
    assert [(s.tp, s.name, s.index.ids().tolist()) for s in param.src] == [
        (0, M0 + mcore, list(range(6))),
        (1, M0 + mcore, list(range(6))),
    ]


def test_gemma_post_attention_layernorm_is_the_attention_output_norm():
    """Gemma's post_attention_layernorm is the norm on the attention output (not Llama's
    pre-MLP norm, which is pre_feedforward_layernorm here): the words say so."""
    layout = model_layout(GEMMA, Parallel(tp=1), Parallel(tp=1), layers=[0])
    assert layout.param(f"{L0}post_attention_layernorm.weight").decode(3) == (
        "attention-output norm element 3"
    )
    assert layout.param(f"{L0}pre_feedforward_layernorm.weight").decode(0) == (
        "post-attention norm element 0"
    )
    assert layout.param(f"{L0}post_feedforward_layernorm.weight").decode(5) == (
        "MLP-output norm element 5"
    )


@pytest.mark.parametrize("kind", ["q_norm", "k_norm"])
def test_q_and_k_norms_are_head_dim_and_replicated(kind):
    """q_norm/k_norm are [head_dim] = [2], whole on all four vLLM ranks (2 K/V heads, so
    K/V are replicated at tp 4) and named q_layernorm/k_layernorm on both trainer ranks."""
    layout = model_layout(GEMMA, Parallel(tp=2), Parallel(tp=4), layers=[0])
    param = layout.param(f"{L0}self_attn.{kind}.weight")
    assert param.global_shape == (2,)
    assert [t.index.ids().tolist() for t in param.dst] == [[0, 1]] * 4
    trainer = kind.replace("_norm", "_layernorm")
    assert [s.name for s in param.src] == [f"{M0}self_attention.{trainer}.weight"] * 2


def test_gqa_qkv_rows_per_rank_with_explicit_head_dim():
    """QKV is [(4 + 2 + 2) * 2, 6] = [16, 6]; vLLM tp 2 takes Q heads 0-1, K 0, V 0 and
    Q 2-3, K 1, V 1; tp 4 takes one Q head each and shares each K/V head by two ranks."""
    layout = model_layout(GEMMA, Parallel(tp=2), Parallel(tp=4), layers=[0])
    qkv = layout.param(f"{L0}self_attn.qkv_proj.weight")
    assert qkv.global_shape == (16, 6)
    assert [_rows(t.index, 6) for t in qkv.dst] == [
        [0, 1, 8, 9, 12, 13],
        [2, 3, 8, 9, 12, 13],
        [4, 5, 10, 11, 14, 15],
        [6, 7, 10, 11, 14, 15],
    ]
    assert [_rows(s.index, 6) for s in qkv.src] == [
        [0, 1, 2, 3, 8, 9, 12, 13],
        [4, 5, 6, 7, 10, 11, 14, 15],
    ]


def test_tied_embedding_rows_with_padding_and_no_lm_head():
    """Tied: no lm_head at all; the embedding's 70 rows pad to 128, vLLM tp 2 holds rows
    0-63 and rows 64-69 followed by 58 padding rows."""
    layout = model_layout(GEMMA, Parallel(tp=1), Parallel(tp=2))
    assert [p.key for p in layout if "lm_head" in p.key] == []
    embed = layout.param("model.model.embed_tokens.weight")
    assert embed.global_shape == (70, 6)
    assert [_rows(t.index, 6) for t in embed.dst] == [
        list(range(64)),
        list(range(64, 70)) + [-1] * 58,
    ]


# ---------------------------------------------------------------------- reading config.json


def test_published_wrapper_config_reads_as_the_text_model_with_hf_defaults():
    """gemma-3-12b-it's wrapper config: its text_config is read, head_dim 256 (the default,
    not hidden/heads = 240), vocab 262208 and tied embeddings from Gemma3TextConfig."""
    spec = ModelSpec.from_hf_config(WRAPPER_12B, name="gemma3-12b")
    assert spec.family == "gemma3"
    assert (spec.num_layers, spec.hidden_size, spec.ffn_hidden_size) == (48, 3840, 15360)
    assert (spec.num_attention_heads, spec.num_query_groups, spec.head_dim) == (16, 8, 256)
    assert (spec.vocab_size, spec.tie_word_embeddings, spec.qkv_bias) == (262208, True, False)
    assert spec == preset("gemma3-12b")
    assert spec.source.endswith("text_config of the config dict (Gemma3ForConditionalGeneration)")


def test_wrapper_found_by_model_type_alone():
    """No architectures list: model_type gemma3 names the wrapper, and its text_config is read."""
    config = {k: v for k, v in WRAPPER_12B.items() if k != "architectures"}
    assert ModelSpec.from_hf_config(config).head_dim == 256


def test_text_config_keys_override_the_defaults():
    """A text config that gives head_dim, vocab and untied embeddings keeps its own values."""
    config = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96,
        "vocab_size": 500, "tie_word_embeddings": False,
    }  # fmt: skip
    spec = ModelSpec.from_hf_config(config)
    assert (spec.head_dim, spec.vocab_size, spec.tie_word_embeddings) == (32, 500, False)


def test_wrapper_without_text_config_is_refused():
    """A Gemma3ForConditionalGeneration config with no text_config object names the fix."""
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "text_config": None}
    with pytest.raises(SyncvizError, match="without a text_config object"):
        ModelSpec.from_hf_config(config)


def test_gemma3_config_relabelled_as_llama_is_refused():
    """A gemma3_text config relabelled LlamaForCausalLM would drop four kinds: refused."""
    config = {**WRAPPER_12B["text_config"], "architectures": ["LlamaForCausalLM"],
              "vocab_size": 262208}  # fmt: skip
    with pytest.raises(SyncvizError, match=r"gemma3_text.*layout differs"):
        ModelSpec.from_hf_config(config)


def test_fixture_config_reads_back_as_the_tiny_spec():
    """The tiny spec's written config.json reads back as the spec (head_dim 8 != 16 / 4)."""
    spec = tiny_spec("gemma3")
    assert spec.head_dim != spec.hidden_size // spec.num_attention_heads
    assert ModelSpec.from_hf_config(hf_config(spec), name=spec.name) == spec


# ---------------------------------------------------------------------- the synchronizers


@pytest.mark.parametrize(("s", "d"), [(1, 2), (2, 4), (4, 8)])
def test_check_corrected_passes_at_real_sizes(tmp_path, capsys, s, d):
    """`check --config <gemma-3-12b-it> --synchronizer corrected` exits 0 at real sizes
    (layers 0-1: ten tensors each)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(WRAPPER_12B), encoding="utf-8")
    args = ["check", "--config", str(config), "--src-tp", str(s), "--dst-tp", str(d)]
    assert main([*args, "--synchronizer", "corrected", "--layers", "0-1"]) == 0
    assert "OK (20 ok)" in capsys.readouterr().out


def test_corrected_sync_is_exact_on_the_hand_worked_spec():
    """Every vLLM rank of the hand-worked spec gets exactly the oracle's ids, each once."""
    src, dst = Parallel(tp=2), Parallel(tp=4)
    result = run_sync(GEMMA, src, dst, synchronizer="corrected", trace=False)
    assert result.findings == [], [f.message for f in result.findings]
    for param in result.plan.layout:
        for t in param.dst:
            world = result.plan.world_rank("dst", tp=t.tp)
            expected = t.index.ids().to(torch.float64)
            assert torch.equal(result.local_ids(world, param.key), expected), param.key
            assert result.writes(world)[param.key] == 1


def test_faithful_port_has_no_class_for_gemma3():
    """The faithful port refuses Gemma-3 as the original did: unsupported model."""
    spec = preset("gemma3-12b").scaled(num_layers=1)
    result = run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0], trace=False)
    first = result.findings[0]
    assert first.message.startswith("RuntimeError: Unsupported model Gemma3ForCausalLM, ")


# ---------------------------------------------------------------------- diagnose


def test_diagnose_finds_gemma_norms_written_under_llama_meanings(tmp_path):
    """A sync that maps Gemma's post_attention_layernorm by Llama's meaning writes the
    pre-MLP norm there and vice versa: diagnose names both, on both ranks."""
    spec = tiny_spec("gemma3")
    ref, dump = tmp_path / "ref", tmp_path / "dump"
    write_checkpoint(spec, ref)
    write_dumps(spec, ref, dump, tp=2)
    assert diagnose(ref, dump, 2).ok
    a, b = L0 + "post_attention_layernorm.weight", L0 + "pre_feedforward_layernorm.weight"
    for tp in (0, 1):
        path = dump / f"tp{tp}.safetensors"
        tensors = load_file(str(path))
        x, y = vllm_name(a), vllm_name(b)
        tensors[x], tensors[y] = tensors[y], tensors[x]
        save_file(tensors, str(path))
    found = {p.key: [line.strip() for line in p.lines()] for p in diagnose(ref, dump, 2).bad()}
    assert sorted(found) == [a, b]
    assert found[a][0].endswith(f"holds {b}'s post-attention norm, expected attention-output norm")
    assert found[b][0].endswith(f"holds {a}'s attention-output norm, expected post-attention norm")
    assert [line.split(",")[0] for line in found[a]] == ["tp 0", "tp 1"]
