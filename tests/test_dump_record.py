"""save_vllm_rank writes a rank's file; syncviz.record traces a user's own sync on real tensors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import syncviz
from syncviz.dump import save_vllm_rank
from syncviz.errors import SyncvizError
from syncviz.trace import SyncTrace


class TinyEngineModel(torch.nn.Module):
    """Stands in for a vLLM model: vLLM-style names, one tied pair."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(8, 4, dtype=torch.bfloat16)
        self.lm_head = torch.nn.Linear(4, 8, bias=False, dtype=torch.bfloat16)


def fake_vllm(monkeypatch, tp, pp, pp_size):
    pp_group = types.SimpleNamespace(rank_in_group=pp, world_size=pp_size)
    state = types.ModuleType("vllm.distributed.parallel_state")
    state.get_tensor_model_parallel_rank = lambda: tp
    state.get_pp_group = lambda: pp_group
    distributed = types.ModuleType("vllm.distributed")
    distributed.parallel_state = state
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", state)


def test_save_vllm_rank_reads_vllm_ranks(monkeypatch, tmp_path):
    """Inside a (stand-in) vLLM worker the file is named from the parallel state; bf16 kept."""
    fake_vllm(monkeypatch, tp=3, pp=1, pp_size=2)
    model = TinyEngineModel()
    path = save_vllm_rank(model, tmp_path)
    assert path.name == "pp1-tp3.safetensors"
    saved = load_file(str(path))
    assert set(saved) == {"model.embed_tokens.weight", "lm_head.weight"}
    assert saved["lm_head.weight"].dtype == torch.bfloat16
    assert torch.equal(saved["lm_head.weight"], model.lm_head.weight.detach())


def test_save_vllm_rank_without_vllm_needs_ranks(monkeypatch, tmp_path):
    """No vLLM and no ranks given: one clear error; with ranks given it works without vLLM."""
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(SyncvizError, match="pass tp_rank="):
        save_vllm_rank(TinyEngineModel(), tmp_path)
    assert save_vllm_rank(TinyEngineModel(), tmp_path, tp_rank=0).name == "tp0.safetensors"
    path = save_vllm_rank(TinyEngineModel(), tmp_path, tp_rank=1, pp_rank=1, pp_size=2)
    assert path.name == "pp1-tp1.safetensors"


def test_dump_module_does_not_import_vllm():
    """syncviz.dump needs no vLLM at import."""
    import importlib

    import syncviz.dump

    importlib.reload(syncviz.dump)
    assert "vllm" not in sys.modules or sys.modules["vllm"] is None


@pytest.fixture
def gloo(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_record_ops_and_collectives_never_values(tmp_path, gloo):
    """Ops on tracked tensors and torch.distributed collectives are recorded, values are not."""
    shard = torch.full((8, 4), 1234.5, dtype=torch.bfloat16)
    with (
        syncviz.record(rank=0, out_dir=tmp_path, metadata={"job": "t"}) as tr,
        tr.scope(param="model.layers.0.self_attn.o_proj.weight"),
    ):
        local = tr.track(shard, "trainer shard").t()[:, 0:4].contiguous()
        dist.broadcast(local, src=0)
    assert dist.broadcast.__name__ == "broadcast"  # the patch is gone again
    text = (tmp_path / "rank0.json").read_text()
    trace = SyncTrace.from_json(text)
    pt = trace.find(param="model.layers.0.self_attn.o_proj.weight")[0]
    assert [op.op for op in pt.ops] == ["t", "getitem", "contiguous"]
    (coll,) = pt.collectives
    assert (coll.kind, coll.src, coll.ranks, coll.bytes) == ("broadcast", 0, [0], 4 * 4 * 2)
    assert coll.tensors[0].shape == [4, 4] and pt.rank == 0
    assert "1234" not in text and trace.metadata == {"rank": 0, "job": "t"}


def test_record_writes_even_when_the_sync_raises(tmp_path):
    """A sync that raises still leaves its trace."""
    with pytest.raises(RuntimeError), syncviz.record(rank=2, out_dir=tmp_path) as tr:
        tr.track(torch.ones(4), "x").view(2, 2)
        raise RuntimeError("boom")
    trace = SyncTrace.load(tmp_path / "rank2.json")
    assert [op.op for pt in trace.params for op in pt.ops] == ["view"]


def test_diagnose_trace_adds_steps(tmp_path):
    """Traces recorded with vLLM names show up as the steps of the diagnosed parameter."""
    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
    from syncviz.diagram import layout_diagram

    spec = tiny_spec("llama-mcore")
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "dump", tp=2)
    for rank in (0, 1):
        with (
            syncviz.record(rank=rank, out_dir=tmp_path / "traces") as tr,
            tr.scope(param="model.layers.0.mlp.down_proj.weight"),
        ):
            fc2 = tr.track(torch.ones(16, 24), "fc2")
            fc2[:, rank * 12 : (rank + 1) * 12].contiguous()
    report = syncviz.diagnose(tmp_path / "ref", tmp_path / "dump", 2, trace=tmp_path / "traces")
    steps = layout_diagram(report.result, "model.model.layers.0.mlp.down_proj.weight").steps
    assert [(s.rank, s.op.op) for s in steps] == [(0, "getitem"), (1, "getitem")]
    assert steps[1].shapes == "[16, 24] -> [16, 12]"
    with pytest.raises(SyncvizError, match=r"holds no \.json traces"):
        syncviz.diagnose(tmp_path / "ref", tmp_path / "dump", 2, trace=tmp_path / "dump")


def test_import_syncviz_stays_light():
    """import syncviz loads neither safetensors nor the diagnose package."""
    import subprocess

    code = (
        "import sys, syncviz;"
        " print('safetensors' in sys.modules, 'syncviz.diagnose' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
