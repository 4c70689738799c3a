"""Synchronizer behaviour beyond the golden records: actor calls, hooks, prefixes, QKV cases."""

from __future__ import annotations

import pytest
import torch

from syncviz.parallel import Parallel
from syncviz.spec import ModelSpec
from syncviz.sync import BaseSync, MegatronMegatronSync, MegatronVersion, MegatronVllmQWen2Sync
from syncviz.sync.adapter import StageActor, models_for


class _RemoteMethod:
    """A Ray-style method: ``.remote(...)`` returns a reference to resolve."""

    def __init__(self, value):
        self.value = value
        self.calls = 0

    def remote(self, *args, **kwargs):
        self.calls += 1
        return ("ref", self.value)


class _RayLikeActor:
    def __init__(self, offset):
        self.get_pipeline_stage_layer_offset = _RemoteMethod(offset)


def test_remote_actor_methods_are_resolved_through_the_hook():
    """A method with .remote is called remotely and its reference resolved by resolve_future."""
    sync = BaseSync(None, None)
    sync.resolve_future = lambda ref: ref[1] * 10
    assert sync.call_actor(_RayLikeActor(3), "get_pipeline_stage_layer_offset") == 30


def test_get_or_cache_calls_each_actor_once():
    """A second get_or_cache on the same actor reuses the first answer; another actor is asked."""
    sync = BaseSync(None, None)
    sync.resolve_future = lambda ref: ref[1]
    first, second = _RayLikeActor(1), _RayLikeActor(2)
    for _ in range(2):
        assert sync.get_or_cache(first, "get_pipeline_stage_layer_offset") == 1
    assert sync.get_or_cache(second, "get_pipeline_stage_layer_offset") == 2
    assert first.get_pipeline_stage_layer_offset.calls == 1


def test_megatron_megatron_adds_the_receivers_prefix():
    """Receiver names 'module.x' for source 'x': destination names gain 'module.'."""
    recv = StageActor(parameter_names=["module.layers.0.w", "module.layers.1.w"])
    sync = MegatronMegatronSync(None, None)
    assert sync.map_name_from_src_to_dst(None, recv, ["layers.0.w"], ["layers.1.w"]) == (
        ["layers.0.w"],
        ["module.layers.1.w"],
    )


def test_megatron_megatron_strips_the_senders_prefix():
    """Source 'model.x' with receiver 'x': the prefix 'model.' is cut from destination names."""
    recv = StageActor(parameter_names=["layers.0.w"])
    sync = MegatronMegatronSync(None, None)
    _, dst = sync.map_name_from_src_to_dst(None, recv, ["model.layers.0.w"], ["model.layers.3.w"])
    assert dst == ["layers.3.w"]


def test_megatron_megatron_without_a_common_name_raises():
    """No name of one side inside a name of the other: RuntimeError('Cannot find prefix')."""
    recv = StageActor(parameter_names=["b"])
    with pytest.raises(RuntimeError, match=r"^Cannot find prefix$"):
        MegatronMegatronSync(None, None).map_name_from_src_to_dst(None, recv, ["a"], ["a"])


def _qwen2_sync(heads: int, groups: int, src_tp: int = 1) -> MegatronVllmQWen2Sync:
    spec = ModelSpec(
        name="t",
        family="qwen2",
        num_layers=1,
        hidden_size=heads,  # head_dim 1: one row per head
        num_attention_heads=heads,
        num_query_groups=groups,
        ffn_hidden_size=8,
        vocab_size=64,
    )
    sync = MegatronVllmQWen2Sync(*models_for(spec, Parallel(tp=src_tp), Parallel(tp=2)))
    sync.map_name_from_src_to_dst(StageActor(0), StageActor(0), [], [])
    return sync


QKV_BIAS = "module.module.language_model.encoder.layers.0.self_attention.query_key_value.bias"


def _rows(sync, tensor, tp_division):
    ((name, data),) = sync.transform_parameters([(QKV_BIAS, tensor)])
    return sync.regroup_params_to_sync(name, data, tp_division).tolist()


def test_gqa_bias_with_one_group_per_slice_lands_right():
    """4 heads, 2 groups, head dim 1, d/s = 2: slice i = [q2i, q2i+1, k_i, v_i]."""
    # Megatron per-group rows: [q0 q1 k0 v0 | q2 q3 k1 v1] with ids = position.
    bias = torch.arange(8.0)
    q0, q1, k0, v0, q2, q3, k1, v1 = range(8)
    assert _rows(_qwen2_sync(4, 2), bias, 2) == [q0, q1, k0, v0, q2, q3, k1, v1]


def test_gqa_bias_with_two_groups_per_slice_keeps_one_kv_head_known_wrong():
    """8 heads, 4 groups, d/s = 2: each slice should hold 2 K and 2 V heads; the port keeps 1."""
    # Per-group rows [qa qb k v] for groups 0..3.
    bias = torch.arange(16.0)
    rows = _rows(_qwen2_sync(8, 4), bias, 2)
    slice0, slice1 = rows[:6], rows[6:]
    # Query heads 0-3 (groups 0, 1), then K of group 0 and V of group 0 only.
    assert slice0 == [0, 1, 4, 5, 2, 3]
    # Query heads 4-7 (groups 2, 3), then K of group 1 (not 2) and V of group 1.
    assert slice1 == [8, 9, 12, 13, 6, 7]


def test_routed_expert_wrappers_refuse_non_hep_megatron_versions():
    """With get_megatron_version -> V3 the all-gather wrapper raises NotImplementedError."""
    sync = _qwen2_sync(4, 2)
    sync.get_megatron_version = lambda: MegatronVersion.V3
    with pytest.raises(NotImplementedError, match="all-gathering routed experts"):
        sync.allgather_routed_experts("x", torch.zeros(1), "g", 0)
