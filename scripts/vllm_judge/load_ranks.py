"""What vLLM's own model class and loader put on each TP rank, for a checkpoint, without an engine.

Run with vLLM's virtualenv (never the package's); it imports vllm, torch, safetensors and
the standard library only (nothing of syncviz: it is the outside judge):

    /path/to/vllm-venv/bin/python scripts/vllm_judge/load_ranks.py \\
        --checkpoint CKPT --tp 1 2 4 --out OUT [--dump DUMPS]

(or ``--jobs JOBS.json``, a list of such checkpoint, TP sizes, output folder and optional
dump folder, judged in one process: importing vLLM and reading its registry take most of
the time).

With a dump folder, each rank is also written as a user dumps a rank for ``syncviz
diagnose``: this checkout's ``syncviz.dump.save_vllm_rank(model, DUMPS/tp{d}, tp_rank=r)``
(the README's recipe, run on the model vLLM's loader filled), giving
``DUMPS/tp{d}/tp{r}.safetensors`` and the note beside it. Only then is syncviz imported,
after the judged files are saved: it writes, it does not judge.

For each TP size d and each rank r < d it builds vLLM's model class for the checkpoint's
architecture (``initialize_model``, as ``DefaultModelLoader.load_model`` does) while
vLLM's process groups answer "rank r of d", runs ``DefaultModelLoader.load_weights`` over
the checkpoint (the model's own ``load_weights``, with the loader's check that every
parameter was loaded), and saves the rank's parameters and persistent buffers, by
vLLM's names, to ``OUT/tp{d}/rank{r}.safetensors``. ``OUT/summary.json`` gives the
versions, the seconds per TP size, and per TP size either ``"ok"`` or the one-line
error that stopped it (the script goes on with the next size; exit 0 when it got that far);
``"unsupported"`` says why nothing was built when vLLM has no class for the architecture.

No process group is made: every rank of a TP size is built in this one process. vLLM's
layers ask for their rank and size through ``vllm.distributed.parallel_state``'s group
getters (``get_tensor_model_parallel_rank`` reads ``get_tp_group().rank_in_group``), so
the module's group globals are set to small stand-ins with the rank and size of the case:
the TP group rank r of d, every other group (pipeline, data, expert, context, ...) rank 0
of 1. Nothing communicates while weights load. ``process_weights_after_loading`` is not
run: it repacks weights into the CPU kernels' formats (the stock CPU engine empties dense
linears there), which is not the layout a trainer's weights are sent to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
}.items():
    os.environ.setdefault(_key, _value)


class StandInProcessGroup:
    """The rank and size a torch ``ProcessGroup`` reports; nothing else."""

    def __init__(self, rank: int, size: int) -> None:
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


class StandInGroup:
    """The attributes of vLLM's ``GroupCoordinator`` that building and loading a model read."""

    def __init__(self, name: str, rank: int, size: int) -> None:
        import torch

        self.unique_name = f"{name}:judge"
        self.rank_in_group = rank
        self.world_size = size
        self.rank = rank
        self.local_rank = rank
        self.ranks = list(range(size))
        self.group_ranks = [self.ranks]
        self.device = torch.device("cpu")
        self.device_index = 0
        # Some layers read a torch process group's own rank and size.
        self.cpu_group = self.device_group = StandInProcessGroup(rank, size)
        self.use_device_communicator = False
        self.device_communicator = None
        self.mq_broadcaster = None
        self.use_custom_op_call = False
        self.use_cpu_custom_send_recv = False

    @property
    def first_rank(self) -> int:
        return 0

    @property
    def last_rank(self) -> int:
        return self.world_size - 1

    @property
    def is_first_rank(self) -> bool:
        return self.rank_in_group == 0

    @property
    def is_last_rank(self) -> bool:
        return self.rank_in_group == self.world_size - 1

    def __getattr__(self, name: str):
        # A collective called while building or loading would be a layout fact this
        # judge cannot stand in for: say which, rather than return something.
        raise RuntimeError(f"the stand-in {self.unique_name} group has no {name!r}")


def set_groups(rank: int, size: int) -> None:
    """Make vLLM's group getters answer TP rank ``rank`` of ``size``, every other group 1."""
    from vllm.distributed import parallel_state as ps

    for attr, value in list(vars(ps).items()):
        is_group = value is None or isinstance(value, (ps.GroupCoordinator, StandInGroup))
        if not (attr.startswith("_") and attr[1:].replace("_", "").isupper() and is_group):
            continue
        name = attr.strip("_").lower()
        mine = attr in ("_TP", "_WORLD")
        setattr(ps, attr, StandInGroup(name, rank if mine else 0, size if mine else 1))


def engine_config(checkpoint: Path, tp: int):
    """vLLM's own configuration of an engine on ``checkpoint`` at TP ``tp`` (nothing started)."""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=str(checkpoint),
        dtype="bfloat16",
        skip_tokenizer_init=True,
        enforce_eager=True,
        max_model_len=64,
        tensor_parallel_size=tp,
        distributed_executor_backend="mp",
        load_format="safetensors",
    )
    return args.create_engine_config()


