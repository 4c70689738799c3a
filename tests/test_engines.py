"""Engines as data: SGLang's names, DP attention, --engine, save_sglang_rank, diagnose."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from syncviz.check import check
from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
from syncviz.dump import notes_path, save_sglang_rank
from syncviz.engines import ENGINE, engine
from syncviz.errors import SyncvizError
from syncviz.oracle import model_layout
from syncviz.parallel import Parallel, validate
from syncviz.run.inprocess import run_sync

L0 = "model.model.layers.0."


def keys(family: str, dst: Parallel) -> list[str]:
    layout = model_layout(tiny_spec(family), Parallel(tp=1), dst, layers=[0], include_globals=True)
    return [p.key for p in layout.params]


def test_sglang_names_tiny_qwen3_moe():
    """Qwen3-MoE under SGLang: vLLM's dense names, experts directly under mlp.experts."""
    expected = [
        "model.model.embed_tokens.weight",
        L0 + "input_layernorm.weight",
        L0 + "self_attn.qkv_proj.weight",
        L0 + "self_attn.q_norm.weight",
        L0 + "self_attn.k_norm.weight",
        L0 + "self_attn.o_proj.weight",
        L0 + "post_attention_layernorm.weight",
        L0 + "mlp.gate.weight",
        L0 + "mlp.experts.w13_weight",
        L0 + "mlp.experts.w2_weight",
        "model.model.norm.weight",
        "model.lm_head.weight",
    ]
    assert keys("qwen3-moe", Parallel(tp=2, engine="sglang")) == expected


def test_sglang_names_tiny_llama():
    """Llama under SGLang: the same names as vLLM's (qkv_proj, gate_up_proj, ...)."""
    expected = [
        "model.model.embed_tokens.weight",
        L0 + "input_layernorm.weight",
        L0 + "self_attn.qkv_proj.weight",
        L0 + "self_attn.o_proj.weight",
        L0 + "post_attention_layernorm.weight",
        L0 + "mlp.gate_up_proj.weight",
        L0 + "mlp.down_proj.weight",
        "model.model.norm.weight",
        "model.lm_head.weight",
    ]
    assert keys("llama-mcore", Parallel(tp=2, engine="sglang")) == expected
    assert keys("llama-mcore", Parallel(tp=2)) == expected


def test_engine_spellings_differ_where_the_engines_do():
    """The MLA down-projection is respelled for SGLang only; vLLM's nested experts read back."""
    name = "model.model.layers.{i}.self_attn.fused_qkv_a_proj.weight"
    assert ENGINE["vllm"].dst_name(name) == name
    assert ENGINE["sglang"].dst_name(name).endswith("fused_qkv_a_proj_with_mqa.weight")
    nested = "model.layers.2.mlp.experts.routed_experts.w13_weight"
    assert ENGINE["vllm"].canonical_name(nested) == "model.layers.2.mlp.experts.w13_weight"
    assert ENGINE["sglang"].canonical_name(nested) == nested  # SGLang never nests them


def test_dp_attention_shards_attention_over_fewer_ranks():
    """tp 4, dp_attention 2 (attn_tp 2): rank r holds attention shard r % 2, the MLP over 4,
    the embedding whole (padded 100 -> 128 rows), as SGLang's DP attention does."""
    spec = tiny_spec("llama-mcore")  # 8 heads of 2, 2 K/V heads, ffn 24, vocab 100
    dst = Parallel(tp=4, engine="sglang", dp_attention=2)
    layout = model_layout(spec, Parallel(tp=1), dst, layers=[0], include_globals=True)
    qkv = layout.param(L0 + "self_attn.qkv_proj.weight")
    hd = 2
    # attn rank 0: Q heads 0-3, K head 0, V head 0; attn rank 1: Q heads 4-7, K 1, V 1.
    rows = [qkv.dst[r].index.ids()[::hd, 0].floor_divide(spec.hidden_size * hd) for r in range(4)]
    assert [r.tolist() for r in rows] == [
        [0, 1, 2, 3, 8, 10],
        [4, 5, 6, 7, 9, 11],
        [0, 1, 2, 3, 8, 10],
        [4, 5, 6, 7, 9, 11],
    ]
    o_proj = layout.param(L0 + "self_attn.o_proj.weight")
    assert [t.shape for t in o_proj.dst] == [(16, 8)] * 4
    gate_up = layout.param(L0 + "mlp.gate_up_proj.weight")
    assert [t.shape for t in gate_up.dst] == [(12, 16)] * 4
    embed = layout.param("model.model.embed_tokens.weight")
    for t in embed.dst:
        ids = t.index.ids()
        assert t.shape == (128, 16)
        assert torch.equal(ids[:100].reshape(-1), torch.arange(1600))
        assert bool((ids[100:] == -1).all())


