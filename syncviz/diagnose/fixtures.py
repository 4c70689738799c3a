"""Generated checkpoints and rank dumps, to try a diagnosis without a GPU (and to test it).

A random bf16 Hugging Face checkpoint at any spec's shapes, and vLLM rank dumps
cut from it by the layout rules, with known bugs planted on request.

>>> import tempfile
>>> spec = tiny_spec("qwen2")
>>> ref, dump = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> sorted(write_checkpoint(spec, ref))[:2]
['lm_head.weight', 'model.embed_tokens.weight']
>>> write_dumps(spec, ref, dump, tp=2)
>>> sorted(p.name for p in __import__("pathlib").Path(dump).iterdir())
['tp0.safetensors', 'tp1.safetensors']
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from syncviz.diagnose.checkpoint import checkpoint_shapes
from syncviz.diagnose.dumps import rank_file
from syncviz.diagnose.reference import Reference
from syncviz.engines import DEFAULT_ENGINE
from syncviz.errors import SyncvizError
from syncviz.families import FAMILY, FamilyInfo
from syncviz.families.record import ROUTER_BIAS_WHEN
from syncviz.families.registry import derived
from syncviz.oracle import Box, map_pieces, model_layout
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import ModelSpec

BUGS = (
    "shard0",
    "swap_kv",
    "rows",
    "swap_experts",
    "exchange",
    "tp0",
    "missing",
    "noise",
    "few_shared",
)
"""Bugs write_dumps can plant in one kind (at layer 0, and in the globals)."""

EXCHANGED = {"q_norm": "k_norm", "k_norm": "q_norm"}
"""The kind whose data the ``exchange`` bug writes in place of each kind's own."""

_TINY: Mapping[str, ModelSpec] = derived(
    lambda infos: {f.name: ModelSpec(family=f.name, **f.tiny) for f in infos if f.tiny}
)
"""The small spec each family file declares (one with every feature of the real ones)."""


def tiny_spec(family: str) -> ModelSpec:
    """A small spec of ``family`` whose layout has every feature of the real one."""
    return _TINY[family]


def hf_config(spec: ModelSpec) -> dict:
    """The config.json of ``spec`` as Hugging Face writes it (keys from the family record).

    >>> config = hf_config(tiny_spec("qwen3-moe"))
    >>> config["architectures"], config["num_experts"], config["head_dim"]
    (['Qwen3MoeForCausalLM'], 4, 4)
    """
    info = FAMILY[spec.family]
    config: dict = {
        "_name_or_path": spec.name,
        "architectures": [info.architecture],
        "model_type": info.model_type,
        "num_hidden_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_query_groups,
        "intermediate_size": spec.ffn_hidden_size * (2 if info.fused_ffn else 1),
        "vocab_size": spec.vocab_size,
        info.head_dim_key: spec.head_dim,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": "bfloat16",
    }
    if isinstance(info.qkv_bias, str):
        config[info.qkv_bias] = spec.qkv_bias
    if info.is_moe:
        config[info.experts_keys[0]] = spec.num_experts
        config[info.moe_ffn_key] = spec.moe_ffn_hidden_size
    if info.shared_expert:
        config["shared_expert_intermediate_size"] = spec.shared_expert_ffn_hidden_size
    config.update(_stack_and_mla_keys(spec, info))
    if info.mla:
        del config[info.head_dim_key]  # MLA's head sizes are its own keys
    return config


def _stack_and_mla_keys(spec: ModelSpec, info: FamilyInfo) -> dict:
    """The config.json keys of dense first layers, counted shared experts, the router bias
    and MLA, as the family record names them (the inverse of ``spec``'s reader)."""
    config: dict = dict(info.hf_extra)
    if info.dense_first_key:
        config[info.dense_first_key] = spec.first_k_dense_replace
    if info.shared_experts_key:
        config[info.shared_experts_key] = (
            spec.shared_expert_ffn_hidden_size // spec.moe_ffn_hidden_size
        )
    if info.router_bias:
        key, value = ROUTER_BIAS_WHEN
        config[key] = value if spec.router_bias else "greedy"
    if info.qk_norm_key:
        config[info.qk_norm_key] = spec.use_qk_norm
    if spec.mtp_layers:
        config[info.mtp_key] = spec.mtp_layers
    if info.mla:
        config["q_lora_rank"] = spec.q_lora_rank or None
        for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            config[key] = getattr(spec, key)
    return config


