"""The synchronizers and the tracer on a CUDA device give exactly what they give on the CPU.

The regroup only moves data (slices, concats, views, copies), so a CUDA run must
match the CPU run bit for bit, errors included: the faithful port raises the same
exception on the same parameter on both devices. Inputs come from the oracle
(each trainer rank's shards of layer 0 of a scaled preset) as provenance ids in
float64 and as random bfloat16 weights. The trainer ranks run as threads
(``LocalWorld``) so routed experts are all-gathered as in a real sync.

Skipped, with the reason, where ``torch.cuda.is_available()`` is False.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
import torch

from syncviz import ModelSpec, Parallel
from syncviz.oracle import ModelLayout, model_layout
from syncviz.presets import PRESETS
from syncviz.run.local_world import LocalWorld
from syncviz.sync import get_synchronizer
from syncviz.sync.adapter import StageActor, models_for
from syncviz.sync.base import BaseSync
from syncviz.sync.corrected import corrected_synchronizer
from syncviz.trace import Tracer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device: torch.cuda.is_available() is False",
    ),
]

# (preset, src tp, dst tp): dense GQA (Megatron-Core and legacy), QKV bias, MoE with
# shared experts, MHA legacy llama, mixtral experts.
CASES = [
    ("llama3-70b", 2, 4),
    ("llama3-70b", 1, 8),
    ("llama2-7b", 2, 4),
    ("qwen2-7b", 1, 2),
    ("qwen2-57b-a14b", 2, 4),
    ("mixtral-8x7b", 1, 2),
]
CASE_IDS = [f"{name}-s{s}-d{d}" for name, s, d in CASES]
DTYPES = [torch.float64, torch.bfloat16]

# One rank's outcome per (destination name, trainer rank): the regrouped tensor on
# the CPU, or the text of what was raised.
Outcome = dict[tuple[str, int], "torch.Tensor | str"]
MakeSync = Callable[[ModelSpec, Parallel, Parallel], BaseSync]


def _faithful(spec: ModelSpec, src: Parallel, dst: Parallel) -> BaseSync:
    try:
        return get_synchronizer(*models_for(spec, src, dst))
    except RuntimeError as exc:  # ChatLearn's selector had no Mixtral class
        pytest.skip(f"the faithful port has no synchronizer for {spec.name}: {exc}")


def _corrected(spec: ModelSpec, src: Parallel, dst: Parallel) -> BaseSync:
    return corrected_synchronizer(spec, src, dst)


SYNCS = {"faithful": _faithful, "corrected": _corrected}


def _setting(name: str, s: int, d: int) -> tuple[ModelSpec, Parallel, Parallel, ModelLayout]:
    src, dst = Parallel(tp=s), Parallel(tp=d)
    spec = PRESETS[name].scaled(src, dst, num_layers=1)
    return spec, src, dst, model_layout(spec, src, dst, layers=[0])


def _inputs(layout: ModelLayout, rank: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Trainer rank ``rank``'s shards: ids for float64, seeded random values otherwise."""
    shards = [sh for p in layout for sh in p.src if sh.tp == rank and sh.ep in (None, 0)]
    out = {}
    for i, shard in enumerate(shards):
        if dtype == torch.float64:
            out[shard.name] = shard.index.ids().to(dtype)
        else:
            gen = torch.Generator().manual_seed(1000 * rank + i)
            out[shard.name] = torch.randn(shard.shape, generator=gen).to(dtype)
    return out


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_rank(
    coll: Any,
    make_sync: MakeSync,
    setting: tuple[ModelSpec, Parallel, Parallel, ModelLayout],
    device: str,
    dtype: torch.dtype,
    tracer: Tracer | None,
) -> Outcome:
    """Map names, transform, gather routed experts and regroup every shard of one rank."""
    spec, src, dst, layout = setting
    rank = coll.rank()
    tensors = {k: v.to(device) for k, v in _inputs(layout, rank, dtype).items()}
    names = list(tensors)
    sync = make_sync(spec, src, dst)
    sync.collective = coll
    src_names, dst_names = sync.map_name_from_src_to_dst(
        StageActor(0, names), StageActor(0), names, list(names)
    )
    prepared = sync.transform_parameters([(n, tensors[n]) for n in src_names])
    outcome: Outcome = {}
    for (name, tensor), dst_name in zip(prepared, dst_names, strict=True):
        try:
            with tracer.scope(param=dst_name, rank=rank) if tracer else nullcontext():
                tensor, gathered = sync.allgather_routed_experts(name, tensor, None, rank)
                want = layout.param(dst_name).dst[0].index.numel
                division = 1 if tensor.numel() == want else dst.tp // src.tp
                if tracer is not None:
                    tensor = tracer.track(tensor, "src")
                result = sync.regroup_params_to_sync(name, tensor, division, gathered)
            assert result.device.type == torch.device(device).type, f"{dst_name} left {device}"
            outcome[(dst_name, rank)] = result.cpu()
        except Exception as exc:  # SyncvizError, and the faithful port's own errors
            outcome[(dst_name, rank)] = _error_text(exc)
    return outcome


