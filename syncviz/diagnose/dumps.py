"""Per-rank vLLM dumps: one safetensors file per rank, names normalised to the oracle's keys.

vLLM names its parameters ``model.layers.0.self_attn.qkv_proj.weight`` and
``lm_head.weight``; ChatLearn (and older wrappers) add a leading ``model.``;
current vLLM nests routed experts one level deeper
(``mlp.experts.routed_experts.w13_weight``). All of them map to one key, the
oracle's name.

>>> normalise("model.layers.3.mlp.experts.routed_experts.w13_weight")
'model.model.layers.3.mlp.experts.w13_weight'
>>> normalise("model.model.layers.3.mlp.experts.w13_weight")
'model.model.layers.3.mlp.experts.w13_weight'
>>> normalise("lm_head.weight"), normalise("model.lm_head.weight")
('model.lm_head.weight', 'model.lm_head.weight')
>>> rank_file(2, 0, 1), rank_file(1, 3, 2)
('tp0.safetensors', 'pp1-tp3.safetensors')
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from syncviz.diagnose.tensor_file import TensorFile
from syncviz.engines import ENGINE
from syncviz.errors import SyncvizError
from syncviz.findings import engine_rank

# Top-level module names of a vLLM causal LM (its own names, without a wrapper).
_ROOTS = ("model.", "lm_head.", "transformer.")


def normalise(name: str) -> str:
    """The oracle's key for an engine's parameter name in any of the accepted spellings
    (each engine record's routed-expert spellings, see :mod:`syncviz.engines`)."""
    for info in ENGINE.values():
        name = info.canonical_name(name)
    if name.startswith("module."):  # a DDP/DeepSpeed-style wrapper around the engine model
        name = name[len("module.") :]
    # A ChatLearn-style wrapper adds one "model." in front of vLLM's own names.
    wrapped = name.startswith("model.") and name[len("model.") :].startswith(_ROOTS)
    return name if wrapped else "model." + name


def rank_file(pp: int, tp: int, pp_size: int) -> str:
    """The dump file name of vLLM rank (pp, tp): ``tp{t}`` or ``pp{p}-tp{t}`` when P > 1."""
    return f"tp{tp}.safetensors" if pp_size == 1 else f"pp{pp}-tp{tp}.safetensors"


def rank_label(pp: int, tp: int, pp_size: int) -> str:
    """How reports name a vLLM rank: ``tp 1``, or ``pp 0 tp 1`` when P > 1."""
    return engine_rank(tp, pp if pp_size > 1 else None)


@dataclass(frozen=True)
class DumpTensor:
    """Where one dumped tensor lies: its file, its name there, shape and dtype."""

    path: Path
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


# Told when a rank file changes under diagnose: the engine (or a second dump) writes there.
CHANGED_FIX = "write dumps to a new folder, not over the one diagnose reads"


class RankDump:
    """One rank's dump file: its tensors by oracle key (header only; data read on demand).

    Read without memory maps (see :mod:`syncviz.diagnose.tensor_file`): a file
    rewritten while it is read is named, never a crash.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = TensorFile(
            path,
            "dump file",
            changed_fix=CHANGED_FIX,
            fix="write rank dumps with syncviz.dump.save_vllm_rank",
        )
        self.tensors: dict[str, DumpTensor] = {}
        self.duplicates: list[str] = []
        for name in sorted(self._file.entries):
            entry = self._file.entries[name]
            key = normalise(name)
            if key in self.tensors:
                self.duplicates.append(name)
                continue
            self.tensors[key] = DumpTensor(path, name, entry.shape, self._file.dtype(name))

    def read(self, key: str) -> torch.Tensor:
        """The tensor stored under oracle key ``key``."""
        return self._file.read(self.tensors[key].name)


def open_dumps(folder: str | Path, tp: int, pp: int = 1) -> dict[tuple[int, int], RankDump]:
    """Every rank's dump in ``folder``, by (pp, tp); a missing file is bad input."""
    root = Path(folder)
    try:
        listed = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        raise SyncvizError(
            f"dump {str(root)!r} is not a folder",
            fix="pass the folder holding tp{t}.safetensors files (syncviz.dump.save_vllm_rank)",
        ) from None
    except PermissionError:
        raise SyncvizError(
            f"dump folder {str(root)!r} cannot be listed (permission denied)",
            fix="make it readable (chmod a+rx) or run as its owner",
        ) from None
    except OSError as err:
        raise SyncvizError(
            f"dump folder {str(root)!r} cannot be listed ({err.strerror or err})",
            fix="pass the folder holding tp{t}.safetensors files",
        ) from None
    present = sorted(n for n in listed if n.endswith(".safetensors"))
    dumps = {}
    for p in range(pp):
        for t in range(tp):
            path = root / rank_file(p, t, pp)
            _require_rank_file(path, present, tp, pp)
            dumps[(p, t)] = RankDump(path)
    return dumps


def missing_rank_file(what: str, path: Path, present: list[str], tp: int, pp: int) -> SyncvizError:
    """The bad input of a rank's ``what`` file ("dump", "fingerprint") missing from its
    folder: the files that are there, and how to make the missing one.

    >>> err = missing_rank_file("dump", Path("d/rank_1.safetensors"), ["rank_0.safetensors"], 2, 1)
    >>> str(err).split(": ")[0]
    "dump file rank_1.safetensors is missing from 'd' (found rank_0.safetensors)"
    >>> err.fix
    'dump every rank of dst tp 2, or pass the --dst-tp/--dst-pp the engine ran with'
    """
    return SyncvizError(
        f"{what} file {path.name} is missing from {str(path.parent)!r}"
        f" (found {', '.join(present)})",
        fix=f"{what} every rank of dst tp {tp}"
        + (f" pp {pp}" if pp > 1 else "")
        + ", or pass the --dst-tp/--dst-pp the engine ran with",
    )


def _require_rank_file(path: Path, present: list[str], tp: int, pp: int) -> None:
    """Bad input, named, unless ``path`` is a regular file syncviz may read."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise missing_rank_file(
            "dump", path, present or ["no .safetensors files"], tp, pp
        ) from None
    except PermissionError:
        raise SyncvizError(
            f"dump file {str(path)!r} cannot be read (permission denied)",
            fix="make the dump folder searchable (chmod a+x) or run as its owner",
        ) from None
    except OSError as err:
        raise SyncvizError(
            f"dump file {str(path)!r} cannot be read ({err.strerror or err})",
            fix="pass a folder of regular tp{t}.safetensors files",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise SyncvizError(
            f"dump file {str(path)!r} is not a regular file",
            fix="write rank dumps with syncviz.dump.save_vllm_rank, one file per rank",
        )
