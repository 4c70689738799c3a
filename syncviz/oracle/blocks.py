"""Global tensors of each parameter kind: their shape and their logical blocks.

Every parameter has one global tensor in the Hugging Face / unsharded vLLM
layout (fused QKV is ``[Q heads; K heads; V heads]``, fused gate/up is
``[gate; up]``, experts are stacked on dim 0). Element ids are row-major
positions in it. Blocks name its parts ("Q head 5", "expert 12 gate") and give
each a family for colouring, so any id decodes to words.

>>> from syncviz.spec import ModelSpec
>>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
>>> global_shape("qkv", spec)
(16, 8)
>>> [b.label for b in blocks("qkv", spec)][:5]
['Q head 0', 'Q head 1', 'Q head 2', 'Q head 3', 'K head 0']
>>> decode(blocks("qkv", spec), 8 * 9 + 3)
'K head 0 row 1 col 3'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from syncviz.errors import SyncvizError
from syncviz.geometry import unravel
from syncviz.oracle.index import Box
from syncviz.spec import ModelSpec

LAYER_KINDS: tuple[str, ...] = (
    "input_norm",
    "qkv",
    "qkv_bias",
    "q_norm",
    "k_norm",
    "o_proj",
    "o_proj_bias",
    "sinks",
    "post_attention_norm",
    "gate_up",
    "down",
    "router",
    "router_bias",
    "experts_w13",
    "experts_w13_bias",
    "experts_w2",
    "experts_w2_bias",
    "shared_gate_up",
    "shared_down",
    "shared_expert_gate",
    *(
        # Multi-head latent attention (MLA): what replaces qkv.
        "q_proj",
        "fused_qkv_a",
        "q_a_norm",
        "q_b_proj",
        "kv_a",
        "kv_a_norm",
        "kv_b_proj",
    ),
    # Norms on the attention and MLP outputs (Gemma-3's four norms a layer).
    "attn_out_norm",
    "ffn_out_norm",
)
"""Per-layer parameter kinds (a layer lists those it has in ``layout.layer_kinds`` order)."""

MTP_KINDS: tuple[str, ...] = ("mtp_enorm", "mtp_hnorm", "mtp_eh_proj", "mtp_norm", "mtp_head")
"""What a multi-token-prediction layer adds to a decoder layer: its norms of the embedding
and of the hidden state, the projection of [embedding; hidden], its head's norm and head."""

LAYER_KINDS = LAYER_KINDS + MTP_KINDS

MLA_HEAD_KINDS = frozenset({"q_proj", "q_b_proj", "kv_b_proj"})
"""MLA's up projections: rows of heads, each head its own parts (nope/rope or k_nope/v)."""

GLOBAL_KINDS: tuple[str, ...] = ("embed", "final_norm", "lm_head")
"""Parameters outside the layers."""

KINDS: tuple[str, ...] = GLOBAL_KINDS + LAYER_KINDS

BLOCK_FAMILIES: tuple[str, ...] = (
    "q",
    "k",
    "v",
    "o",
    "gate",
    "up",
    "down",
    "expert",
    "vocab",
    "norm",
    "router",
    "embedding",
    "hidden",
    "padding",
)
"""Colour keys of blocks ("embedding" / "hidden": the two input halves of an MTP layer's
eh_proj); "padding" is for id -1, which belongs to no block."""

DIM_NAMES = {1: ("elements",), 2: ("rows", "cols"), 3: ("experts", "rows", "cols")}


@dataclass(frozen=True, slots=True)
class Block:
    """A named part of a global tensor.

    ``unit``/``index``/``part`` build the label ("Q head" 5 -> "Q head 5";
    "expert" 12 "gate" -> "expert 12 gate"); ``family`` is the colour key.

    >>> Block("expert", "expert", Box((3, 0), (4, 8)), index=3, part="up").label
    'expert 3 up'
    """

    unit: str
    family: str
    box: Box
    index: int | None = None
    part: str | None = None

    @property
    def label(self) -> str:
        text = self.unit if self.index is None else f"{self.unit} {self.index}"
        return f"{text} {self.part}" if self.part else text

    def contains(self, coords: Sequence[int]) -> bool:
        return all(
            a <= c < b for a, b, c in zip(self.box.start, self.box.stop, coords, strict=True)
        )


