"""Dump what an engine rank holds: one safetensors file per rank, for ``syncviz diagnose``.

Run it where the rank's model lives (a vLLM or SGLang worker, a ChatLearn, verl or
slime rollout worker): :func:`save_vllm_rank` or :func:`save_sglang_rank`. The engine
is imported only when the TP/PP ranks are not given. Beside each
rank's file goes a small note (``tp{t}.notes.json``) naming the tensors the
engine changed after loading, which the file cannot show as they were loaded.

>>> import tempfile, torch
>>> model = torch.nn.Linear(4, 2, bias=False)
>>> path = save_vllm_rank(model, tempfile.mkdtemp(), tp_rank=1)
>>> path.name
'tp1.safetensors'
>>> from safetensors import safe_open
>>> with safe_open(str(path), "pt") as f:
...     list(f.keys())
['weight']
>>> read_notes(path)["changed"], read_notes(path)["buffers"]
({}, [])
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from syncviz.engines import DEFAULT_ENGINE, EngineInfo
from syncviz.engines import sglang as _sglang
from syncviz.engines import vllm as _vllm
from syncviz.errors import SyncvizError

NOTES_FORMAT = "syncviz-engine-notes/1"
# The dtypes a diagnosis compares; others (FP8, packed integers) are noted, not written.
COMPARABLE = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def save_vllm_rank(
    model: Any,
    out_dir: str | Path,
    *,
    tp_rank: int | None = None,
    pp_rank: int | None = None,
    pp_size: int | None = None,
    fingerprints: bool = False,
) -> Path:
    """Write this vLLM rank's ``model.named_parameters()`` and persistent buffers to
    ``out_dir/tp{t}.safetensors`` (``pp{p}-tp{t}.safetensors`` when the pipeline has
    more than one stage), and the engine's changes to ``tp{t}.notes.json`` beside it.

    Without ``tp_rank`` the ranks are read from vLLM's parallel state (the TP
    group's rank, the PP group's rank and size); with it, the pipeline defaults to
    one stage. Tensors are copied to CPU as they are (same dtype,
    same names); tied parameters are written once per name. Buffers registered
    with ``persistent=False`` (caches such as rotary tables) are left out, as
    ``state_dict`` leaves them out. The note names the buffers written (engine state
    such as KV-cache scales is no finding when no checkpoint tensor matches it) and
    lists every tensor that is empty,
    whose dtype cannot be compared (not written), or whose shape or dtype differs
    from what its layer declares (vLLM's ``output_size_per_partition``,
    ``input_size_per_partition``, ``params_dtype``; an MoE layer's
    ``local_num_experts``, ``intermediate_size_per_partition``, ``hidden_size``).
    Returns the safetensors file's path.
    A rank that is no rank (``tp_rank=-1``, ``True``, ``pp_rank`` not below ``pp_size``)
    raises SyncvizError naming it.
    With ``fingerprints=True`` only a fingerprint per row of the same tensors is computed,
    on the device, and written to ``tp{t}.fingerprints.safetensors``
    (:mod:`syncviz.fingerprint_dump`), with the same note beside it.
    """
    return _save_rank(
        _vllm.ENGINE,
        model,
        out_dir,
        tp_rank=tp_rank,
        pp_rank=pp_rank,
        pp_size=pp_size,
        fingerprints=fingerprints,
    )


def save_sglang_rank(model: Any, out_dir: str | Path, **ranks: Any) -> Path:
    """Write this SGLang rank's ``model.named_parameters()`` and persistent buffers (call it
    after ``load_weights`` or a weight update, in the model runner's worker), as
    :func:`save_vllm_rank` does for vLLM, with its keyword arguments (``tp_rank``,
    ``pp_rank``, ``pp_size``, ``fingerprints``): the same files, read by ``syncviz diagnose
    --engine sglang``. Without ``tp_rank`` the ranks come from SGLang's parallel state
    (``sglang.srt.distributed.parallel_state``); an MoE layer's experts per rank from its
    ``num_local_experts``.

    >>> import tempfile, torch
    >>> model = torch.nn.Linear(4, 2, bias=False)
    >>> save_sglang_rank(model, tempfile.mkdtemp(), tp_rank=0).name
    'tp0.safetensors'
    """
    # save_vllm_rank's signature states the arguments (and their defaults) once for both.
    arguments = inspect.signature(save_vllm_rank).bind(model, out_dir, **ranks)
    arguments.apply_defaults()
    return _save_rank(_sglang.ENGINE, **arguments.arguments)


def _save_rank(
    info: EngineInfo,
    model: Any,
    out_dir: str | Path,
    *,
    tp_rank: int | None,
    pp_rank: int | None,
    pp_size: int | None,
    fingerprints: bool,
) -> Path:
    """One rank of engine ``info``: see :func:`save_vllm_rank`."""
    from_engine = f"pass this worker's own rank numbers, or none to read them from {info.display}"
    for name, value, least in (
        ("tp_rank", tp_rank, 0),
        ("pp_rank", pp_rank, 0),
        ("pp_size", pp_size, 1),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < least
        ):
            raise SyncvizError(
                f"{info.dump}({name}={value!r}): {name} must be an integer, {least} or more",
                fix=from_engine,
            )
    if pp_rank is not None and pp_size is not None and pp_rank >= pp_size:
        raise SyncvizError(
            f"{info.dump}(pp_rank={pp_rank}, pp_size={pp_size}): pp_rank must be below pp_size",
            fix=from_engine,
        )
    from safetensors.torch import save_file

    if tp_rank is None:
        tp_rank, pp_now, pp_size_now = _engine_ranks(info)
        pp_rank = pp_now if pp_rank is None else pp_rank
        pp_size = pp_size_now if pp_size is None else pp_size
    pp_rank = 0 if pp_rank is None else pp_rank
    pp_size = 1 if pp_size is None else pp_size
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    changed: dict[str, dict[str, Any]] = {}
    buffers: list[str] = []
    for name, tensor, owner, is_buffer in _named_tensors(model):
        note = _change(name, tensor, owner, info.expert_count)
        if note is not None:
            changed[name] = note
        if is_buffer:
            buffers.append(name)
        if tensor.dtype not in COMPARABLE:
            continue
        tensors[name] = tensor.detach()
    if fingerprints:  # fingerprinted where they live: only the fingerprints travel
        from syncviz.fingerprint_dump import save_fingerprints

        path = save_fingerprints(tensors, root, tp_rank=tp_rank, pp_rank=pp_rank, pp_size=pp_size)
    else:
        from syncviz.diagnose.dumps import rank_file

        # clone(): safetensors refuses tensors that share storage (tied embeddings).
        host = {n: t.to("cpu").contiguous().clone() for n, t in tensors.items()}
        path = root / rank_file(pp_rank, tp_rank, pp_size)
        save_file(host, str(path))
    note = {
        "format": NOTES_FORMAT,
        "rank": {"tp": tp_rank, "pp": pp_rank, "pp_size": pp_size},
        "changed": changed,
        "buffers": buffers,
        **({} if info.name == DEFAULT_ENGINE else {"engine": info.name}),
    }
    notes_path(path).write_text(json.dumps(note, indent=1), encoding="utf-8")
    return path


def notes_path(rank_path: Path) -> Path:
    """The note beside a rank's file, full dump or fingerprints: ``tp1.safetensors`` and
    ``tp1.fingerprints.safetensors`` -> ``tp1.notes.json``.

    >>> notes_path(Path("/d/pp1-tp3.safetensors")).name
    'pp1-tp3.notes.json'
    >>> notes_path(Path("/d/tp1.fingerprints.safetensors")).name
    'tp1.notes.json'
    """
    stem = rank_path.name.removesuffix(".safetensors").removesuffix(".fingerprints")
    return rank_path.with_name(stem + ".notes.json")


def read_notes(rank_path: Path) -> dict[str, Any] | None:
    """The note beside ``rank_path`` (None when there is none): ``changed``, the tensors the
    engine changed by name; ``buffers``, the names written that are buffers, not parameters."""
    path = notes_path(rank_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != NOTES_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        if not isinstance(data["changed"], dict) or not isinstance(data["buffers"], list):
            raise ValueError("no 'changed' map or 'buffers' list")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SyncvizError(
            f"{str(path)!r} is not a note written by save_vllm_rank ({err})",
            fix="remove it, or dump the rank again with syncviz.dump.save_vllm_rank",
        ) from None
    return data


def _named_tensors(model: Any):
    """(name, tensor, owning module, is a buffer) of every parameter and persistent buffer,
    each tensor once under its first name (as ``named_parameters`` gives a tied lm_head once)."""
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        skip = getattr(module, "_non_persistent_buffers_set", set())
        members = [(n, p, False) for n, p in module._parameters.items()]
        members += [(n, b, True) for n, b in module._buffers.items() if n not in skip]
        for local, tensor, is_buffer in members:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            yield prefix + local, tensor, module, is_buffer


def _change(
    name: str, tensor: torch.Tensor, owner: Any, expert_count: str
) -> dict[str, Any] | None:
    """What the engine changed about this tensor, or None when it looks as loaded."""
    shape, dtype = list(tensor.shape), str(tensor.dtype).removeprefix("torch.")
    expected_shape = _declared_shape(name.rsplit(".", 1)[-1], owner, expert_count)
    expected_dtype = getattr(owner, "params_dtype", None)
    note: dict[str, Any] = {"shape": shape, "dtype": dtype}
    if expected_shape is not None:
        note["expected_shape"] = list(expected_shape)
    if isinstance(expected_dtype, torch.dtype):
        note["expected_dtype"] = str(expected_dtype).removeprefix("torch.")
    if tensor.numel() == 0:
        return {**note, "why": "empty"}
    if tensor.dtype not in COMPARABLE:
        return {**note, "why": "dtype", "written": False}
    if expected_shape is not None and tuple(shape) != expected_shape:
        return {**note, "why": "shape"}
    if name.endswith("weight") and "expected_dtype" in note and note["expected_dtype"] != dtype:
        return {**note, "why": "dtype"}
    return None


def _declared_shape(local: str, owner: Any, expert_count: str) -> tuple[int, ...] | None:
    """The per-rank shape an engine layer declares for its parameter ``local``, if it says
    (``expert_count``: the MoE layer's attribute counting the rank's experts)."""
    declared = [
        getattr(owner, name, None)
        for name in (
            "output_size_per_partition",
            "input_size_per_partition",
            expert_count,
            "intermediate_size_per_partition",
            "hidden_size",
        )
    ]
    if not all(isinstance(v, int) or v is None for v in declared):
        return None
    out, inp, experts, inter, hidden = declared
    if local == "weight" and out is not None and inp is not None:
        return (out, inp)
    if experts is None or inter is None or hidden is None:
        return None
    if local == "w13_weight":
        return (experts, 2 * inter, hidden)
    if local == "w2_weight":
        return (experts, hidden, inter)
    return None


def _engine_ranks(info: EngineInfo) -> tuple[int, int, int]:
    """(tp rank, pp rank, pp size) from the engine's parallel state."""
    import importlib

    try:
        ps = importlib.import_module(info.parallel_state)
    except ImportError:
        raise SyncvizError(
            f"{info.display} is not importable here, so the rank is unknown",
            fix=f"call {info.dump} inside a {info.display} worker, or pass tp_rank=, pp_rank=,"
            " pp_size=",
        ) from None
    try:
        pp = ps.get_pp_group()
        return ps.get_tensor_model_parallel_rank(), pp.rank_in_group, pp.world_size
    except (AssertionError, AttributeError) as err:
        raise SyncvizError(
            f"{info.display}'s parallel state is not initialised here ({err})",
            fix=f"call {info.dump} in a worker of a running engine, or pass the ranks",
        ) from None