def load_rank(config, rank: int, size: int):
    """The model as vLLM's default loader leaves it on rank ``rank`` of ``size`` (before the
    kernels' repacking)."""
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.utils.torch_utils import set_default_torch_dtype

    set_groups(rank, size)
    # Attention layers register by name in the config: one model per config at a time.
    config.compilation_config.static_forward_context.clear()
    loader = get_model_loader(config.load_config)
    with set_current_vllm_config(config):
        with set_default_torch_dtype(config.model_config.dtype), torch.device("cpu"):
            model = initialize_model(vllm_config=config, model_config=config.model_config)
        loader.load_weights(model, config.model_config)
    return model


def rank_tensors(model) -> tuple[dict, list[str]]:
    """The rank's ``named_parameters`` (a tied tensor once, under its first name) and its
    persistent buffers, by vLLM's names; and the buffers' names."""
    out = {name: p.detach() for name, p in model.named_parameters()}
    buffers = []
    for module_name, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is None or name in module._non_persistent_buffers_set:
                continue
            full = f"{module_name}.{name}" if module_name else name
            out[full] = buffer.detach()
            buffers.append(full)
    return {k: v.clone().contiguous() for k, v in out.items()}, sorted(buffers)


def unsupported(checkpoint: Path) -> str:
    """Why vLLM has no model class for the checkpoint's architecture ("" when it has one)."""
    from vllm.model_executor.models import registry

    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    (architecture,) = config["architectures"]
    if architecture in registry.ModelRegistry.get_supported_archs():
        return ""
    removed = getattr(registry, "_PREVIOUSLY_SUPPORTED_MODELS", {}).get(architecture)
    since = f" (supported until vLLM {removed})" if removed else ""
    return f"vLLM has no model class for architecture {architecture}{since}"


def save_dump(model, folder: Path, rank: int) -> None:
    """The rank as ``syncviz diagnose --dump`` reads it, written by this checkout's syncviz."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from syncviz.dump import save_vllm_rank

    save_vllm_rank(model, folder, tp_rank=rank)


def judge(checkpoint: Path, sizes: list[int], out: Path, dump: Path | None = None) -> dict:
    """Load ``checkpoint`` on every rank of each TP size in ``sizes``; save into ``out`` (and,
    with ``dump``, each rank as a diagnose dump into ``dump/tp{size}``)."""
    import torch
    import vllm
    from safetensors.torch import save_file

    summary: dict = {"vllm": vllm.__version__, "torch": torch.__version__, "tp": {}}
    summary["unsupported"] = unsupported(checkpoint)
    for size in [] if summary["unsupported"] else sizes:
        started = time.perf_counter()
        try:
            config = engine_config(checkpoint.resolve(), size)
            folder = out / f"tp{size}"
            folder.mkdir(parents=True, exist_ok=True)
            for rank in range(size):
                model = load_rank(config, rank, size)
                tensors, buffers = rank_tensors(model)
                meta = {"buffers": json.dumps(buffers)}
                save_file(tensors, str(folder / f"rank{rank}.safetensors"), metadata=meta)
                if dump is not None:
                    save_dump(model, dump / f"tp{size}", rank)
            result = "ok"
        except Exception as exc:  # reported per size; the caller decides what it means
            traceback.print_exc()
            result = f"{type(exc).__name__}: {exc}".splitlines()[0]
        summary["tp"][str(size)] = {
            "result": result,
            "seconds": round(time.perf_counter() - started, 2),
        }
        print(f"load_ranks: {checkpoint} tp {size}: {result}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="one checkpoint folder")
    parser.add_argument("--tp", type=int, nargs="+", help="TP sizes (with --checkpoint)")
    parser.add_argument("--out", type=Path, help="output folder (with --checkpoint)")
    parser.add_argument(
        "--dump", type=Path, help="also dump each rank for syncviz diagnose here (optional)"
    )
    parser.add_argument(
        "--jobs",
        type=Path,
        help='instead: a JSON list of {"checkpoint": ..., "tp": [...], "out": ...} (and '
        'optionally "dump": ...), all judged in this one process (vLLM is imported once)',
    )
    args = parser.parse_args()
    if args.jobs:
        jobs = json.loads(args.jobs.read_text(encoding="utf-8"))
    elif args.checkpoint and args.tp and args.out:
        jobs = [{"checkpoint": args.checkpoint, "tp": args.tp, "out": args.out, "dump": args.dump}]
    else:
        parser.error("give --jobs, or --checkpoint with --tp and --out")
    for job in jobs:
        dump = Path(job["dump"]) if job.get("dump") else None
        judge(Path(job["checkpoint"]), [int(d) for d in job["tp"]], Path(job["out"]), dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
