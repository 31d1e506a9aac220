"""The optimizer: AdamW, decaying only tensors with two or more dimensions.

Biases and LayerNorm gains are not decayed (decaying them only hurts); the
tied embedding matrix is, as in nanoGPT and GPT-2 reproductions. The fused
CUDA kernel is used when the parameters live on a GPU.
"""

from __future__ import annotations

import torch

from engine.config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)
