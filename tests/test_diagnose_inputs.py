"""Diagnose: the inputs people really have (names, shards, dtypes, pipelines) and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz import Parallel
from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
from syncviz.errors import SyncvizError
from tests.diagnose_support import dumps_from_corrected


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    write_checkpoint(tiny_spec("llama-mcore"), folder, shards=3)
    return folder


def hand_dump(ref, out, d=4):
    """Cut tiny Llama (8 heads, 2 K/V heads, head_dim 2, I 24, vocab 100) for d=4 by hand."""
    w = {}
    for name in ref.glob("model-*.safetensors"):
        w.update(load_file(str(name)))
    hd, q_per, inter = 2, 8 // d, 24 // d
    for r in range(d):
        g = r // (d // 2)  # one K/V head, replicated on d/2 ranks
        t = {}
        for i in range(2):
            p = f"model.layers.{i}."
            t[p + "self_attn.qkv_proj.weight"] = torch.cat(
                [
                    w[p + "self_attn.q_proj.weight"][r * q_per * hd : (r + 1) * q_per * hd],
                    w[p + "self_attn.k_proj.weight"][g * hd : (g + 1) * hd],
                    w[p + "self_attn.v_proj.weight"][g * hd : (g + 1) * hd],
                ]
            )
            t[p + "self_attn.o_proj.weight"] = w[p + "self_attn.o_proj.weight"][
                :, r * q_per * hd : (r + 1) * q_per * hd
            ].contiguous()
            t[p + "mlp.gate_up_proj.weight"] = torch.cat(
                [
                    w[p + "mlp.gate_proj.weight"][r * inter : (r + 1) * inter],
                    w[p + "mlp.up_proj.weight"][r * inter : (r + 1) * inter],
                ]
            )
            t[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"][
                :, r * inter : (r + 1) * inter
            ].contiguous()
            for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
                t[p + n] = w[p + n].clone()
        for name, hf in (
            ("model.embed_tokens.weight", "model.embed_tokens.weight"),
            ("lm_head.weight", "lm_head.weight"),
        ):
            padded = torch.zeros(128, 16, dtype=torch.bfloat16)
            padded[:100] = w[hf]
            t[name] = padded[r * 32 : (r + 1) * 32].clone()
        t["model.norm.weight"] = w["model.norm.weight"].clone()
        save_file(t, str(out / f"tp{r}.safetensors"))


def test_hand_cut_dump_agrees(llama, tmp_path):
    """Slices cut by hand from the vLLM rules (no syncviz layout code) diagnose OK."""
    hand_dump(llama, tmp_path)
    report = diagnose(llama, tmp_path, 4)
    assert report.ok, report.text()
    assert report.counts() == {"ok": 15}


def test_hand_planted_kv_head(llama, tmp_path):
    """tp 3 given K head 0 instead of its replicated K head 1: exactly those rows are named."""
    hand_dump(llama, tmp_path)
    t = load_file(str(tmp_path / "tp3.safetensors"))
    k0 = load_file(str(tmp_path / "tp0.safetensors"))["model.layers.1.self_attn.qkv_proj.weight"]
    t["model.layers.1.self_attn.qkv_proj.weight"][4:6] = k0[4:6]
    save_file(t, str(tmp_path / "tp3.safetensors"))
    report = diagnose(llama, tmp_path, 4)
    assert [p.key for p in report.bad()] == ["model.model.layers.1.self_attn.qkv_proj.weight"]
    assert report.bad()[0].lines() == ["  tp 3, rows 4-5: holds tp 0's K head 0, expected K head 1"]


@pytest.mark.parametrize(
    ("family", "src", "dst"),
    [("llama-mcore", 2, 4), ("qwen2", 1, 2), ("qwen2-moe", 1, 2), ("mixtral", 2, 2)],
)
def test_corrected_synchronizer_output_is_ok(tmp_path, family, src, dst):
    """What the corrected synchronizer delivers, read back from a bf16 checkpoint, is OK."""
    spec = tiny_spec(family)
    write_checkpoint(spec, tmp_path / "ref")
    files = dumps_from_corrected(
        spec, tmp_path / "ref", tmp_path / "dump", Parallel(tp=src), Parallel(tp=dst)
    )
    report = diagnose(tmp_path / "ref", tmp_path / "dump", dst)
    assert report.ok, report.text()
    assert len(report.params) == len(files[0])


@pytest.mark.parametrize("naming", ["chatlearn", "routed"])
def test_name_variants(tmp_path, naming):
    """ChatLearn's model. wrapper and current vLLM's routed_experts nesting are accepted."""
    spec = tiny_spec("qwen2-moe")
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "dump", tp=2, naming=naming)
    names = load_file(str(tmp_path / "dump" / "tp0.safetensors")).keys()
    marker = "model.model." if naming == "chatlearn" else ".experts.routed_experts.w13_weight"
    assert any(marker in n for n in names)
    assert diagnose(tmp_path / "ref", tmp_path / "dump", 2).ok


def test_unplaced_tensor_is_named(llama, tmp_path):
    """A tensor that is no parameter of the model is named, rank and file included."""
    write_dumps(tiny_spec("llama-mcore"), llama, tmp_path, tp=2)
    t = load_file(str(tmp_path / "tp1.safetensors"))
    t["model.layers.0.self_attn.rotary.weight"] = torch.zeros(2)
    save_file(t, str(tmp_path / "tp1.safetensors"))
    report = diagnose(llama, tmp_path, 2)
    assert report.flow_errors == [
        "tp 1 (tp1.safetensors): model.layers.0.self_attn.rotary.weight is no parameter of"
        " llama-tiny"
    ]
    assert not report.ok and set(report.counts()) == {"ok"}


@pytest.mark.parametrize(
    ("ckpt", "dump"), [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)]
)
def test_comparison_in_the_dump_dtype(tmp_path, ckpt, dump):
    """The reference is cast to the dump's dtype, as vLLM's loader casts it."""
    spec = tiny_spec("llama-mcore")
    write_checkpoint(spec, tmp_path / "ref", dtype=ckpt)
    write_dumps(spec, tmp_path / "ref", tmp_path / "d", tp=2)
    for f in (tmp_path / "d").iterdir():
        save_file({k: v.to(dump) for k, v in load_file(str(f)).items()}, str(f))
    assert diagnose(tmp_path / "ref", tmp_path / "d", 2).ok


def test_pipeline_stages(llama, tmp_path):
    """dst pp 2: files pp{p}-tp{t}; ranks named "pp P tp T"."""
    spec = tiny_spec("llama-mcore")
    write_dumps(spec, llama, tmp_path, tp=2, pp=2, bugs={"lm_head": "tp0"})
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "pp0-tp0.safetensors"
    report = diagnose(llama, tmp_path, 2, 2)
    assert [line.strip() for line in report.bad()[0].lines()] == [
        "pp 1 tp 1, rows 0-63: holds pp 1 tp 0's vocab rows 0-63, expected"
        " rows 0-35: vocab rows 64-99; rows 36-63: padding"
    ]


def test_layers_limit(llama, tmp_path):
    """--layers judges only those layers (and no globals)."""
    write_dumps(tiny_spec("llama-mcore"), llama, tmp_path, tp=2, bugs={"lm_head": "tp0"})
    report = diagnose(llama, tmp_path, 2, layers=[1])
    assert report.ok and len(report.params) == 6


def test_cli_exit_codes(llama, tmp_path, capsys):
    """0 on a correct dump, 1 on a wrong one (JSON too), 2 on bad input with one line."""
    good, broken = tmp_path / "good", tmp_path / "bad"
    spec = tiny_spec("llama-mcore")
    write_dumps(spec, llama, good, tp=4)
    write_dumps(spec, llama, broken, tp=4, bugs={"qkv": "shard0"})
    base = ["diagnose", "--reference", str(llama)]
    assert main([*base, "--dump", str(good), "--dst-tp", "4"]) == 0
    assert "OK (15 ok)" in capsys.readouterr().out
    assert main([*base, "--dump", str(broken), "--dst-tp", "4", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [p["key"] for p in data["params"] if p["status"] != "ok"] == [
        "model.model.layers.0.self_attn.qkv_proj.weight"
    ]
    cases = {
        ("--dump", str(good), "--dst-tp", "2"): "fit no valid dst tp 2",
        ("--dump", str(good), "--dst-tp", "8"): "tp4.safetensors is missing",
        ("--dump", str(tmp_path / "nowhere"), "--dst-tp", "4"): "is not a folder",
        ("--dump", str(good), "--dst-tp", "3"): "dst tp (3)",
    }
    for extra, words in cases.items():
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (
        main(["diagnose", "--reference", str(tmp_path), "--dump", str(good), "--dst-tp", "4"]) == 2
    )
    assert "config" in capsys.readouterr().err


def test_shapes_of_another_tp_are_told(llama, tmp_path):
    """A dump of tp 4 diagnosed as tp 2 says which tp it fits."""
    write_dumps(tiny_spec("llama-mcore"), llama, tmp_path, tp=4)
    (tmp_path / "tp2.safetensors").unlink()
    (tmp_path / "tp3.safetensors").unlink()
    with pytest.raises(SyncvizError, match="looks like dst tp 4: pass --dst-tp 4"):
        diagnose(llama, tmp_path, 2)


def test_checkpoint_missing_a_tensor_is_bad_input(tmp_path):
    """A reference lacking a tensor of its config is bad input, named, before any dump is read."""
    spec = tiny_spec("llama-mcore")
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "d", tp=2)
    t = load_file(str(tmp_path / "ref" / "model.safetensors"))
    del t["model.layers.1.mlp.down_proj.weight"]
    save_file(t, str(tmp_path / "ref" / "model.safetensors"))
    with pytest.raises(
        SyncvizError,
        match=r"^config\.json calls for model\.layers\.1\.mlp\.down_proj\.weight of shape"
        r" \[16, 24\], which the checkpoint lacks: the checkpoint and its config disagree",
    ):
        diagnose(tmp_path / "ref", tmp_path / "d", 2)


def test_extra_rank_file_is_named(llama, tmp_path):
    """A rank file beyond the given sizes (a stale dump of another tp) is named."""
    write_dumps(tiny_spec("llama-mcore"), llama, tmp_path, tp=2)
    (tmp_path / "tp2.safetensors").write_bytes((tmp_path / "tp0.safetensors").read_bytes())
    report = diagnose(llama, tmp_path, 2)
    assert report.flow_errors == [
        "tp2.safetensors is no rank of dst tp 2: a dump of other sizes mixed in?"
    ]


def test_diagnosis_renders_with_matplotlib(llama, tmp_path):
    """The diagnosed layout view draws to a PNG like a simulated check's."""
    from syncviz.diagram import layout_diagram, render

    write_dumps(tiny_spec("llama-mcore"), llama, tmp_path, tp=2, bugs={"o_proj": "rows"})
    report = diagnose(llama, tmp_path, 2)
    key = report.bad()[0].key
    fig = render(layout_diagram(report.result, key, report))
    fig.save(tmp_path / "o_proj.png")
    assert (tmp_path / "o_proj.png").stat().st_size > 10_000


def test_tensor_of_another_shape_is_wrong(llama, tmp_path):
    """One tensor of the wrong shape (the rest fit): a finding on that rank, with both shapes."""
    write_dumps(tiny_spec("llama-mcore"), llama, tmp_path, tp=2)
    t = load_file(str(tmp_path / "tp1.safetensors"))
    t["model.layers.1.mlp.down_proj.weight"] = t["model.layers.1.mlp.down_proj.weight"][:, :6]
    save_file({k: v.contiguous() for k, v in t.items()}, str(tmp_path / "tp1.safetensors"))
    report = diagnose(llama, tmp_path, 2)
    assert [(p.key, p.lines()) for p in report.bad()] == [
        ("model.model.layers.1.mlp.down_proj.weight", ["  tp 1: shape [16, 6], expected [16, 12]"])
    ]
