"""The two fused-QKV head reorderings of ChatLearn's ``vllm_utils`` (late 2024).

Both only move rows, so ids survive them. ``split_attn_state`` turns Megatron's
per-group layout ``[q_g..., k_g, v_g]`` into ``[all q | all k | all v]``;
``fix_qwen_query_key_value_ordering`` turns a per-head interleaved ``[q_h, k_h, v_h]``
layout (checkpoint version 2 or later) into ``[all q | all k | all v]``.

>>> import torch
>>> qkv = torch.arange(6.0)          # 1 group, 1 query head, head dim 2: [q q k k v v]
>>> split_attn_state(qkv, 1, 1, 2, 4).tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
>>> heads = torch.arange(12.0)       # 2 heads, head dim 2: [q0 k0 v0 q1 k1 v1]
>>> fix_qwen_query_key_value_ordering(heads, 2.0, 3, 2, 2).tolist()
[0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 8.0, 9.0, 4.0, 5.0, 10.0, 11.0]
"""

from __future__ import annotations

import torch


def split_attn_state(
    param: torch.Tensor,
    num_heads: int,
    num_query_groups: int,
    kv_channels: int,
    hidden_size: int,
) -> torch.Tensor:
    """Regroup a per-group fused QKV ``[g: q..., k, v]`` into ``[q... | k... | v...]``.

    ``num_heads`` and ``num_query_groups`` are the counts held by this tensor
    (per TP rank). A 1-D tensor is a bias; otherwise rows have ``hidden_size``
    columns.

    >>> import torch
    >>> w = torch.arange(8.0).reshape(8, 1)  # 2 groups of [q, q, k, v], head dim 1
    >>> split_attn_state(w, 4, 2, 1, 1).flatten().tolist()
    [0.0, 1.0, 4.0, 5.0, 2.0, 6.0, 3.0, 7.0]
    """
    is_bias = len(param.shape) == 1
    q_rows = kv_channels * num_heads // num_query_groups
    group_rows = q_rows + kv_channels * 2
    columns = 1 if is_bias else hidden_size
    grouped = param.view((num_query_groups, group_rows, columns))
    # Same op sequence as the original (slice, flatten, copy), so shape errors read alike.
    blocks = (
        grouped[:, :q_rows, :],
        grouped[:, q_rows : q_rows + kv_channels, :],
        grouped[:, q_rows + kv_channels :, :],
    )
    flat_shape = (-1,) if is_bias else (-1, hidden_size)
    return torch.concat([block.reshape(*flat_shape).contiguous() for block in blocks], dim=0)


def fix_qwen_query_key_value_ordering(
    param: torch.Tensor,
    checkpoint_version: float,
    num_splits: int,
    num_heads: int,
    hidden_size: int,
) -> torch.Tensor:
    """Permute a fused QKV from per-head order to ``[num_splits, num_heads, hidden_size]`` order.

    ``hidden_size`` is the size of one head here. Version 1.0 checkpoints store
    ``[heads, head_dim, splits]``; version 2.0 and later store ``[heads, splits,
    head_dim]``; any other version is returned unchanged (as a view).

    >>> import torch
    >>> fix_qwen_query_key_value_ordering(torch.arange(6.0), 1.0, 3, 2, 1).tolist()
    [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """
    input_shape = param.size()
    trailing = tuple(input_shape[1:])
    if checkpoint_version == 1.0:
        param = param.view(num_heads, hidden_size, num_splits, *trailing)
        param = param.transpose(0, 2).transpose(1, 2).contiguous()
    elif checkpoint_version >= 2.0:
        param = param.view(num_heads, num_splits, hidden_size, *trailing)
        param = param.transpose(0, 1).contiguous()
    return param.view(*input_shape)
