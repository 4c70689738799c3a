"""The reference: a Hugging Face checkpoint read lazily, one global tensor at a time.

Each vLLM parameter's global tensor (the oracle's layout: fused QKV is
``[Q; K; V]``, fused gate/up is ``[gate; up]``, routed experts stacked on dim 0)
is assembled from the checkpoint's own tensors only when asked for; nothing is
read at open time but the headers.

>>> import tempfile
>>> from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint
>>> folder = tempfile.mkdtemp()
>>> _ = write_checkpoint(tiny_spec("llama-mcore"), folder)
>>> ref = Reference(folder)
>>> ref.spec.num_query_groups, tuple(ref.global_tensor("qkv", 0).shape)
(2, (24, 16))
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from syncviz.diagnose.checkpoint import require_agreement
from syncviz.diagnose.tensor_file import TensorFile
from syncviz.errors import SyncvizError
from syncviz.oracle.hf_names import HF_FUSED_EXPERTS, HF_NAMES, foreign_tensor, from_fused_experts
from syncviz.spec import MAX_CONFIG_BYTES, ModelSpec
from syncviz.trace.json_io import json_object, parse_json, read_text_file

__all__ = ["HF_NAMES", "INDEX", "Reference"]

INDEX = "model.safetensors.index.json"
MAX_INDEX_BYTES = 64 << 20  # the index of a 1T-parameter model is a few MiB
_INDEX_FIX = "regenerate the index with save_pretrained, or remove it"
_CHANGED_FIX = "copy the checkpoint to a folder nothing writes to"


class Reference:
    """A Hugging Face checkpoint folder: its spec and its tensors, read on demand.

    ``folder`` holds ``config.json`` and ``model.safetensors``, or shards listed in
    ``model.safetensors.index.json``. Only headers are read when it opens, and
    they are checked against the config: a checkpoint that contradicts its own
    config.json is bad input, named before any dump is judged. Shards must lie
    inside the folder (in a Hugging Face cache snapshot: or in its ``blobs``).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SyncvizError(
                f"reference {str(self.folder)!r} is not a folder",
                fix="pass the Hugging Face checkpoint folder (config.json + *.safetensors)",
            )
        try:
            os.listdir(self.folder)
        except PermissionError:
            raise SyncvizError(
                f"reference folder {str(self.folder)!r} cannot be listed (permission denied)",
                fix="make it readable (chmod a+rx) or run as its owner",
            ) from None
        except OSError as err:
            raise SyncvizError(
                f"reference folder {str(self.folder)!r} cannot be listed ({err.strerror or err})",
                fix="pass the Hugging Face checkpoint folder (config.json + *.safetensors)",
            ) from None
        self.spec = ModelSpec.from_hf_config(self.folder)
        self.names = HF_NAMES[self.spec.family]
        self.files = self._weight_map()
        foreign = foreign_tensor(self.spec.family, self.files)
        if foreign is not None:  # a relabelled config would drop these tensors: no false OK
            raise SyncvizError(
                f"the reference holds {foreign[0]!r}, a tensor of family {foreign[1]},"
                f" which family {self.spec.family} (its config.json) does not read",
                fix="use the checkpoint's own config.json (architectures, model_type)",
            )
        held = {name: f.entries[name].shape for name, f in self.files.items()}
        require_agreement(self.spec, held, self._config)

    def _config(self) -> dict[str, Any]:
        """The parsed config.json (already read once, bounded, by the spec)."""
        path = self.folder / "config.json"
        fix = "pass the checkpoint folder with its config.json"
        text = read_text_file(path, "config file", MAX_CONFIG_BYTES, fix=fix)
        data = parse_json(text, f"config file {str(path)!r}", fix=fix)
        return data if isinstance(data, dict) else {}

    def _weight_map(self) -> dict[str, TensorFile]:
        index = self.folder / INDEX
        if os.path.lexists(index):
            shards: dict[str, TensorFile] = {}
            files = {}
            for name, listed in self._index(index).items():
                field = f"{INDEX} field weight_map[{name!r}]"
                if listed not in shards:
                    shards[listed] = self._shard(listed, field)
                if name not in shards[listed].entries:
                    raise SyncvizError(
                        f"{field} names {listed!r}, which holds no tensor {name!r}",
                        fix=_INDEX_FIX,
                    )
                files[name] = shards[listed]
            return files
        if os.path.lexists(self.folder / "model.safetensors"):
            single = self._shard("model.safetensors", "model.safetensors")
            return dict.fromkeys(single.entries, single)
        raise SyncvizError(
            f"reference {str(self.folder)!r} holds no model.safetensors or {INDEX}",
            fix="pass a Hugging Face checkpoint folder saved as safetensors",
        )

    def _index(self, path: Path) -> dict[str, str]:
        """The index's weight_map (tensor name -> shard file), read bounded and strict."""
        shown = f"checkpoint index {str(path)!r}"
        try:  # (non-blocking: a FIFO is refused by the reader below, not waited on)
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except PermissionError:
            raise SyncvizError(
                f"{shown} cannot be read (permission denied)",
                fix="make it readable (chmod a+r) or run as its owner",
            ) from None
        except OSError:
            pass  # the reader names what else is wrong
        text = read_text_file(path, "checkpoint index", MAX_INDEX_BYTES, fix=_INDEX_FIX)
        data = json_object(parse_json(text, shown, fix=_INDEX_FIX), shown, fix=_INDEX_FIX)
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict):
            got = "no field weight_map" if weight_map is None else f"a {type(weight_map).__name__}"
            raise SyncvizError(
                f"{shown} field weight_map must be an object of tensor name -> shard file,"
                f" got {got}",
                fix=_INDEX_FIX,
            )
        for name, listed in weight_map.items():
            if not isinstance(listed, str):
                raise SyncvizError(
                    f"{shown} field weight_map[{name!r}] must be a shard file name, got"
                    f" {type(listed).__name__} {str(listed)[:40]}",
                    fix=_INDEX_FIX,
                )
        return weight_map

    def _shard(self, listed: str, field: str) -> TensorFile:
        """The shard file named ``listed`` (by ``field``), which must lie inside the folder."""
        pure = PurePosixPath(listed)
        if not listed or "\x00" in listed or pure.is_absolute() or ".." in pure.parts:
            raise SyncvizError(
                f"{field} = {listed!r} leads outside the checkpoint folder {str(self.folder)!r}",
                fix="list each shard by its file name inside the checkpoint folder",
            )
        path = self.folder / pure
        try:
            real = path.resolve()
            base = self.folder.resolve()
        except (OSError, RuntimeError) as err:  # a symlink loop
            raise SyncvizError(
                f"{field} = {listed!r} cannot be resolved ({err})",
                fix="replace the link with the shard file itself",
            ) from None
        # A Hugging Face cache snapshot links each file to ../../blobs/<hash>.
        roots = [base] + ([base.parent.parent / "blobs"] if base.parent.name == "snapshots" else [])
        if not any(real.is_relative_to(root) for root in roots):
            raise SyncvizError(
                f"{field} = {listed!r} leads outside the checkpoint folder"
                f" {str(self.folder)!r} (to {str(real)!r})",
                fix="copy the shard into the checkpoint folder instead of linking to it",
            )
        if not os.path.lexists(path):
            raise SyncvizError(
                f"checkpoint shard {str(path)!r} listed in the index is missing",
                fix="copy every model-*.safetensors shard into the folder",
            )
        return TensorFile(
            path,
            "checkpoint shard",
            changed_fix=_CHANGED_FIX,
            fix="pass a checkpoint saved with safetensors",
        )

    def read(self, name: str) -> torch.Tensor:
        """One checkpoint tensor by its Hugging Face name."""
        file = self.files.get(name)
        if file is None:
            raise SyncvizError(
                f"the reference checkpoint has no tensor {name!r}",
                fix=f"check that {str(self.folder)!r} is the checkpoint the dump came from",
            )
        return file.read(name)

    def global_tensor(self, kind: str, layer: int | None) -> torch.Tensor:
        """The global tensor of ``kind`` (at ``layer``) in the oracle's layout."""
        parts = self.global_parts(kind, layer)
        whole = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if kind.startswith("experts_"):
            return whole.view(self.spec.num_experts, -1, *whole.shape[1:])
        return whole

    def global_parts(self, kind: str, layer: int | None) -> list[torch.Tensor]:
        """The checkpoint tensors whose concatenation along the first dimension is
        :meth:`global_tensor` (experts: each expert's in turn), read but not joined: a
        reader that needs only their rows need not copy them into one tensor."""
        templates = self.names.get(kind)
        if templates is None:
            raise SyncvizError(
                f"no Hugging Face names known for {kind!r} of family {self.spec.family!r}",
                fix="add them to syncviz/oracle/hf_names.py",
            )
        fields = {} if layer is None else {"i": layer}
        if kind == "lm_head" and self.spec.tie_word_embeddings:
            templates = self.names["embed"]
        if kind.startswith("experts_") and self.spec.family in HF_FUSED_EXPERTS:
            fused = from_fused_experts(kind, self.read(templates[0].format(**fields)))
            return list(fused.unbind(0))  # one part per expert, as for per-expert tensors
        if kind.startswith("experts_"):
            return [
                self.read(t.format(e=e, **fields))
                for e in range(self.spec.num_experts)
                for t in templates
            ]
        return [self.read(t.format(**fields)) for t in templates]