def _run_all(
    make_sync: MakeSync,
    setting: tuple[ModelSpec, Parallel, Parallel, ModelLayout],
    device: str,
    dtype: torch.dtype,
    traced: bool = False,
) -> tuple[Outcome, list[str]]:
    """Every trainer rank's outcomes, and (when ``traced``) each rank's trace summary."""
    src = setting[1]
    tracers = [Tracer() if traced else None for _ in range(src.tp)]

    def rank(coll: Any) -> Outcome:
        return _run_rank(coll, make_sync, setting, device, dtype, tracers[coll.rank()])

    outcome: Outcome = {}
    for result in LocalWorld(src.tp).run(rank):
        if result.error is not None:
            raise result.error
        outcome.update(result.value)
    summaries = [t.trace.summary() for t in tracers if t is not None]
    return outcome, summaries


def _assert_same(cpu: Outcome, gpu: Outcome) -> None:
    assert cpu.keys() == gpu.keys()
    for key, want in cpu.items():
        got = gpu[key]
        if isinstance(want, str) or isinstance(got, str):
            assert got == want, f"{key}: cpu {want!r:.200} / cuda {got!r:.200}"
            continue
        assert got.dtype == want.dtype and got.shape == want.shape, key
        # Compare bits, not values: any moved element must arrive unchanged.
        bits = torch.int16 if want.dtype == torch.bfloat16 else torch.int64
        assert torch.equal(got.view(bits), want.view(bits)), f"{key} differs"


@pytest.mark.parametrize("dtype", DTYPES, ids=["ids-float64", "random-bf16"])
@pytest.mark.parametrize("which", list(SYNCS))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_regroup_on_cuda_matches_cpu(case, which, dtype):
    """Every regrouped tensor (or error) of layer 0 is the same on CUDA as on the CPU."""
    setting = _setting(*case)
    SYNCS[which](*setting[:3])  # skips here, not in a rank thread, when there is none
    cpu, _ = _run_all(SYNCS[which], setting, "cpu", dtype)
    gpu, _ = _run_all(SYNCS[which], setting, "cuda", dtype)
    assert any(not isinstance(v, str) for v in cpu.values()), "nothing was regrouped"
    _assert_same(cpu, gpu)


@pytest.mark.parametrize("which", list(SYNCS))
@pytest.mark.parametrize("case", CASES[:1] + CASES[4:5], ids=[CASE_IDS[0], CASE_IDS[4]])
def test_tracer_records_the_same_ops_on_cuda(case, which):
    """The tracer's op sequence (ops, shapes, dtypes, arguments) is the same on both devices."""
    setting = _setting(*case)
    SYNCS[which](*setting[:3])
    cpu, cpu_traces = _run_all(SYNCS[which], setting, "cpu", torch.float64, traced=True)
    gpu, gpu_traces = _run_all(SYNCS[which], setting, "cuda", torch.float64, traced=True)
    assert sum(text.count("\n") for text in cpu_traces) > len(cpu_traces), "no ops recorded"
    for rank, (want, got) in enumerate(zip(cpu_traces, gpu_traces, strict=True)):
        assert got == want, f"trainer rank {rank}: traces differ"
    _assert_same(cpu, gpu)