def test_dp_attention_rules():
    """vLLM has no DP attention; on SGLang dp_attention must divide tp and leave attention
    ranks that split the heads."""
    spec = tiny_spec("llama-mcore")
    with pytest.raises(SyncvizError, match=r"dst dp_attention \(2\).*\(SGLang\); vLLM has none"):
        validate(spec, Parallel(tp=1), Parallel(tp=4, dp_attention=2))
    with pytest.raises(SyncvizError, match=r"dst dp_attention \(3\) must divide dst tp \(4\)"):
        validate(spec, Parallel(tp=1), Parallel(tp=4, engine="sglang", dp_attention=3))
    validate(spec, Parallel(tp=1), Parallel(tp=8, engine="sglang", dp_attention=2))
    with pytest.raises(SyncvizError, match=r"src engine \('sglang'\) is set on the trainer side"):
        validate(spec, Parallel(tp=1, engine="sglang"), Parallel(tp=2))


def test_unknown_engine_is_refused():
    """An unknown engine name: one error naming the value and the choices."""
    with pytest.raises(SyncvizError, match=r"engine \('tgi'\) is not known: use vllm or sglang"):
        engine("tgi")
    with pytest.raises(SyncvizError, match="use vllm or sglang"):
        Parallel(tp=2, engine="tgi")


