"""Attention for one new token: two matrix products instead of SDPA's flash kernel.

Decoding attends one query row to the whole cache. PyTorch's CPU flash-attention kernel, which
transformers' ``sdpa`` path uses, took 1.3 ms per layer for that on Qwen2.5-Coder-1.5B with an
800-token cache (36 ms of a 139 ms token, 28 layers), for a few MFLOP of work. Here a query of
one token (the grouped heads packed as rows, as transformers does) is ``softmax(q k^T / sqrt(d)
+ mask) v`` computed in float32 (as the flash kernel accumulates); every other call (prompts, training, dropout) goes to
transformers' own ``sdpa_attention_forward`` unchanged. Registered with transformers'
``AttentionInterface`` as ``ragqa_sdpa``, with sdpa's mask function (without it transformers
builds no mask for a new name, and a prefix's prompt would attend as if the prefix were absent).
"""

from __future__ import annotations

import torch

NAME = "ragqa_sdpa"


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
              **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (query.shape[2] != 1 or dropout or torch.is_grad_enabled() or kwargs.get("softcap") is not None
            or kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None
            or kwargs.get("sliding_window")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    q = query.reshape(batch, kv_heads, groups, dim)  # heads h = kv * groups + g, as repeat_kv orders them
    # float32 throughout, as the flash kernel accumulates: bf16 scores or probabilities would round
    scores = torch.matmul(q.float(), key.float().transpose(-1, -2)) * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:
        mask = attention_mask[..., :length]  # [batch, 1 or heads, 1, length], as sdpa cuts it
        if mask.shape[1] != 1:
            mask = mask.reshape(batch, kv_heads, groups, length)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value.float()).to(value.dtype)  # [batch, kv_heads, groups, dim]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def enable(model) -> bool:
    """Switches a model that uses ``sdpa`` to this attention (in place); False when it uses another."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, attention)
    # the masks sdpa gets (an explicit one where a cache or a prefix precedes the queries)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
