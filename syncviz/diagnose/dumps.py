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

from dataclasses import dataclass
from pathlib import Path

import torch

from syncviz.errors import SyncvizError

# Top-level module names of a vLLM causal LM (its own names, without a wrapper).
_ROOTS = ("model.", "lm_head.", "transformer.")


def normalise(name: str) -> str:
    """The oracle's key for a vLLM parameter name in any of the accepted spellings."""
    name = name.replace(".experts.routed_experts.", ".experts.")
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
    return f"tp {tp}" if pp_size == 1 else f"pp {pp} tp {tp}"


@dataclass(frozen=True)
class DumpTensor:
    """Where one dumped tensor lies: its file, its name there, shape and dtype."""

    path: Path
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


class RankDump:
    """One rank's dump file: its tensors by oracle key (headers only; data read on demand)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._safe_open = safe_open
        self.path = path
        self.tensors: dict[str, DumpTensor] = {}
        self.duplicates: list[str] = []
        try:
            with safe_open(str(path), "pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    part = f.get_slice(name)
                    key = normalise(name)
                    if key in self.tensors:
                        self.duplicates.append(name)
                        continue
                    dtype = _DTYPES.get(part.get_dtype())
                    if dtype is None:
                        raise SyncvizError(
                            f"{name!r} in {str(path)!r} has dtype {part.get_dtype()}, which"
                            " syncviz cannot compare",
                            fix="dump floating-point parameters (float32, bfloat16, float16)",
                        )
                    self.tensors[key] = DumpTensor(path, name, tuple(part.get_shape()), dtype)
        except SyncvizError:
            raise
        except Exception as err:  # safetensors raises its own error types
            raise SyncvizError(
                f"{str(path)!r} is not a readable safetensors file ({err})",
                fix="write rank dumps with syncviz.dump.save_vllm_rank",
            ) from None

    def read(self, key: str) -> torch.Tensor:
        """The tensor stored under oracle key ``key``."""
        entry = self.tensors[key]
        with self._safe_open(str(entry.path), "pt") as f:
            return f.get_tensor(entry.name)


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def open_dumps(folder: str | Path, tp: int, pp: int = 1) -> dict[tuple[int, int], RankDump]:
    """Every rank's dump in ``folder``, by (pp, tp); a missing file is bad input."""
    root = Path(folder)
    if not root.is_dir():
        raise SyncvizError(
            f"dump {str(root)!r} is not a folder",
            fix="pass the folder holding tp{t}.safetensors files (syncviz.dump.save_vllm_rank)",
        )
    dumps = {}
    for p in range(pp):
        for t in range(tp):
            path = root / rank_file(p, t, pp)
            if not path.is_file():
                present = sorted(x.name for x in root.glob("*.safetensors"))
                raise SyncvizError(
                    f"dump file {path.name} is missing from {str(root)!r}"
                    f" (found {', '.join(present) or 'no .safetensors files'})",
                    fix=f"dump every rank of dst tp {tp}"
                    + (f" pp {pp}" if pp > 1 else "")
                    + ", or pass the --dst-tp/--dst-pp the engine ran with",
                )
            dumps[(p, t)] = RankDump(path)
    return dumps