def write_checkpoint(
    spec: ModelSpec,
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    shards: int = 1,
) -> list[str]:
    """Write a random checkpoint of ``spec`` (config.json + safetensors); return its names.

    ``shards`` > 1 writes ``model-0000k-of-0000n.safetensors`` and the index.
    """
    from safetensors.torch import save_file

    if spec.family not in _TINY:
        raise SyncvizError(
            f"no generator for family {spec.family!r}",
            fix="use a spec of one of " + ", ".join(_TINY),
        )
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(hf_config(spec), indent=1), encoding="utf-8")
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        name: torch.randn(shape, generator=gen).to(dtype)
        for name, shape in checkpoint_shapes(spec).items()
    }
    ordered = sorted(tensors)
    if shards <= 1:
        save_file(tensors, str(root / "model.safetensors"))
        return ordered
    per = math.ceil(len(ordered) / shards)
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in ordered[k * per : (k + 1) * per]}
        save_file(part, str(root / file))
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return ordered


def local_tensor(glob: torch.Tensor, index: RegionMap) -> torch.Tensor:
    """What a rank holds of ``glob`` under ``index``, padding as zeros (box by box).

    >>> from syncviz.oracle.slicing import cols_map
    >>> local_tensor(torch.arange(8.0).view(2, 4), cols_map((2, 4), 1, 2)).tolist()
    [[2.0, 3.0], [6.0, 7.0]]
    """
    parts = []
    for piece in map_pieces(index, tuple(glob.shape)) or ():
        if isinstance(piece, Box):
            part = glob[tuple(slice(a, b) for a, b in zip(piece.start, piece.stop, strict=True))]
            if piece.order is not None:
                part = part.permute(piece.order)
            parts.append(part.reshape(-1))
        else:
            parts.append(torch.zeros(piece.numel, dtype=glob.dtype))
    return torch.cat(parts).view(index.shape)


def vllm_name(key: str, naming: str = "vllm") -> str:
    """The name a dump uses for oracle key ``key``: ``vllm`` (as vLLM names its parameters),
    ``chatlearn`` (with the wrapper's ``model.`` prefix), ``routed`` (current vLLM's
    ``experts.routed_experts.`` nesting)."""
    if naming == "chatlearn":
        return key
    name = key[len("model.") :]
    if naming == "routed":
        name = name.replace(".mlp.experts.w", ".mlp.experts.routed_experts.w")
    return name


def write_dumps(
    spec: ModelSpec,
    reference: str | Path,
    folder: str | Path,
    *,
    tp: int,
    pp: int = 1,
    bugs: Mapping[str, str] | None = None,
    swap_files: bool = False,
    naming: str = "vllm",
    layers: list[int] | None = None,
    engine: str = DEFAULT_ENGINE,
    ep: int = 1,
    expert_placement: str = "linear",
    dp_attention: int = 1,
) -> None:
    """Write every vLLM rank's dump of the checkpoint in ``reference``, as the layout rules cut it.

    ``bugs`` maps a parameter kind to one of :data:`BUGS`, planted at layer 0 (or
    in that global parameter); ``swap_files`` exchanges the files of tp 0 and tp 1.
    ``engine`` is the engine whose names and per-rank layout the dumps take, with its
    expert parallel ``ep`` (placed ``expert_placement``) and DP attention ``dp_attention``.
    """
    from safetensors.torch import save_file

    ref = Reference(reference)
    bugs = dict(bugs or {})
    for kind, bug in bugs.items():
        if bug not in BUGS:
            raise SyncvizError(
                f"unknown bug {bug!r} for {kind}", fix="use one of " + ", ".join(BUGS)
            )
    placement: dict[str, Any] = {"expert_placement": expert_placement, "dp_attention": dp_attention}
    dst = Parallel(tp, pp, ep, engine=engine, **placement)
    layout = model_layout(spec, Parallel(tp=1), dst, layers=layers, include_globals=True)
    files: dict[tuple[int, int], dict[str, torch.Tensor]] = {
        (p, t): {} for p in range(pp) for t in range(tp)
    }
    for param in layout.params:
        bug = bugs.get(param.kind) if param.layer in (None, 0) else None
        # ``exchange``: every rank holds another kind's data in this one's place.
        source = EXCHANGED[param.kind] if bug == "exchange" else param.kind
        glob = ref.global_tensor(source, param.layer)
        local = [local_tensor(glob, t.index) for t in param.dst]
        if bug and bug != "exchange":
            local = _plant(bug, param, glob, local, spec, tp)
        for t, tensor in zip(param.dst, local, strict=True):
            if tensor is not None:
                files[(t.pp, t.tp)][vllm_name(param.key, naming)] = tensor.contiguous()
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    names = {k: rank_file(k[0], k[1], pp) for k in files}
    if swap_files:
        names[(0, 0)], names[(0, 1)] = names[(0, 1)], names[(0, 0)]
    for key, tensors in files.items():
        save_file(tensors, str(root / names[key]))


