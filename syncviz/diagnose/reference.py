"""The reference: a Hugging Face checkpoint read lazily, one global tensor at a time.

Each vLLM parameter's global tensor (the oracle's layout: fused QKV is
``[Q; K; V]``, fused gate/up is ``[gate; up]``, routed experts stacked on dim 0)
is assembled from the checkpoint's own tensors only when asked for; nothing is
read at open time but the headers.

>>> import json, tempfile, pathlib, torch
>>> from safetensors.torch import save_file
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"],
...     "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
...     "num_key_value_heads": 1, "intermediate_size": 4, "vocab_size": 64}))
>>> names = {"q_proj": (8, 8), "k_proj": (4, 8), "v_proj": (4, 8)}
>>> save_file({f"model.layers.0.self_attn.{n}.weight": torch.ones(s) for n, s in names.items()},
...           str(folder / "model.safetensors"))
>>> ref = Reference(folder)
>>> ref.spec.num_query_groups, tuple(ref.global_tensor("qkv", 0).shape)
(1, (16, 8))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from syncviz.errors import SyncvizError
from syncviz.oracle.hf_names import HF_NAMES, foreign_tensor
from syncviz.spec import ModelSpec


class Reference:
    """A Hugging Face checkpoint folder: its spec and its tensors, read on demand.

    ``folder`` holds ``config.json`` and ``model.safetensors``, or shards listed in
    ``model.safetensors.index.json``. Only headers are read when it opens.
    """

    def __init__(self, folder: str | Path) -> None:
        from safetensors import safe_open

        self._safe_open = safe_open
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SyncvizError(
                f"reference {str(self.folder)!r} is not a folder",
                fix="pass the Hugging Face checkpoint folder (config.json + *.safetensors)",
            )
        self.spec = ModelSpec.from_hf_config(self.folder)
        self.files = self._weight_map()
        self.names = HF_NAMES[self.spec.family]
        foreign = foreign_tensor(self.spec.family, self.files)
        if foreign is not None:  # a relabelled config would drop these tensors: no false OK
            raise SyncvizError(
                f"the reference holds {foreign[0]!r}, a tensor of family {foreign[1]},"
                f" which family {self.spec.family} (its config.json) does not read",
                fix="use the checkpoint's own config.json (architectures, model_type)",
            )

    def _weight_map(self) -> dict[str, Path]:
        index = self.folder / "model.safetensors.index.json"
        single = self.folder / "model.safetensors"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SyncvizError(
                    f"{str(index)!r} has no valid 'weight_map'",
                    fix="regenerate the index with save_pretrained, or remove it",
                ) from None
            files = {name: self.folder / str(f) for name, f in weight_map.items()}
            for path in set(files.values()):
                if not path.is_file():
                    raise SyncvizError(
                        f"checkpoint shard {str(path)!r} listed in the index is missing",
                        fix="copy every model-*.safetensors shard into the folder",
                    )
            return files
        if single.is_file():
            return {name: single for name in self._keys(single)}
        raise SyncvizError(
            f"reference {str(self.folder)!r} holds no model.safetensors or"
            " model.safetensors.index.json",
            fix="pass a Hugging Face checkpoint folder saved as safetensors",
        )

    def _keys(self, path: Path) -> list[str]:
        try:
            with self._safe_open(str(path), "pt") as f:
                return list(f.keys())
        except Exception as err:  # safetensors raises its own error types
            raise SyncvizError(
                f"{str(path)!r} is not a readable safetensors file ({err})",
                fix="pass a checkpoint saved with safetensors",
            ) from None

    def read(self, name: str) -> torch.Tensor:
        """One checkpoint tensor by its Hugging Face name."""
        path = self.files.get(name)
        if path is None:
            raise SyncvizError(
                f"the reference checkpoint has no tensor {name!r}",
                fix=f"check that {str(self.folder)!r} is the checkpoint the dump came from",
            )
        with self._safe_open(str(path), "pt") as f:
            return f.get_tensor(name)

    def global_tensor(self, kind: str, layer: int | None) -> torch.Tensor:
        """The global tensor of ``kind`` (at ``layer``) in the oracle's layout."""
        templates = self.names.get(kind)
        if templates is None:
            raise SyncvizError(
                f"no Hugging Face names known for {kind!r} of family {self.spec.family!r}",
                fix="add them to syncviz/oracle/hf_names.py",
            )
        fields = {} if layer is None else {"i": layer}
        if kind == "lm_head" and self.spec.tie_word_embeddings:
            templates = self.names["embed"]
        if kind.startswith("experts_"):
            per_expert: Callable[[int], torch.Tensor] = lambda e: torch.cat(  # noqa: E731
                [self.read(t.format(e=e, **fields)) for t in templates], dim=0
            )
            return torch.stack([per_expert(e) for e in range(self.spec.num_experts)])
        parts = [self.read(t.format(**fields)) for t in templates]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
