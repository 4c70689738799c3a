"""Stage-2 receivers are replayed from what their sender forwarded, also when they cut
their buffer, on the tiny spec 1 -> 2 qkv (trainer rank 0 broadcasts to vLLM rank 1,
which forwards tp1's half to vLLM rank 2).

The faithful port leaves vLLM tp1 holding, by rows of 2: K head 0, V head 0, Q head 3,
V head 1; so the first half of the forwarded 64 elements is K0 + V0, the second Q3 + V1.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from syncviz import Parallel
from syncviz.journey import param_steps
from syncviz.run.inprocess import run_sync
from syncviz.spec import ModelSpec
from syncviz.trace import OpRecord, TensorRef

QKV = "model.model.layers.0.self_attn.qkv_proj.weight"


@pytest.fixture(scope="module")
def result():
    spec = ModelSpec("tiny", "llama-mcore", 1, 8, 4, 2, 8, 64, head_dim=2)
    return run_sync(spec, Parallel(tp=1), Parallel(tp=2), layers=[0])


def _chunking_receiver(result):
    """The same run, with rank 2's stage-2 scope replaced by a receiver that cuts its 64
    elements into two halves, views each as [4, 8] and stacks them back."""

    def t(ref, *shape):
        return TensorRef(ref, list(shape), "float64")

    ops = [
        OpRecord(1, "chunk", [t(1, 64)], [2], {}, [t(2, 32), t(3, 32)]),
        OpRecord(2, "view", [t(2, 32)], [[4, 8]], {}, [t(4, 4, 8)]),
        OpRecord(3, "view", [t(3, 32)], [[4, 8]], {}, [t(5, 4, 8)]),
        OpRecord(4, "cat", [t(4, 4, 8), t(5, 4, 8)], [], {"dim": 0}, [t(6, 8, 8)]),
    ]
    params = [
        dataclasses.replace(pt, ops=ops, output_refs=[6])
        if (pt.param, pt.rank, pt.phase) == (QKV, 2, "stage2")
        else pt
        for pt in result.trace.params
    ]
    assert params != result.trace.params
    return dataclasses.replace(result, trace=dataclasses.replace(result.trace, params=params))


def test_the_built_in_stage2_receiver_holds_the_forwarded_half(result):
    """Rank 2's view reads rank 1's second chunk: Q3, K0, V0, V1 (blocks in table order)."""
    (step,) = [s for s in param_steps(result, QKV) if s.phase == "stage2"]
    assert step.blocks == ("Q head 3", "K head 0", "V head 0", "V head 1")
    assert torch.equal(step.outputs[0], result.local_ids(2, QKV).to(torch.int64))


def test_a_chunking_stage2_receiver_is_replayed(result):
    """Each op of the cutting receiver is replayed: the halves hold K0 + V0 and Q3 + V1,
    and the stacked result is what rank 2 holds."""
    changed = _chunking_receiver(result)
    steps = [s for s in param_steps(changed, QKV) if s.rank == 2]
    assert [s.op.op for s in steps] == ["chunk", "view", "view", "cat"]
    assert [s.blocks for s in steps[1:3]] == [
        ("K head 0", "V head 0"), ("Q head 3", "V head 1"),
    ]  # fmt: skip
    assert torch.equal(steps[3].outputs[0], result.local_ids(2, QKV).to(torch.int64))


@pytest.mark.parametrize("kind", ["w13_weight", "w2_weight"])
def test_routed_expert_exchange_is_replayed_to_every_vllm_rank(kind):
    """qwen2-57b-a14b tp2 ep2 -> tp4 (scaled): the trainer ranks' all-gather of routed
    experts is replayed from the four shards (buffer k = the shard of group rank k), so
    every op is replayed, the exchange comes before the regroup it feeds, and on every vLLM
    rank the replay ends in exactly the ids the run left there."""
    from syncviz import preset

    src, dst = Parallel(tp=2, ep=2), Parallel(tp=4)
    result = run_sync(preset("qwen2-57b-a14b").scaled(src, dst), src, dst, layers=[0])
    key = f"model.model.layers.0.mlp.experts.{kind}"
    steps = param_steps(result, key)
    assert all(s.blocks is not None for s in steps)
    phases = list(dict.fromkeys(s.phase for s in steps))
    assert phases == ["routed_experts", "regroup", "stage1", "stage2"]
    assert not any(s.op.op == "empty_like" for s in steps)  # allocations are not steps
    for world in range(4, 8):
        held = result.local_ids(world, key).reshape(-1).to(torch.int64)
        last = [s for s in steps if s.rank == world][-1]
        assert any(torch.equal(o.reshape(-1), held) for o in last.outputs), world


@pytest.mark.parametrize("kind", ["w13_weight", "w2_weight"])
@pytest.mark.parametrize(("synchronizer", "ep"), [("corrected", 2), ("chatlearn", 1)])
def test_routed_expert_all_to_all_is_replayed_to_every_vllm_rank(kind, synchronizer, ep):
    """qwen2-57b-a14b tp2 epN -> tp4 (scaled), --expert-comm alltoall: each trainer rank's
    receive buffer k is bound to what group rank k sent to it (that member's replayed
    send, read off how it allocated its own receive buffers), so every op is replayed and
    on every vLLM rank the replay ends in exactly the ids the run left there."""
    from syncviz import preset

    src, dst = Parallel(tp=2, ep=ep), Parallel(tp=4)
    spec = preset("qwen2-57b-a14b").scaled(src, dst)
    result = run_sync(spec, src, dst, layers=[0], expert_comm="alltoall", synchronizer=synchronizer)
    key = f"model.model.layers.0.mlp.experts.{kind}"
    steps = param_steps(result, key)
    assert [s.text for s in steps if s.blocks is None] == []
    assert list(dict.fromkeys(s.phase for s in steps))[:2] == ["routed_experts", "regroup"]
    vllm = [r.world for r in result.plan.roles if r.side == "dst"]
    assert len(vllm) == 4
    for world in vllm:
        held = result.local_ids(world, key).reshape(-1).to(torch.int64)
        last = [s for s in steps if s.rank == world][-1]
        assert any(torch.equal(o.reshape(-1), held) for o in last.outputs), world


@pytest.mark.parametrize("kind", ["w13_weight", "w2_weight"])
def test_stacked_local_experts_are_replayed(kind):
    """mixtral-8x7b tp2 -> tp4 (scaled, corrected, alltoall): the regroup reads the rank's
    8 local-expert shards stacked by an untraced transform; bound to their stack, every op
    is replayed and every vLLM rank's replay ends in the ids the run left there."""
    from syncviz import preset

    src, dst = Parallel(tp=2), Parallel(tp=4)
    spec = preset("mixtral-8x7b").scaled(src, dst)
    result = run_sync(spec, src, dst, layers=[0], expert_comm="alltoall", synchronizer="corrected")
    key = f"model.model.layers.0.block_sparse_moe.experts.{kind}"
    steps = param_steps(result, key)
    assert steps and [s.text for s in steps if s.blocks is None] == []
    for world in [r.world for r in result.plan.roles if r.side == "dst"]:
        held = result.local_ids(world, key).reshape(-1).to(torch.int64)
        last = [s for s in steps if s.rank == world][-1]
        assert any(torch.equal(o.reshape(-1), held) for o in last.outputs), world
