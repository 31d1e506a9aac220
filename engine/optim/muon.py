"""Muon with torch.optim.Muon's update, computed for all same-shaped matrices at once.

torch.optim.Muon (PyTorch 2.13) steps one matrix at a time: about 22 kernel
launches each (momentum, bf16 cast, norm, 5 Newton-Schulz iterations of three
matmuls, decay, update). The tiny preset's modern block has 28 such matrices,
so its optimizer step alone is ~600 launches, several milliseconds of Python
and launch overhead against a GPU step of a few milliseconds. Here the momentum,
decay and update are multi-tensor (`torch._foreach_*`) ops over all matrices,
and the Newton-Schulz iteration runs batched (`baddbmm`) over each group of
equal shapes (q/k/v/o, gate/up, down: three groups), ~80 launches in all.

The math is torch.optim.Muon's, including its defaults: EMA momentum
(buf.lerp_(grad, 1 - momentum)) with the Nesterov look-ahead, Keller Jordan's
quintic coefficients, 5 iterations in bfloat16 on the matrix normalised by its
Frobenius norm (transposed when taller than wide), the "original" LR
adjustment sqrt(max(1, rows/cols)) and decoupled weight decay lr · wd. Tests
check it against torch.optim.Muon step for step. The state is one
"momentum_buffer" per matrix, as in torch.optim.Muon.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim._muon.DEFAULT_A/B/C
NS_STEPS = 5
EPS = 1e-7


def newton_schulz(g: torch.Tensor, steps: int = NS_STEPS, eps: float = EPS) -> torch.Tensor:
    """The approximate orthogonalisation U·S'·Vᵀ of each (rows, cols) matrix in a (n, rows, cols) batch, in bf16."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT  # iterate on the smaller Gram matrix
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters (see the module docstring); lr, weight_decay and momentum per group."""

    def __init__(self, params, lr: float = 0.02, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon only takes 2-D parameters, got one of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            mu, lr = group["momentum"], group["lr"]
            torch._foreach_lerp_(bufs, grads, 1 - mu)
            updates = torch._foreach_lerp(grads, bufs, mu) if group["nesterov"] else bufs
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            shapes: dict[tuple[int, int], list[int]] = {}
            for i, p in enumerate(params):
                shapes.setdefault(tuple(p.shape), []).append(i)
            for (rows, cols), idx in shapes.items():
                ortho = newton_schulz(torch.stack([updates[i] for i in idx]))
                ortho = ortho.to(params[idx[0]].dtype)
                scale = lr * math.sqrt(max(1.0, rows / cols))
                torch._foreach_add_([params[i] for i in idx], list(ortho.unbind(0)), alpha=-scale)
        return loss