def global_shape(kind: str, spec: ModelSpec) -> tuple[int, ...]:
    """Shape of the global (unsharded) tensor of ``kind``."""
    h, hd = spec.hidden_size, spec.head_dim
    nh, ng = spec.num_attention_heads, spec.num_query_groups
    qkv_rows = (nh + 2 * ng) * hd
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (spec.vocab_size, h),
        "lm_head": (spec.vocab_size, h),
        "final_norm": (h,),
        "input_norm": (h,),
        "post_attention_norm": (h,),
        "attn_out_norm": (h,),
        "ffn_out_norm": (h,),
        "qkv": (qkv_rows, h),
        "qkv_bias": (qkv_rows,),
        "q_norm": (hd,),
        "k_norm": (hd,),
        "o_proj": (h, nh * hd),
        "gate_up": (2 * spec.ffn_hidden_size, h),
        "down": (h, spec.ffn_hidden_size),
        "router": (spec.num_experts, h),
        "experts_w13": (spec.num_experts, 2 * spec.moe_ffn_hidden_size, h),
        "experts_w2": (spec.num_experts, h, spec.moe_ffn_hidden_size),
        "shared_gate_up": (2 * spec.shared_expert_ffn_hidden_size, h),
        "shared_down": (h, spec.shared_expert_ffn_hidden_size),
        "shared_expert_gate": (1, h),
    }
    shapes.update(_biased_shapes(spec))
    shapes.update(_mla_shapes(spec))
    shapes.update(
        {"mtp_enorm": (h,), "mtp_hnorm": (h,), "mtp_norm": (h,), "mtp_eh_proj": (h, 2 * h)}
    )
    shapes["mtp_head"] = shapes["lm_head"]
    if kind not in shapes:
        raise SyncvizError(
            f"parameter kind {kind!r} is not known", fix="use one of " + ", ".join(KINDS)
        )
    return shapes[kind]


def _biased_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of the attention-sink models' kinds (gpt-oss): biases and one sink per head."""
    h, n_experts, inter = spec.hidden_size, spec.num_experts, spec.moe_ffn_hidden_size
    return {
        "o_proj_bias": (h,),
        "sinks": (spec.num_attention_heads,),
        "router_bias": (n_experts,),
        "experts_w13_bias": (n_experts, 2 * inter),
        "experts_w2_bias": (n_experts, h),
    }


def _biased_blocks(kind: str, shape: tuple[int, ...]) -> tuple[Block, ...] | None:
    """Blocks of the attention-sink models' kinds; None for any other kind.

    A sink is one number per query head ("Q head 5 sink"); an expert's fc1 bias has a
    gate and an up half like its weight ("expert 3 gate col 7" in words).
    """
    if kind == "sinks":
        return tuple(Block("Q head", "q", Box((h,), (h + 1,)), h, "sink") for h in range(shape[0]))
    if kind == "experts_w13_bias":
        half = shape[1] // 2
        return tuple(
            Block("expert", "expert", Box((e, lo), (e + 1, lo + half)), e, part)
            for e in range(shape[0])
            for part, lo in (("gate", 0), ("up", half))
        )
    if kind == "experts_w2_bias":
        return tuple(
            Block("expert", "expert", Box((e, 0), (e + 1, shape[1])), e, "down bias")
            for e in range(shape[0])
        )
    single = {"o_proj_bias": ("o_proj bias", "o"), "router_bias": ("router bias", "router")}
    if kind in single:
        unit, family = single[kind]
        return (Block(unit, family, _whole(shape)),)


def _mla_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """MLA's global shapes (vLLM's, as in the Hugging Face checkpoint)."""
    h, nh = spec.hidden_size, spec.num_attention_heads
    q_lora, kv_lora, rope = spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim
    return {
        "q_proj": (nh * spec.qk_head_dim, h),
        # vLLM fuses q_a_proj and kv_a_proj_with_mqa into one replicated weight.
        "fused_qkv_a": (q_lora + kv_lora + rope, h),
        "q_a_norm": (q_lora,),
        "q_b_proj": (nh * spec.qk_head_dim, q_lora),
        "kv_a": (kv_lora + rope, h),
        "kv_a_norm": (kv_lora,),
        "kv_b_proj": (nh * (spec.qk_nope_head_dim + spec.v_head_dim), kv_lora),
    }


