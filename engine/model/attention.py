"""Causal attention's core, shared by both blocks: the KV cache and softmax(q·kᵀ/√d)·v.

Attention goes through `scaled_dot_product_attention` (flash / memory-efficient
kernels) unless `attention = "math"` asks for the explicit matrix. With a
`KVCache` the new keys and values are written at the cache's current length
and the queries attend to everything cached so far.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.config.run_config import ModelConfig


class KVCache:
    """Keys and values of past positions, one preallocated buffer per layer, for generation."""

    def __init__(self, cfg: ModelConfig, batch: int, device, dtype) -> None:
        shape = (batch, cfg.num_heads, cfg.max_seq_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.length = 0  # positions filled so far


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache | None, layer: int,
           dropout: float, fused: bool) -> torch.Tensor:
    """Causal attention of (B, H, T, D) queries over keys/values (plus the cache's); (B, H, T, D) out."""
    T = q.size(2)
    causal = True
    if cache is not None:
        start = cache.length
        cache.k[layer][:, :, start:start + T] = k
        cache.v[layer][:, :, start:start + T] = v
        k, v = cache.k[layer][:, :, :start + T], cache.v[layer][:, :, :start + T]
        # A single new token attends to every cached position; a longer
        # prompt chunk needs the causal mask offset by the cache length.
        causal = T > 1
        if causal and start > 0:
            raise ValueError("a multi-token chunk must start an empty cache")
    if fused:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    if causal:
        mask = torch.ones(T, k.size(2), dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~mask, float("-inf"))
    att = F.dropout(F.softmax(att, dim=-1), p=dropout, training=dropout > 0)
    return att @ v
