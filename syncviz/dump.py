"""Dump what a vLLM rank holds: one safetensors file per rank, for ``syncviz diagnose``.

Run it where the rank's model lives (a vLLM worker, a ChatLearn or verl rollout
worker). vLLM is imported only when the TP/PP ranks are not given.

>>> import tempfile, torch
>>> model = torch.nn.Linear(4, 2, bias=False)
>>> path = save_vllm_rank(model, tempfile.mkdtemp(), tp_rank=1)
>>> path.name
'tp1.safetensors'
>>> from safetensors import safe_open
>>> with safe_open(str(path), "pt") as f:
...     list(f.keys())
['weight']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncviz.errors import SyncvizError


def save_vllm_rank(
    model: Any,
    out_dir: str | Path,
    *,
    tp_rank: int | None = None,
    pp_rank: int | None = None,
    pp_size: int | None = None,
    fingerprints: bool = False,
) -> Path:
    """Write ``model.named_parameters()`` of this rank to ``out_dir/tp{t}.safetensors``
    (``pp{p}-tp{t}.safetensors`` when the pipeline has more than one stage).

    Without ``tp_rank`` the ranks are read from vLLM's parallel state (the TP
    group's rank, the PP group's rank and size); with it, the pipeline defaults to
    one stage. Tensors are copied to CPU as they are (same dtype,
    same names); tied parameters are written once per name. Returns the file's path.
    With ``fingerprints=True`` only a fingerprint per row is computed, on the device,
    and written to ``tp{t}.fingerprints.safetensors`` (:mod:`syncviz.fingerprint_dump`).
    """
    from safetensors.torch import save_file

    if tp_rank is None:
        tp_rank, pp_now, pp_size_now = _vllm_ranks()
        pp_rank = pp_now if pp_rank is None else pp_rank
        pp_size = pp_size_now if pp_size is None else pp_size
    pp_rank = 0 if pp_rank is None else pp_rank
    pp_size = 1 if pp_size is None else pp_size
    if fingerprints:
        from syncviz.fingerprint_dump import save_fingerprints

        return save_fingerprints(model, out_dir, tp_rank=tp_rank, pp_rank=pp_rank, pp_size=pp_size)
    from syncviz.diagnose.dumps import rank_file

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors that share storage (tied embeddings).
    tensors = {
        name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_parameters()
    }
    path = root / rank_file(pp_rank, tp_rank, pp_size)
    save_file(tensors, str(path))
    return path


def _vllm_ranks() -> tuple[int, int, int]:
    """(tp rank, pp rank, pp size) from vLLM's parallel state."""
    try:
        from vllm.distributed import parallel_state as ps
    except ImportError:
        raise SyncvizError(
            "vLLM is not importable here, so the rank is unknown",
            fix="call save_vllm_rank inside a vLLM worker, or pass tp_rank=, pp_rank=, pp_size=",
        ) from None
    try:
        pp = ps.get_pp_group()
        return ps.get_tensor_model_parallel_rank(), pp.rank_in_group, pp.world_size
    except (AssertionError, AttributeError) as err:
        raise SyncvizError(
            f"vLLM's parallel state is not initialised here ({err})",
            fix="call save_vllm_rank in a worker of a running engine, or pass the ranks",
        ) from None
