"""Properties of the oracle over random small valid models and parallel sizes."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncviz.families import FAMILY, is_hep
from syncviz.oracle import boxes_map, describe, map_pieces, model_layout
from syncviz.oracle.index import ids_pieces
from syncviz.parallel import Parallel
from syncviz.provenance import RegionMap
from syncviz.spec import FAMILIES, ModelSpec


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


@st.composite
def cases(draw: st.DrawFn) -> tuple[ModelSpec, Parallel, Parallel]:
    family = draw(st.sampled_from(FAMILIES))
    ng = draw(st.sampled_from([1, 2, 4]))
    nh = ng * draw(st.sampled_from([1, 2, 3]))
    hd = draw(st.sampled_from([1, 2]))
    hidden = draw(st.sampled_from([2, 4, 6]))
    s = draw(st.sampled_from(_divisors(ng)))
    # K/V heads split over d, or replicated when d exceeds them (where vLLM does that).
    replicated = FAMILY[family].dst_kv_replicated
    d = draw(
        st.sampled_from(
            [k for k in _divisors(nh) if ng % k == 0 or (replicated and k > ng and k % ng == 0)]
        )
    )
    unit = math.lcm(s, d)
    vocab = draw(st.integers(1, 64 * d)) if 64 % d else draw(st.integers(1, 150))
    if (-(-vocab // 64) * 64) % d:
        vocab = 64 * d
    src_pp, dst_pp = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    layers = math.lcm(src_pp, dst_pp) * draw(st.sampled_from([1, 2]))
    moe = FAMILY[family].is_moe
    ep = draw(st.sampled_from([1, 2])) if moe else 1
    fields = dict(
        name="prop",
        family=family,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=nh,
        num_query_groups=ng,
        ffn_hidden_size=unit * draw(st.sampled_from([1, 2])),
        vocab_size=vocab,
        head_dim=hd,
        qkv_bias=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()),
    )
    if moe:
        per = s * ep if is_hep(family) else ep
        fields.update(
            num_experts=per * draw(st.sampled_from([1, 2])),
            moe_ffn_hidden_size=unit * draw(st.sampled_from([1, 2])),
        )
        if FAMILY[family].shared_expert:
            fields.update(shared_expert_ffn_hidden_size=unit, shared_expert_gate=True)
    if FAMILY[family].mla:  # MLA: one K/V head a query head, its own head sizes
        fields.update(
            num_query_groups=nh,
            head_dim=0,
            qkv_bias=False,
            q_lora_rank=draw(st.sampled_from([0, 2])),
            kv_lora_rank=draw(st.sampled_from([1, 3])),
            qk_nope_head_dim=draw(st.sampled_from([1, 2])),
            qk_rope_head_dim=draw(st.sampled_from([1, 2])),
            v_head_dim=draw(st.sampled_from([1, 2])),
            first_k_dense_replace=draw(st.sampled_from([0, 1])),
            router_bias=draw(st.booleans()),
            shared_expert_ffn_hidden_size=draw(st.sampled_from([0, unit])),
        )
    spec = ModelSpec(**fields)  # type: ignore[arg-type]
    return spec, Parallel(tp=s, pp=src_pp, ep=ep), Parallel(tp=d, pp=dst_pp)


def _flat(index: RegionMap) -> torch.Tensor:
    ids = index.ids()
    assert tuple(ids.shape) == index.shape
    return ids.reshape(-1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_oracle_properties(case: tuple[ModelSpec, Parallel, Parallel]) -> None:
    """Source shards partition each global tensor; destinations cover it; replicas agree."""
    spec, src, dst = case
    layout = model_layout(spec, src, dst)
    for p in layout.params:
        numel = math.prod(p.global_shape)
        everything = torch.arange(numel)
        # Source: the distinct shards hold every global id exactly once (padding aside).
        distinct: list[RegionMap] = []
        for shard in p.src:
            if shard.index not in distinct:
                distinct.append(shard.index)
        held = torch.cat([_flat(m) for m in distinct])
        held = held[held != -1]
        assert torch.equal(held.sort().values, everything), p.key
        # Destination: ids valid, none twice on one rank, every global id somewhere.
        reached = torch.zeros(numel, dtype=torch.bool)
        for t in p.dst:
            ids = _flat(t.index)
            assert ids.min() >= -1 and ids.max() < numel, p.key
            real = ids[ids != -1]
            assert real.unique().numel() == real.numel(), p.key
            reached[real] = True
            if (ids == -1).any():  # vocab padding, or zeros where a bias is on tp 0 only
                held_by_tp0 = p.kind == "experts_w2_bias" and t.tp > 0 and bool((ids == -1).all())
                assert p.kind in ("embed", "lm_head") or held_by_tp0, p.key
        assert bool(reached.all()), p.key
        # Replicas: an id held by several ranks sits at the same local position on each.
        for side in (p.src, p.dst):
            position = torch.full((numel,), -1, dtype=torch.int64)
            for t in side:
                ids = _flat(t.index)
                where = torch.nonzero(ids != -1).reshape(-1)
                real = ids[where]
                seen = position[real]
                placed = seen != -1
                if t.index.shape == side[0].index.shape:
                    assert torch.equal(seen[placed], where[placed]), p.key
                position[real] = where
        # Compact forms agree with the materialized ids.
        for t in (*p.src, *p.dst):
            pieces = map_pieces(t.index, p.global_shape)
            found = ids_pieces(t.index.ids(), p.global_shape)
            assert [x.key() for x in pieces] == [x.key() for x in found], p.key
            rebuilt = boxes_map(p.global_shape, t.index.shape, pieces)
            assert torch.equal(_flat(rebuilt), _flat(t.index)), p.key
            assert "not ids" not in describe(p, t.index)