def test_ids_survive_a_round_trip_through_the_device():
    """Sanity check of the harness: float64 ids come back from CUDA unchanged."""
    ids = torch.arange(2**40, 2**40 + 4096, dtype=torch.float64)
    assert torch.equal(ids.to("cuda").cpu(), ids)


FP_DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int8, torch.int64]
FP_DTYPES += [d for d in (getattr(torch, "float8_e4m3fn", None),) if d is not None]


@pytest.mark.parametrize("dtype", FP_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (257, 1000), (5, 5000), (2, 3, 4096), (4144,)])
def test_fingerprints_on_cuda_equal_cpu(shape, dtype):
    """Segment fingerprints (the fused kernel and plain torch on CUDA) equal the CPU's, bit
    for bit, for ragged row counts and widths; one flipped bit on the GPU is seen there."""
    from syncviz.fingerprint import fingerprint, fingerprint_torch

    gen = torch.Generator().manual_seed(len(shape) * 1000 + shape[-1])
    n = torch.Size(shape).numel()
    raw = torch.randint(0, 256, (n * torch.empty(0, dtype=dtype).element_size(),), generator=gen)
    t = raw.to(torch.uint8).view(dtype).view(shape)
    run = 16 if len(shape) == 1 else None
    cpu = fingerprint(t, run)
    gpu = t.to("cuda")
    assert torch.equal(fingerprint(gpu, run).cpu(), cpu)
    assert torch.equal(fingerprint_torch(gpu, run).cpu(), cpu)
    flipped = gpu.view(torch.uint8).clone()
    flipped.view(-1)[-1] ^= 0x40
    changed = fingerprint(flipped.view(dtype).view(shape), run).cpu() != cpu
    assert changed.tolist() == [False] * (cpu.numel() - 1) + [True]


def test_fingerprints_of_many_tensors_on_cuda_equal_cpu():
    """One launch per row width for 70 tensors of mixed widths and word sizes (the rank's
    case) gives each tensor's CPU fingerprints."""
    from syncviz.fingerprint import fingerprint, fingerprint_many

    gen = torch.Generator().manual_seed(3)
    shapes = [(int(r), int(c)) for r, c in torch.randint(1, 300, (70, 2), generator=gen)]
    shapes = [(r, c if i % 3 else 512) for i, (r, c) in enumerate(shapes)]
    dtypes = [torch.bfloat16, torch.float32, torch.int8]
    tensors = [
        torch.randint(-100, 100, s, generator=gen).to(dtypes[i % 3]) for i, s in enumerate(shapes)
    ]
    runs = [None] * 69 + [1]
    got = fingerprint_many([t.to("cuda") for t in tensors], runs)
    for t, run, g in zip(tensors, runs, got, strict=True):
        assert torch.equal(g.cpu(), fingerprint(t, run))


def test_fingerprint_files_written_from_cuda_equal_cpu(tmp_path):
    """A rank's fingerprint file written from CUDA tensors (rows fingerprinted, then composed
    into groups on the device) holds the same entries and fingerprints as one written
    from the same tensors on the CPU; shapes of a rank of a small model at real widths."""
    from syncviz.fingerprint_dump import read_fingerprints, save_fingerprints

    gen = torch.Generator().manual_seed(11)
    shapes = {
        "qkv_proj.weight": (1280, 1024),
        "o_proj.weight": (1024, 1024),
        "gate_up_proj.weight": (7168, 1024),
        "down_proj.weight": (1024, 3584),
        "experts.w13_weight": (4, 3072, 512),
        "input_layernorm.weight": (1024,),
        "qkv_proj.bias": (1280,),
    }
    tensors = {
        name: torch.randint(-(2**15), 2**15, shape, generator=gen, dtype=torch.int16).view(
            torch.bfloat16
        )
        for name, shape in shapes.items()
    }
    cpu = read_fingerprints(save_fingerprints(tensors, tmp_path / "cpu", tp_rank=0))
    on_gpu = {name: t.to("cuda") for name, t in tensors.items()}
    gpu = read_fingerprints(save_fingerprints(on_gpu, tmp_path / "gpu", tp_rank=0))
    assert gpu[0] == cpu[0]
    assert any(e.group > 1 for e in cpu[0].values())  # grouped rows are part of the case
    for name, prints in cpu[1].items():
        assert torch.equal(gpu[1][name], prints), name