def mla_head_parts(kind: str, spec: ModelSpec) -> tuple[tuple[str, str, int], ...]:
    """``(part, colour, rows)`` of one head of an MLA up projection, in row order.

    >>> from syncviz.spec import ModelSpec
    >>> spec = ModelSpec("m", "deepseek-v3", 1, 8, 2, 2, 8, 64, num_experts=2,
    ...                  moe_ffn_hidden_size=4, kv_lora_rank=4, qk_nope_head_dim=3,
    ...                  qk_rope_head_dim=2, v_head_dim=5)
    >>> mla_head_parts("kv_b_proj", spec)
    (('k_nope', 'k', 3), ('v', 'v', 5))
    """
    if kind == "kv_b_proj":
        return (("k_nope", "k", spec.qk_nope_head_dim), ("v", "v", spec.v_head_dim))
    return (("nope", "q", spec.qk_nope_head_dim), ("rope", "q", spec.qk_rope_head_dim))


def _mla_blocks(kind: str, spec: ModelSpec, shape: tuple[int, ...]) -> tuple[Block, ...] | None:
    """Blocks of the MLA kinds (None for any other kind)."""
    if kind in MLA_HEAD_KINDS:
        unit = "kv_b head" if kind == "kv_b_proj" else "Q head"
        parts = mla_head_parts(kind, spec)
        out, row = [], 0
        for head in range(spec.num_attention_heads):
            for part, family, rows in parts:
                out.append(Block(unit, family, _rows(shape, row, row + rows), head, part))
                row += rows
        return tuple(out)
    if kind in ("fused_qkv_a", "kv_a"):
        q_rows = spec.q_lora_rank if kind == "fused_qkv_a" else 0
        kv_rows = spec.kv_lora_rank + spec.qk_rope_head_dim
        # kv_a_proj_with_mqa is [kv_lora latent rows; rope rows] (one k rope head shared).
        kv = Block("kv_a", "k", _rows(shape, q_rows, q_rows + kv_rows))
        return ((Block("q_a", "q", _rows(shape, 0, q_rows)),) if q_rows else ()) + (kv,)
    return None


def _rows(shape: Sequence[int], a: int, b: int) -> Box:
    """Rows a..b-1 (dim 0) with every other dim whole."""
    return Box((a,) + (0,) * (len(shape) - 1), (b, *shape[1:]))


def _cols(shape: tuple[int, int], a: int, b: int) -> Box:
    return Box((0, a), (shape[0], b))


def _whole(shape: Sequence[int]) -> Box:
    return Box((0,) * len(shape), tuple(shape))


def blocks(kind: str, spec: ModelSpec) -> tuple[Block, ...]:
    """The logical blocks of a kind's global tensor; they tile it exactly."""
    shape = global_shape(kind, spec)
    hd, nh, ng = spec.head_dim, spec.num_attention_heads, spec.num_query_groups
    biased = _biased_blocks(kind, shape)
    if biased is not None:
        return biased
    mla = _mla_blocks(kind, spec, shape)
    if mla is not None:
        return mla
    if kind in ("qkv", "qkv_bias"):
        out = [Block("Q head", "q", _rows(shape, h * hd, (h + 1) * hd), h) for h in range(nh)]
        for unit, family, base in (("K head", "k", nh), ("V head", "v", nh + ng)):
            out += [
                Block(unit, family, _rows(shape, (base + g) * hd, (base + g + 1) * hd), g)
                for g in range(ng)
            ]
        return tuple(out)
    if kind == "mtp_eh_proj":  # its input is [embedding; hidden state]
        h = shape[0]
        return (
            Block("embedding", "embedding", _cols(shape, 0, h)),  # type: ignore[arg-type]
            Block("hidden", "hidden", _cols(shape, h, 2 * h)),  # type: ignore[arg-type]
        )
    if kind == "o_proj":
        return tuple(
            Block("head", "o", _cols(shape, h * hd, (h + 1) * hd), h)  # type: ignore[arg-type]
            for h in range(nh)
        )
    if kind in ("gate_up", "shared_gate_up"):
        half = shape[0] // 2
        prefix = "shared " if kind.startswith("shared") else ""
        return (
            Block(prefix + "gate", "gate", _rows(shape, 0, half)),
            Block(prefix + "up", "up", _rows(shape, half, 2 * half)),
        )
    if kind == "experts_w13":
        half = shape[1] // 2
        out = []
        for e in range(shape[0]):
            for part, lo in (("gate", 0), ("up", half)):
                box = Box((e, lo, 0), (e + 1, lo + half, shape[2]))
                out.append(Block("expert", "expert", box, e, part))
        return tuple(out)
    if kind == "experts_w2":
        return tuple(
            Block("expert", "expert", Box((e, 0, 0), (e + 1, *shape[1:])), e, "down")
            for e in range(shape[0])
        )
    single = {
        "embed": ("vocab", "vocab"),
        "lm_head": ("vocab", "vocab"),
        "final_norm": ("final norm", "norm"),
        "input_norm": ("input norm", "norm"),
        "post_attention_norm": ("post-attention norm", "norm"),
        "attn_out_norm": ("attention-output norm", "norm"),
        "ffn_out_norm": ("MLP-output norm", "norm"),
        # One norm of head_dim elements, applied to every head (not one row per head).
        "q_norm": ("q norm", "norm"),
        "k_norm": ("k norm", "norm"),
        "down": ("down", "down"),
        "shared_down": ("shared down", "down"),
        "router": ("router", "router"),
        "shared_expert_gate": ("shared expert gate", "router"),
        "router_bias": ("router bias", "router"),
        "q_a_norm": ("q_a norm", "norm"),
        "kv_a_norm": ("kv_a norm", "norm"),
        "mtp_enorm": ("MTP embedding norm", "norm"),
        "mtp_hnorm": ("MTP hidden norm", "norm"),
        "mtp_norm": ("MTP head norm", "norm"),
        "mtp_head": ("vocab", "vocab"),
    }
    unit, family = single[kind]
    return (Block(unit, family, _whole(shape)),)