def planted(family: str, *, tp: int, bugs: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(reference, dump)``: ``family``'s tiny checkpoint and its ``tp`` vLLM ranks' dumps
    with ``bugs`` planted (:func:`write_dumps`), each in a new temporary folder.

    >>> ref, dump = planted("qwen2", tp=2, bugs={"lm_head": "missing"})
    >>> sorted(p.name for p in Path(dump).iterdir())[-1], (Path(ref) / "config.json").exists()
    ('tp1.safetensors', True)
    """
    spec = tiny_spec(family)
    reference, dump = tempfile.mkdtemp(), tempfile.mkdtemp()
    write_checkpoint(spec, reference)
    write_dumps(spec, reference, dump, tp=tp, bugs=bugs)
    return reference, dump


def _plant(bug, param, glob, local, spec: ModelSpec, tp: int) -> list[torch.Tensor | None]:
    if bug in FIELD_BUGS:
        return FIELD_BUGS[bug](param, local, spec)
    out: list[torch.Tensor | None] = list(local)
    if bug == "shard0":  # a loader that defaults tp_rank to 0
        return [local[0].clone() for _ in local]
    if bug == "swap_kv":  # K and V heads exchanged on every rank
        hd = spec.head_dim
        q_rows = spec.num_attention_heads // tp * hd
        kv_rows = max(1, spec.num_query_groups // tp) * hd
        for r, t in enumerate(local):
            k = t[q_rows : q_rows + kv_rows].clone()
            v = t[q_rows + kv_rows : q_rows + 2 * kv_rows].clone()
            swapped = t.clone()
            swapped[q_rows : q_rows + kv_rows] = v
            swapped[q_rows + kv_rows : q_rows + 2 * kv_rows] = k
            out[r] = swapped
        return out
    if bug == "rows":  # a row-parallel weight split by rows instead of columns
        per = glob.shape[0] // tp
        return [glob[r * per : (r + 1) * per].reshape(t.shape).clone() for r, t in enumerate(local)]
    if bug == "swap_experts":  # experts 0 and 1 exchanged on tp 1
        t = local[1].clone()
        t[[0, 1]] = t[[1, 0]]
        out[1] = t
        return out
    if bug == "tp0":  # tp 1 holds tp 0's shard
        out[1] = local[0].clone()
        return out
    if bug == "missing":
        out[1] = None
        return out
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(local[1].shape, generator=gen).to(local[1].dtype)
    if bug == "few_shared":  # wrong data that shares a few elements with the right data
        flat = noise.view(-1)
        flat[::5] = local[1].reshape(-1)[::5]
    out[1] = noise
    return out


# Bug classes met in the field (/work/shared/FAMILIES.md, "Weight-sync bugs met in the field").


def _swap_halves(param, local: list[torch.Tensor], spec: ModelSpec) -> list[torch.Tensor | None]:
    """Gate and up exchanged on every rank: in each expert of a w13, or in a fused gate_up."""
    out: list[torch.Tensor | None] = []
    for t in local:
        half = t.shape[-2] // 2
        out.append(torch.cat([t[..., half:, :], t[..., :half, :]], dim=-2).contiguous())
    return out


def _local_experts(param, local: list[torch.Tensor], spec: ModelSpec) -> list[torch.Tensor | None]:
    """Experts named by their local ids under a trainer EP of 2: every EP rank writes experts
    0..E/2-1, the last one's (global E/2..E-1) win; experts E/2.. are never written and keep
    what the engine held (here the checkpoint's)."""
    out: list[torch.Tensor | None] = []
    for t in local:
        half = t.shape[0] // 2
        wrong = t.clone()
        wrong[:half] = t[half : 2 * half]
        out.append(wrong)
    return out


def _regroup_as_qkv(param, local: list[torch.Tensor], spec: ModelSpec) -> list[torch.Tensor | None]:
    """A 1-D tensor (a fused norm) given the QKV regroup on every rank: cut in query groups,
    each cut q : k : v as heads per group : 1 : 1, then all q parts, all k parts, all v parts."""
    groups, per = spec.num_query_groups, spec.num_attention_heads // spec.num_query_groups
    n = local[0].numel()
    if n % (groups * (per + 2)):
        raise SyncvizError(
            f"{param.key} ({n} elements) cannot be cut in {groups} groups of {per} + 2 parts",
            fix="plant regroup_qkv in a 1-D tensor of a spec whose sizes allow it (tiny qwen2)",
        )
    unit = n // groups // (per + 2)
    parts = [t.view(groups, per + 2, unit) for t in local]
    return [
        torch.cat([p[:, :per].reshape(-1), p[:, per:].transpose(0, 1).reshape(-1)]) for p in parts
    ]


FIELD_BUGS = {
    "swap_halves": _swap_halves,
    "local_experts": _local_experts,
    "regroup_qkv": _regroup_as_qkv,
}
BUGS += tuple(FIELD_BUGS)
