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
from syncviz.spec import ModelSpec

# HF checkpoint names of each family, per kind: the tensors to join, how (cat on
# dim 0, or per expert then stacked). ``{i}`` is the layer, ``{e}`` the expert.
_L = "model.layers.{i}."
_DENSE: dict[str, tuple[str, ...]] = {
    "embed": ("model.embed_tokens.weight",),
    "final_norm": ("model.norm.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": (_L + "input_layernorm.weight",),
    "post_attention_norm": (_L + "post_attention_layernorm.weight",),
    "qkv": tuple(_L + f"self_attn.{p}_proj.weight" for p in "qkv"),
    "qkv_bias": tuple(_L + f"self_attn.{p}_proj.bias" for p in "qkv"),
    "o_proj": (_L + "self_attn.o_proj.weight",),
    "gate_up": (_L + "mlp.gate_proj.weight", _L + "mlp.up_proj.weight"),
    "down": (_L + "mlp.down_proj.weight",),
}
_QWEN2_MOE = {
    **_DENSE,
    "router": (_L + "mlp.gate.weight",),
    "experts_w13": (
        _L + "mlp.experts.{e}.gate_proj.weight",
        _L + "mlp.experts.{e}.up_proj.weight",
    ),
    "experts_w2": (_L + "mlp.experts.{e}.down_proj.weight",),
    "shared_gate_up": (
        _L + "mlp.shared_expert.gate_proj.weight",
        _L + "mlp.shared_expert.up_proj.weight",
    ),
    "shared_down": (_L + "mlp.shared_expert.down_proj.weight",),
    "shared_expert_gate": (_L + "mlp.shared_expert_gate.weight",),
}
_MIXTRAL = {
    **_DENSE,
    "router": (_L + "block_sparse_moe.gate.weight",),
    # w1 is the gate (SiLU'd) projection, w3 the up projection, w2 the down projection.
    "experts_w13": (
        _L + "block_sparse_moe.experts.{e}.w1.weight",
        _L + "block_sparse_moe.experts.{e}.w3.weight",
    ),
    "experts_w2": (_L + "block_sparse_moe.experts.{e}.w2.weight",),
}
_QWEN_V1 = {
    "embed": ("transformer.wte.weight",),
    "final_norm": ("transformer.ln_f.weight",),
    "lm_head": ("lm_head.weight",),
    "input_norm": ("transformer.h.{i}.ln_1.weight",),
    "post_attention_norm": ("transformer.h.{i}.ln_2.weight",),
    "qkv": ("transformer.h.{i}.attn.c_attn.weight",),  # already [Q; K; V]
    "qkv_bias": ("transformer.h.{i}.attn.c_attn.bias",),
    "o_proj": ("transformer.h.{i}.attn.c_proj.weight",),
    # QWen v1: w2 is the SiLU-gated half, w1 the up half; vLLM fuses [w2; w1].
    "gate_up": ("transformer.h.{i}.mlp.w2.weight", "transformer.h.{i}.mlp.w1.weight"),
    "down": ("transformer.h.{i}.mlp.c_proj.weight",),
}
HF_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "llama-mcore": _DENSE,
    "llama-legacy": _DENSE,
    "qwen2": _DENSE,
    "qwen2-moe": _QWEN2_MOE,
    "mixtral": _MIXTRAL,
    "qwen-v1": _QWEN_V1,
}
"""Hugging Face checkpoint names per family and parameter kind."""


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
                fix="add them to syncviz/diagnose/reference.py",
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
