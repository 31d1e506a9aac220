"""The decoder-only GPT, in two architectures that share embeddings, loop and costs.

`arch = "gpt2"`: GPT-2's layout, so trained models export to GPT2LMHeadModel
exactly: pre-LayerNorm blocks, learned positions, tanh-GELU MLP ("gelu_new"),
fused qkv projection, biases and GPT-2's initialisation.
`arch = "modern"`: the block in engine/model/modern.py (RoPE, RMSNorm, SwiGLU,
QK-norm, no biases), Qwen3's layout. Both use the attention core in
engine/model/attention.py and, unless `tie_embeddings` is off, share the input
embedding with the output head. What a shape costs (parameters, FLOPs per
token) is engine.config.costs, from the config alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from engine.config.levers import Levers
from engine.config.run_config import ModelConfig
from engine.model.attention import KVCache, attend
from engine.model.kernels import attention_kernel, convert_to_fp8, fused_linear_cross_entropy
from engine.model.losses import chunked_linear_cross_entropy
from engine.model.modern import ModernBlock, RMSNorm, rope_tables

__all__ = ["GPT", "KVCache"]
# Projections that write into the residual stream: GPT-2 scales their init by 1/sqrt(2 * layers).
RESIDUAL_PROJECTIONS = ("attn.c_proj.weight", "mlp.c_proj.weight", "attn.o_proj.weight", "mlp.down_proj.weight")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.num_heads = cfg.num_heads
        self.dropout = cfg.dropout
        self.fused = cfg.attention == "fused"

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))
        y = attend(q, k, v, cache, layer, self.dropout if self.training else 0.0, self.fused)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope=None, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        # `rope` is unused: GPT-2 adds learned positions to the embedding instead.
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, *, grad_checkpointing: bool = False, loss_chunk: int = 0,
                 levers: Levers = Levers()) -> None:
        """Training choices (train.*): `grad_checkpointing` recomputes each block in backward;
        `loss_chunk` > 0 computes the loss with targets that many tokens at a time (engine.model.losses),
        and forward then returns no logits; `levers` the resolved speed levers (engine.model.kernels:
        a fused loss, which also returns no logits and takes the place of loss_chunk, the SDPA kernel, FP8)."""
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = grad_checkpointing
        self.loss_chunk = loss_chunk
        self.levers = levers
        modern = cfg.arch == "modern"
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        if modern:
            # Rotary tables are derived from the config, so they stay out of the state dict.
            cos, sin = rope_tables(cfg)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList((ModernBlock if modern else Block)(cfg) for _ in range(cfg.num_layers))
        self.ln_f = RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps) if modern else \
            nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # Residual projections are scaled by 1/sqrt(2 * layers) so the
        # residual stream's variance does not grow with depth (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith(RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.num_layers))
        if levers.fp8 != "off":
            convert_to_fp8(self, levers.fp8, levers.fp8_modules)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        grad_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits for every position and, with targets, the mean cross-entropy (chunked: no logits; `grad_scale`:
        the fp16 loss scale its in-forward gradients carry, engine.model.losses.backward_scale)."""
        T = idx.size(1)
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        x = self.wte(idx)
        rope = None
        if self.cfg.arch == "modern":
            # Positions continue from the cache, so a cached token is rotated by its true position.
            rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])
        else:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.drop(x)
        with attention_kernel(self.levers.attention_backend):
            for i, block in enumerate(self.h):
                if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    x = checkpoint(block, x, rope, use_reentrant=False)
                else:
                    x = block(x, rope, cache, i)
        if cache is not None:
            cache.length += T
        x = self.ln_f(x)
        if targets is not None and self.levers.fused_loss != "off":
            return None, fused_linear_cross_entropy(x, self.lm_head.weight, targets, self.levers.fused_loss)
        if targets is not None and self.loss_chunk > 0:
            return None, chunked_linear_cross_entropy(x, self.lm_head.weight, targets, self.loss_chunk, grad_scale)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