@pytest.mark.parametrize("command", ["check", "layout", "render", "diagnose"])
def test_engine_flag_bad_value_exits_2(command, capsys):
    """--engine tgi on every command: exit 2, one line naming the flag, value and choices."""
    argv = [command, "--engine", "tgi"]
    argv += (
        ["--reference", "r", "--dump", "d", "--dst-tp", "1"]
        if command == "diagnose"
        else ["--preset", "llama3-8b"]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--engine" in err and "'tgi'" in err and "'vllm'" in err and "'sglang'" in err


def test_layout_names_the_engine(capsys):
    """`layout --engine sglang` says SGLang where it names the destination."""
    assert main(["layout", "--preset", "llama3-8b", "--dst-tp", "2", "--engine", "sglang"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first.endswith("-> SGLang tp=2 pp=1")
    assert "; SGLang stage 0 names it" in second


def test_check_report_names_the_engine():
    """A check to SGLang names its ranks "SGLang tp ..."; the default stays "vLLM tp ..."."""
    spec = tiny_spec("qwen3")
    for name, word in (("sglang", "SGLang"), ("vllm", "vLLM")):
        dst = Parallel(tp=2, engine=name)
        report = check(run_sync(spec, Parallel(tp=1), dst, synchronizer="corrected", layers=[0]))
        assert report.ok, report.text()
        roles = {str(r) for r in report.roles.values()}
        assert roles == {"trainer tp 0", f"{word} tp 0", f"{word} tp 1"}


class _FusedMoE(torch.nn.Module):
    """Stands in for SGLang's FusedMoE: counts its experts in ``num_local_experts``."""

    def __init__(self, experts: int, declared: int):
        super().__init__()
        self.num_local_experts = declared
        self.intermediate_size_per_partition = 2
        self.hidden_size = 4
        self.w13_weight = torch.nn.Parameter(torch.zeros(experts, 4, 4, dtype=torch.bfloat16))


class _SglangModel(torch.nn.Module):
    def __init__(self, experts: int = 2, declared: int = 2):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(8, 4, dtype=torch.bfloat16)
        layer = torch.nn.Module()
        layer.mlp = torch.nn.Module()
        layer.mlp.experts = _FusedMoE(experts, declared)
        self.model.layers = torch.nn.ModuleList([layer])


def fake_sglang(monkeypatch, tp, pp, pp_size):
    pp_group = types.SimpleNamespace(rank_in_group=pp, world_size=pp_size)
    state = types.ModuleType("sglang.srt.distributed.parallel_state")
    state.get_tensor_model_parallel_rank = lambda: tp
    state.get_pp_group = lambda: pp_group
    for name in ("sglang", "sglang.srt", "sglang.srt.distributed"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang.srt.distributed.parallel_state", state)


def test_save_sglang_rank_reads_sglang_ranks(monkeypatch, tmp_path):
    """Inside a (stand-in) SGLang worker: ranks from its parallel state, SGLang's names kept,
    an expert tensor unlike its layer's num_local_experts noted as changed."""
    fake_sglang(monkeypatch, tp=1, pp=0, pp_size=1)
    path = save_sglang_rank(_SglangModel(experts=3, declared=2), tmp_path)
    assert path.name == "tp1.safetensors"
    assert set(load_file(str(path))) == {
        "model.embed_tokens.weight",
        "model.layers.0.mlp.experts.w13_weight",
    }
    note = json.loads(notes_path(path).read_text())
    assert note["engine"] == "sglang"
    changed = note["changed"]["model.layers.0.mlp.experts.w13_weight"]
    assert (changed["why"], changed["expected_shape"]) == ("shape", [2, 4, 4])


def test_save_sglang_rank_without_sglang_needs_ranks(monkeypatch, tmp_path):
    """No SGLang and no ranks given: an error naming SGLang and save_sglang_rank."""
    monkeypatch.setitem(sys.modules, "sglang", None)
    with pytest.raises(SyncvizError, match=r"SGLang is not importable.*save_sglang_rank"):
        save_sglang_rank(_SglangModel(), tmp_path)
    assert save_sglang_rank(_SglangModel(), tmp_path, tp_rank=0).name == "tp0.safetensors"


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen3-moe")
    write_checkpoint(tiny_spec("qwen3-moe"), folder)
    return folder


def test_diagnose_sglang_dump_is_ok(moe_checkpoint, tmp_path):
    """A tiny Qwen3-MoE dump in SGLang's names, cut as SGLang holds it: every tensor OK."""
    dump = tmp_path / "dump"
    write_dumps(tiny_spec("qwen3-moe"), moe_checkpoint, dump, tp=2, engine="sglang")
    names = set(load_file(str(dump / "tp0.safetensors")))
    assert "model.layers.0.mlp.experts.w13_weight" in names
    assert not any("routed_experts" in n for n in names)
    report = diagnose(moe_checkpoint, dump, 2, engine="sglang")
    assert report.ok, report.text()
    assert set(report.counts()) == {"ok"}
    assert "-> dst tp2 (SGLang), synchronizer as dumped" in report.text()
    assert main(["diagnose", "--reference", str(moe_checkpoint), "--dump", str(dump),
                 "--dst-tp", "2", "--engine", "sglang", "--json"]) == 0  # fmt: skip


def test_diagnose_sglang_dump_finds_exchanged_experts(moe_checkpoint, tmp_path):
    """Two experts exchanged on one rank of an SGLang dump: that tensor, and only it, wrong."""
    dump = tmp_path / "dump"
    spec = tiny_spec("qwen3-moe")
    bugs = {"experts_w13": "swap_experts"}
    write_dumps(spec, moe_checkpoint, dump, tp=2, engine="sglang", bugs=bugs)
    report = diagnose(moe_checkpoint, dump, 2, engine="sglang")
    assert not report.ok
    assert [p.key for p in report.bad()] == [L0 + "mlp.experts.w13_weight"]
    text = " ".join(report.bad()[0].lines())
    assert "expert 0" in text and "expert 1" in text


@pytest.mark.parametrize("family", ["llama-mcore", "qwen2", "qwen3-moe"])
def test_corrected_sync_to_dp_attention(family):
    """SGLang with DP attention (tp 4, dp_attention 2): the corrected synchronizer gives every
    rank its attention shard r % 2 and the whole embedding, as the oracle says."""
    dst = Parallel(tp=4, engine="sglang", dp_attention=2)
    report = check(run_sync(tiny_spec(family), Parallel(tp=1), dst, synchronizer="corrected"))
    assert report.ok, report.text()
    assert report.dst == "tp4 dp-attention2"


def test_faithful_port_has_no_dp_attention():
    """Qwen2 at tp 2: the faithful port is right without DP attention; with dp_attention 2
    (attention whole on each rank) its QKV weight and bias are found wrong."""
    spec = tiny_spec("qwen2")

    def bad(dst: Parallel) -> set[str]:
        return {p.key for p in check(run_sync(spec, Parallel(tp=1), dst, layers=[0])).bad()}

    assert bad(Parallel(tp=2, engine="sglang")) == set()
    assert bad(Parallel(tp=2, engine="sglang", dp_attention=2)) == {
        L0 + "self_attn.qkv_proj.weight",
        L0 + "self_attn.qkv_proj.bias",
    }


def test_dp_attention_sync_needs_src_tp_1():
    """A sync to DP attention from src tp 2 is refused up front, saying why."""
    dst = Parallel(tp=4, engine="sglang", dp_attention=2)
    with pytest.raises(SyncvizError, match=r"dst dp_attention \(2\) needs src tp 1"):
        run_sync(tiny_spec("llama-mcore"), Parallel(tp=2), dst, synchronizer="corrected")


def test_pictures_name_the_engine(tmp_path, capsys):
    """A layout diagram to SGLang: its title, its panels and its text say SGLang, not vLLM."""
    from syncviz.diagram import layout_diagram
    from syncviz.diagram.text import layout_text

    spec = tiny_spec("qwen3")
    result = run_sync(spec, Parallel(tp=1), Parallel(tp=2, engine="sglang"), layers=[0])
    d = layout_diagram(result, L0 + "self_attn.o_proj.weight")
    assert d.title.endswith("trainer tp1 -> SGLang tp2")
    assert [p.title for p in d.dst] == ["SGLang tp 0 (rank 1)", "SGLang tp 1 (rank 2)"]
    text = layout_text(d)
    assert "\nSGLang\n" in text and "vLLM" not in text
    argv = [
        "render",
        "--preset",
        "qwen3-8b",
        "--scaled",
        "--dst-tp",
        "2",
        "--engine",
        "sglang",
        "--param",
        "o_proj",
        "--synchronizer",
        "corrected",
        "-o",
        str(tmp_path / "o.png"),
    ]
    assert main(argv) == 0  # fmt: skip
    assert "every SGLang rank holds what the oracle expects" in capsys.readouterr().out


def test_explorer_takes_an_engine():
    """Explorer(engine="sglang") runs its sync to SGLang ranks and names them so."""
    from syncviz.widgets.explorer import Explorer

    spec = tiny_spec("qwen3")
    ex = Explorer(spec=spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False, engine="sglang")
    assert {"SGLang tp 0", "SGLang tp 1"} <= {str(r) for r in ex.report.roles.values()}
    with pytest.raises(SyncvizError, match="use vllm or sglang"):
        Explorer(spec=spec, src=Parallel(tp=1), dst=Parallel(tp=2), scaled=False, engine="tgi")


def test_no_module_outside_the_engine_files_switches_on_an_engine():
    """An engine is a record: no string constant of the package outside syncviz/engines/ is
    "sglang"; "vllm" only as ChatLearn's backend word (sync/adapter.py) and a dump-naming
    style of the fixtures (diagnose/fixtures.py)."""
    import ast
    from pathlib import Path

    import syncviz

    package = Path(syncviz.__file__).parent
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        if path.parent == package / "engines":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in ENGINE
        }
        if names:
            found[str(path.relative_to(package))] = names
    assert found == {"sync/adapter.py": {"vllm"}, "diagnose/fixtures.py": {"vllm"}}


def test_experts_view_names_the_engine():
    """The experts view of a sync to SGLang heads its after side "SGLang ranks"."""
    from syncviz.diagram.experts import expert_diagram, expert_text

    dst = Parallel(tp=2, engine="sglang")
    result = run_sync(tiny_spec("qwen3-moe"), Parallel(tp=1), dst, synchronizer="corrected")
    text = expert_text(expert_diagram(result, L0 + "mlp.experts.w2_weight"))
    assert "after (SGLang ranks): rank 1 tp0 | rank 2 tp1" in text
    assert "vLLM" not in text