def find_block(blocks_: Sequence[Block], coords: Sequence[int]) -> Block:
    """The block holding global coordinates ``coords``."""
    for block in blocks_:
        if block.contains(coords):
            return block
    raise SyncvizError(f"coordinates {tuple(coords)} lie in no block", fix="check the global shape")


def block_numbers(blocks_: Sequence[Block], ids: torch.Tensor) -> torch.Tensor:
    """For each id, the position of its block in ``blocks_`` (-1 for padding or a bad id).

    Vectorized, for colouring whole tensors.

    >>> from syncviz.spec import ModelSpec
    >>> spec = ModelSpec("tiny", "llama-mcore", 2, 8, 4, 2, 4, 70)
    >>> block_numbers(blocks("qkv", spec), torch.tensor([0, 17, 64, 127, -1])).tolist()
    [0, 1, 4, 7, -1]
    """
    shape = _shape_of(blocks_)
    flat = ids.reshape(-1).to(torch.int64)
    out = torch.full_like(flat, -1)
    ok = (flat >= 0) & (flat < math.prod(shape))
    coords, rest = [], flat.clamp(min=0)
    for n in reversed(shape):
        coords.insert(0, rest % n)
        rest = rest // n
    for number, block in enumerate(blocks_):
        inside = ok.clone()
        for c, a, b in zip(coords, block.box.start, block.box.stop, strict=True):
            inside &= (c >= a) & (c < b)
        out[inside] = number
    return out.view(ids.shape)


def pad_word(blocks_: Sequence[Block]) -> str:
    """What id -1 is called in a parameter: vocab "padding", or "zeros" where a tensor
    without padding rows must hold zeros (a bias held on TP rank 0 only).

    >>> pad_word([Block("vocab", "vocab", Box((0,), (4,)))]), pad_word([])
    ('padding', 'zeros')
    """
    return "padding" if any(b.family == "vocab" for b in blocks_) else "zeros"


def decode(blocks_: Sequence[Block], element_id: int) -> str:
    """One id in words: its block and its row/col inside that block (-1 is padding)."""
    if element_id == -1:
        return "padding"
    shape = _shape_of(blocks_)
    coords = unravel(element_id, shape)
    block = find_block(blocks_, coords)
    names = DIM_NAMES[len(coords)]
    words = [block.label]
    for d, c in enumerate(coords):
        if block.box.stop[d] - block.box.start[d] > 1 or (d > 0 and len(coords) > 1):
            words.append(f"{names[d][:-1]} {c - block.box.start[d]}")
    return " ".join(words)


def _shape_of(blocks_: Sequence[Block]) -> tuple[int, ...]:
    """The global shape the blocks tile (their common bounding box)."""
    ndim = blocks_[0].box.ndim
    return tuple(max(b.box.stop[d] for b in blocks_) for d in range(ndim))
