"""The "modern" block: rotary positions, RMSNorm, SwiGLU, QK-norm and no biases.

The layout is Qwen3's (the standard Hugging Face class with exactly this set of
choices), so a trained model exports to `Qwen3ForCausalLM` by renaming keys:
- RoPE rotates the two halves of each head (`rotate_half`), with the angle
  of position p and pair i = p / theta^(2i / head_dim), computed in fp32;
- q and k are RMS-normalised per head (a gain of head_dim) before rotation,
  which keeps attention logits bounded without a softmax temperature;
- the MLP is SwiGLU, down(silu(gate(x)) * up(x)), with a hidden width of
  2/3 of d_ff (rounded to a multiple of 64; engine.config.costs) so it has
  the GPT-2 MLP's parameter count and FLOPs with three matrices instead of two;
- every Linear is bias-free and the norms are gain-only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config.costs import swiglu_hidden
from engine.config.run_config import ModelConfig
from engine.model.attention import KVCache, attend


def rope_tables(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, head dimension) angle, (max_seq_len, head_dim) in fp32."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    pos = torch.arange(cfg.max_seq_len, dtype=torch.float32, device=device)
    angles = pos[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)  # both halves share a frequency (rotate_half layout)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys by the angles of their T positions (cos, sin: (T, D))."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under autocast q/k are bf16; keep them so
    return x * cos + _rotate_half(x) * sin


class RMSNorm(nn.Module):
    """Gain-only RMSNorm; `weight` follows the input's dtype so the fused kernel runs under autocast.

    (nn.RMSNorm falls back to the unfused composite when a bf16 input meets
    its fp32 weight, which the per-head q/k norms see: their input is the
    projection's bf16 output.)
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)


class ModernAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, eps=cfg.layer_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, eps=cfg.layer_norm_eps)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.dropout = cfg.dropout
        self.fused = cfg.attention == "fused"

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        shape = (B, T, self.num_heads, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attend(q, k, v, cache, layer, self.dropout if self.training else 0.0, self.fused)
        return self.resid_dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, C)))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = swiglu_hidden(cfg.d_ff)
        self.gate_proj = nn.Linear(cfg.d_model, hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class ModernBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm_1 = RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = ModernAttention(cfg)
        self.norm_2 = RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), rope, cache, layer)
        return x + self.mlp(self.norm_2(x))
