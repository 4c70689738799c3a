"""The corrected synchronizer against the oracle: every preset and (s, d), random specs, hand cases.

Two routes to the same answer: the regroup contract called directly (transform, routed
expert exchange, regroup, cut into tp_division chunks) on the oracle's source shards,
and the whole in-process flow (``run_sync``). Both must give every vLLM rank exactly
the oracle's ids. The one exception is the vocabulary when Megatron's padded vocab
(a multiple of 128 * s) differs from vLLM's (a multiple of 64): then a trainer
rank's rows start at other tokens than its vLLM ranks' rows, which no synchronizer
can fix; the corrected one refuses those two tensors and nothing else.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from syncviz import ModelSpec, Parallel, SyncvizError
from syncviz.oracle import ModelLayout, conventions, model_layout
from syncviz.oracle.source import src_padded_vocab
from syncviz.parallel import validate
from syncviz.presets import PRESETS
from syncviz.run.inprocess import run_sync
from syncviz.run.local_world import LocalWorld
from syncviz.sync.adapter import StageActor
from syncviz.sync.corrected import (
    ConventionsSyncMap,
    CorrectedMegatronVllmQWenSync,
    corrected_synchronizer,
)
from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync

TP_SIZES = (1, 2, 4, 8)
VOCAB_KINDS = ("embed", "lm_head")


def _is_valid(spec: ModelSpec, src: Parallel, dst: Parallel) -> bool:
    try:
        validate(spec, src, dst)
    except SyncvizError:
        return False
    return True


PRESET_CASES = [
    pytest.param(name, s, d, id=f"{name}-s{s}-d{d}")
    for name, spec in PRESETS.items()
    for s in TP_SIZES
    for d in TP_SIZES
    if d % s == 0 and _is_valid(spec, Parallel(tp=s), Parallel(tp=d))
]


def _small(name: str, s: int, d: int) -> ModelSpec:
    """The preset, shrunk, with one layer: layer 0 plus embedding, final norm and lm_head."""
    return PRESETS[name].scaled(Parallel(tp=s), Parallel(tp=d), num_layers=1)


def _vocab_lines_up(spec: ModelSpec, s: int) -> bool:
    """Whether the trainer's padded vocab (by default like vLLM's) equals vLLM's."""
    return src_padded_vocab(spec.vocab_size, None, s) == -(-spec.vocab_size // 64) * 64


def _refused(layout: ModelLayout, s: int) -> set[str]:
    """The parameters no synchronizer can fill: vocab tensors whose padded sizes differ."""
    if _vocab_lines_up(layout.spec, s):
        return set()
    return {p.key for p in layout if p.kind in VOCAB_KINDS}


# ---------------------------------------------------------------------- the contract, directly


def _contract_outputs(
    spec: ModelSpec, src: Parallel, dst: Parallel, layout: ModelLayout
) -> tuple[dict[tuple[str, int], torch.Tensor], set[str]]:
    """Chunk i of regroup(exchange(transform(shard r))) for every (vLLM name, dst tp).

    Runs the s trainer ranks as threads so routed experts can be all-gathered.
    Returns the chunks and the names whose regroup raised SyncvizError.
    """
    per_src = dst.tp // src.tp

    def rank(coll) -> tuple[dict[tuple[str, int], torch.Tensor], set[str]]:
        r = coll.rank()
        shards = [sh for p in layout for sh in p.src if sh.tp == r and sh.ep in (None, 0)]
        ids = {sh.name: sh.index.ids().to(torch.float64) for sh in shards}
        names = list(ids)
        sync = corrected_synchronizer(spec, src, dst)
        sync.collective = coll
        sync.zero_value = -1.0  # ids stand for values: a must-be-zero element is padding
        src_names, dst_names = sync.map_name_from_src_to_dst(
            StageActor(0, names), StageActor(0), names, list(names)
        )
        prepared = sync.transform_parameters([(n, ids[n]) for n in src_names])
        assert len(prepared) == len(dst_names)
        out: dict[tuple[str, int], torch.Tensor] = {}
        refused: set[str] = set()
        for (name, tensor), dst_name in zip(prepared, dst_names, strict=True):
            tensor, gathered = sync.allgather_routed_experts(name, tensor, None, r)
            want = layout.param(dst_name).dst[0].index.numel
            division = 1 if tensor.numel() == want else per_src
            try:
                flat = sync.regroup_params_to_sync(name, tensor, division, gathered).reshape(-1)
            except SyncvizError:
                refused.add(dst_name)
                continue
            chunks = list(flat.chunk(division)) if division > 1 else [flat] * per_src
            for i, chunk in enumerate(chunks):
                key = (dst_name, r * per_src + i)
                assert key not in out, f"{key} written twice"
                out[key] = chunk
        return out, refused

    results = LocalWorld(src.tp).run(rank)
    chunks: dict[tuple[str, int], torch.Tensor] = {}
    refused: set[str] = set()
    for result in results:
        if result.error is not None:
            raise result.error
        out, bad = result.value
        assert not chunks.keys() & out.keys(), "a destination tensor is written by two ranks"
        chunks.update(out)
        refused |= bad
    return chunks, refused


def _assert_contract(spec: ModelSpec, src: Parallel, dst: Parallel) -> None:
    layout = model_layout(spec, src, dst)
    chunks, refused = _contract_outputs(spec, src, dst, layout)
    assert refused == _refused(layout, src.tp)
    for param in layout:
        for t in param.dst:
            key = (param.key, t.tp)
            if param.key in refused:
                assert key not in chunks
                continue
            assert key in chunks, f"{key} never written"
            expected = t.index.ids().to(torch.float64).reshape(-1)
            assert torch.equal(chunks[key], expected), f"{key}: {param.describe_dst(t.tp)}"


# ---------------------------------------------------------------------- the whole flow


def _assert_flow(spec: ModelSpec, src: Parallel, dst: Parallel, layers=None) -> None:
    result = run_sync(spec, src, dst, synchronizer="corrected", layers=layers, trace=False)
    layout = result.plan.layout
    refused = _refused(layout, src.tp)
    assert {f.param for f in result.findings} == refused, [f.message for f in result.findings]
    for param in layout:
        for t in param.dst:
            world = next(r.world for r in result.plan.roles if r.side == "dst" and r.tp == t.tp)
            got = result.local_ids(world, param.key)
            if param.key in refused:
                assert bool((got == -2).all()), f"{param.key} tp{t.tp} partly written"
                continue
            expected = t.index.ids().to(torch.float64)
            assert torch.equal(got, expected), f"{param.key} tp{t.tp}: {param.describe_dst(t.tp)}"
            assert result.writes(world)[param.key] == 1


@pytest.mark.parametrize(("name", "s", "d"), PRESET_CASES)
def test_preset_contract_holds_directly(name, s, d):
    """Chunk i of regroup(transform(src shard r)) equals the oracle's dst rank r*(d/s)+i."""
    _assert_contract(_small(name, s, d), Parallel(tp=s), Parallel(tp=d))


@pytest.mark.parametrize(("name", "s", "d"), PRESET_CASES)
def test_preset_flow_matches_the_oracle(name, s, d):
    """run_sync with the corrected synchronizer fills each dst tensor once, as the oracle says."""
    _assert_flow(_small(name, s, d), Parallel(tp=s), Parallel(tp=d))


def test_preset_flow_on_a_later_layer_with_trainer_pipeline():
    """Layer 1 of 2 on the second trainer pipeline stage lands under its global vLLM name."""
    spec = PRESETS["llama3-8b"].scaled(Parallel(tp=2, pp=2), Parallel(tp=4), num_layers=2)
    _assert_flow(spec, Parallel(tp=2, pp=2), Parallel(tp=4), layers=[1])


def test_vocab_padding_mismatch_is_reported_in_the_flow():
    """A trainer on Megatron's default padding (128 * s): vocab 256 at s=4 pads to 512, vLLM 256."""
    spec = _small("llama3-8b", 4, 8)
    assert (spec.vocab_size, spec.hidden_size) == (256, 128)
    vocab = {"model.model.embed_tokens.weight", "model.lm_head.weight"}
    # Equal tp: sent as is, 128 rows * 128 arrive where vLLM holds 64 rows * 128.
    same = run_sync(
        spec,
        Parallel(tp=4),
        Parallel(tp=4),
        synchronizer="corrected",
        trace=False,
        src_vocab_divisible_by=128,
    )
    assert {f.param for f in same.findings} == vocab
    assert {f.message for f in same.findings} == {
        "received 16384 elements for a tensor of 8192 ([64, 128])"
    }
    # d = 2s: the corrected regroup refuses, naming both paddings.
    more = run_sync(
        spec,
        Parallel(tp=4),
        Parallel(tp=8),
        synchronizer="corrected",
        trace=False,
        src_vocab_divisible_by=128,
    )
    assert {f.param for f in more.findings} == vocab
    assert all(
        "holds 128 vocab rows" in f.message and "padded to 512" in f.message for f in more.findings
    )


# ---------------------------------------------------------------------- random small specs

FAMILY_NAMES = (
    "llama-legacy",
    "llama-mcore",
    "qwen-v1",
    "qwen2",
    "qwen2-moe",
    "mixtral",
    "mistral",
    "qwen3",
    "qwen3-moe",
)


@st.composite
def small_configs(draw) -> tuple[ModelSpec, Parallel, Parallel]:
    """A small spec and sizes that mostly pass the rules (heads split over d, groups over s)."""
    s = draw(st.sampled_from(TP_SIZES))
    d = draw(st.sampled_from([x for x in TP_SIZES if x % s == 0]))
    family = draw(st.sampled_from(FAMILY_NAMES))
    heads = d * draw(st.sampled_from((1, 2)))
    groups = draw(st.sampled_from([g for g in (1, 2, 4, 8, 16) if heads % g == 0 and g % s == 0]))
    head_dim = draw(st.integers(1, 3))
    explicit_hidden = draw(st.booleans())
    hidden = draw(st.integers(2, 12)) if explicit_hidden else heads * head_dim
    moe = family in ("qwen2-moe", "mixtral", "qwen3-moe")
    experts = s * draw(st.sampled_from((1, 2))) if moe else 0
    shared = draw(st.sampled_from((0, 8, 16))) if family == "qwen2-moe" else 0
    spec = ModelSpec(
        name="random",
        family=family,
        num_layers=1,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_query_groups=groups,
        ffn_hidden_size=draw(st.sampled_from((8, 16, 24))),
        vocab_size=draw(st.integers(1, 300)),
        head_dim=head_dim,
        tie_word_embeddings=draw(st.booleans()),
        qkv_bias=draw(st.booleans()),
        num_experts=experts,
        moe_ffn_hidden_size=draw(st.sampled_from((8, 16))) if moe else 0,
        shared_expert_ffn_hidden_size=shared,
        shared_expert_gate=bool(shared) and draw(st.booleans()),
    )
    return spec, Parallel(tp=s), Parallel(tp=d)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(small_configs())
def test_random_specs_match_the_oracle(config):
    """Random families, head/group counts, head sizes, biases, experts, vocab padding and sizes."""
    spec, src, dst = config
    assume(_is_valid(spec, src, dst))
    try:
        model_layout(spec, src, dst)
    except SyncvizError:
        assume(False)  # sizes the layout rules reject (e.g. a trainer tp above the K/V groups)
    _assert_contract(spec, src, dst)
    _assert_flow(spec, src, dst)


# ---------------------------------------------------------------------- hand-worked cases


def _bias_sync(heads: int, groups: int, s: int, d: int):
    spec = ModelSpec("t", "qwen2", 1, heads, heads, groups, 8, 64, qkv_bias=True)  # head dim 1
    sync = corrected_synchronizer(spec, Parallel(tp=s), Parallel(tp=d))
    sync.map_name_from_src_to_dst(StageActor(), StageActor(), [], [])
    return sync


QKV_BIAS = "module.module.language_model.encoder.layers.0.self_attention.query_key_value.bias"


def test_qkv_slice_takes_all_its_kv_groups():
    """8 heads, 4 groups, d/s=2: slice 0 gets K/V heads 0-1, slice 1 K/V heads 2-3."""
    qkv = torch.arange(16.0)  # [q0..q7 | k0..k3 | v0..v3], head dim 1
    out = _bias_sync(8, 4, 1, 2).regroup_qkv_tp_slices(QKV_BIAS, qkv, 2)
    assert out.tolist() == [0, 1, 2, 3, 8, 9, 12, 13, 4, 5, 6, 7, 10, 11, 14, 15]


def test_qkv_replicates_the_single_kv_head():
    """4 heads, 1 group, d=4: every slice holds its query head plus K head 0 and V head 0."""
    qkv = torch.arange(6.0)  # [q0 q1 q2 q3 | k0 | v0]
    out = _bias_sync(4, 1, 1, 4).regroup_qkv_tp_slices(QKV_BIAS, qkv, 4)
    assert out.tolist() == [0, 4, 5, 1, 4, 5, 2, 4, 5, 3, 4, 5]


def test_qkv_fix_then_regroup_on_a_second_trainer_rank():
    """s=2, d=8, 8 heads, 2 groups: rank 1 holds group 1 [q4..q7 k1 v1]; slices share k1/v1."""
    sync = _bias_sync(8, 2, 2, 8)
    rank1 = torch.tensor([4.0, 5, 6, 7, 9, 11])  # global ids of q4..q7, k1, v1
    fixed = sync.fix_qkv_ordering([(QKV_BIAS, rank1)])[0][1]
    out = sync.regroup_params_to_sync(QKV_BIAS, fixed, 4)
    assert out.tolist() == [4, 9, 11, 5, 9, 11, 6, 9, 11, 7, 9, 11]


def test_mcore_fused_norms_are_sent_whole():
    """linear_fc1.layer_norm_weight and linear_qkv.layer_norm_weight are norms, not linears."""
    spec = PRESETS["llama3-8b"].scaled()
    sync = corrected_synchronizer(spec, Parallel(tp=1), Parallel(tp=2))
    sync.map_name_from_src_to_dst(StageActor(), StageActor(), [], [])
    norm = torch.arange(6.0)
    layer = "module.module.decoder.layers.0."
    for op in ("mlp.linear_fc1", "self_attention.linear_qkv"):
        out = sync.regroup_params_to_sync(f"{layer}{op}.layer_norm_weight", norm, 2)
        assert out.tolist() == [0, 1, 2, 3, 4, 5]


def test_vocab_padding_mismatch_is_refused_with_a_fix():
    """s=d=4, vocab 256: Megatron pads to 512 (128 rows/rank), vLLM keeps 256 (64 rows/rank)."""
    spec = ModelSpec("t", "llama-mcore", 1, 8, 4, 4, 8, 256)
    sync = corrected_synchronizer(spec, Parallel(tp=4), Parallel(tp=4))
    sync.map_name_from_src_to_dst(StageActor(), StageActor(), [], [])
    with pytest.raises(SyncvizError) as err:
        sync.regroup_params_to_sync(
            "module.module.embedding.word_embeddings.weight", torch.zeros(128, 8), 1
        )
    assert "holds 128 vocab rows" in str(err.value) and "hold 64" in str(err.value)
    assert err.value.fix is not None and "--make-vocab-size-divisible-by 16" in err.value.fix


def test_qwen_v1_gate_and_up_pair_in_either_order():
    """[w2, w1] and [w1, w2] give the same names; the faithful map only handles [w1, w2]."""
    layer = "module.module.language_model.encoder.layers.0."
    w1, w2, down = (layer + m + ".weight" for m in ("mlp.w1", "mlp.w2", "mlp.dense_4h_to_h"))
    sync = corrected_synchronizer(PRESETS["qwen-7b"].scaled(), Parallel(tp=1), Parallel(tp=2))
    assert isinstance(sync, CorrectedMegatronVllmQWenSync)
    for order in ([w2, w1, down], [w1, w2, down]):
        src, dst = sync.map_name_from_src_to_dst(StageActor(), StageActor(), order, [])
        assert src == [w2, w1, down]
        assert dst == [
            "model.transformer.h.0.mlp.gate_up_proj.weight",
            "model.transformer.h.0.mlp.c_proj.weight",
        ]


def test_llama_qkv_bias_is_synced_and_other_biases_leave_both_lists():
    """A Llama QKV bias maps to qkv_proj.bias; an fc1 bias is dropped from src and dst alike."""
    layer = "module.module.decoder.layers.0."
    names = [layer + n for n in ("self_attention.linear_qkv.bias", "mlp.linear_fc1.bias")]
    names.append(layer + "mlp.linear_fc2.weight")
    spec = PRESETS["llama3-8b"].scaled()
    sync = corrected_synchronizer(spec, Parallel(tp=1), Parallel(tp=1))
    assert isinstance(sync, MegatronVllmLlamaSync)
    src, dst = sync.map_name_from_src_to_dst(StageActor(), StageActor(), names, [])
    assert src == [names[0], names[2]]
    assert dst == [
        "model.model.layers.0.self_attn.qkv_proj.bias",
        "model.model.layers.0.mlp.down_proj.weight",
    ]


def test_mixtral_map_names_each_layers_experts_once():
    """Two local experts of layer 0 (stage offset 3) -> one w13 name; router -> gate."""
    layer = "module.module.decoder.layers.0."
    names = [layer + f"mlp.experts.local_experts.{j}.linear_fc2.weight" for j in (0, 1)]
    names.append(layer + "mlp.router.weight")
    assert ConventionsSyncMap(names, 3, conventions("mixtral")).dst_names == [
        "model.model.layers.3.block_sparse_moe.experts.w2_weight",
        "model.model.layers.3.block_sparse_moe.gate.weight",
    ]


@pytest.mark.parametrize(("s", "ep", "d"), [(1, 2, 2), (2, 2, 4), (1, 4, 1)])
def test_mixtral_with_expert_parallel_is_exact(s, ep, d):
    """Mixtral with trainer ep > 1: experts gathered over the ep ranks land bit for bit."""
    spec = PRESETS["mixtral-8x7b"].scaled(Parallel(tp=s, ep=ep), Parallel(tp=d))
    _assert_flow(spec, Parallel(tp=s, ep=ep), Parallel(tp=d), layers=[0])


@pytest.mark.parametrize("exchange", ["allgather", "alltoall"])
@pytest.mark.parametrize(("s", "ep"), [(1, 2), (2, 2), (2, 1)])
def test_hep_expert_exchange_with_expert_parallel(exchange, s, ep):
    """The tp*ep HEP ranks exchange routed experts; rank (ep, tp) ends with vLLM tp's w13/w2."""
    spec = PRESETS["qwen1.5-moe-a2.7b"].scaled(Parallel(tp=s, ep=ep), Parallel(tp=s))
    src, dst = Parallel(tp=s, ep=ep), Parallel(tp=s)
    layout = model_layout(spec, src, dst, layers=[0])
    params = [p for p in layout if p.kind in ("experts_w13", "experts_w2")]

    def member(coll):
        tp, q = coll.rank() % s, coll.rank() // s  # HEP rank = ep * tp_size + tp
        sync = corrected_synchronizer(spec, src, dst)
        sync.collective = coll
        shards = [next(sh for sh in p.src if (sh.tp, sh.ep) == (tp, q)) for p in params]
        names = [sh.name for sh in shards]
        sync.map_name_from_src_to_dst(StageActor(), StageActor(), names, [])
        out = []
        for sh in shards:
            ids = sh.index.ids().to(torch.float64)
            if exchange == "allgather":
                got, done = sync.allgather_routed_experts(sh.name, ids, None, tp)
            else:
                got, done = sync.alltoall_routed_experts(sh.name, ids, None)
            assert done
            out.append(got)
        return tp, out

    for result in LocalWorld(s * ep).run(member):
        assert result.error is None, result.error
        tp, outs = result.value
        for param, got in zip(params, outs, strict=True):
            assert torch.equal(got, param.dst[tp].index.ids().to(torch.float64)), param.key
