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

Memory: the Nesterov update is written over the gradients (spent once the
momentum buffer has them), and the shape groups are orthogonalised one at a
time, each from one half-precision stack the normalisation divides in place;
the result is added to the fp32 weights as it is. What the step holds beyond
the weights, gradients and buffers (engine.memory.estimate.muon_step_bytes
models it): the largest group's stack, its Newton-Schulz iterate's next value
and two (n x m x m) Gram-sized products, m the smaller side.

fp16 runs: GradScaler hands the step its found_inf flag as a tensor
(`_step_supports_amp_scaling`, torch/amp/grad_scaler.py), and the step skips
itself on the device (weights, buffers and the update multiplied by 0 or 1),
never asking the host. `ns_dtype` is the iteration's dtype: bf16 (as
torch.optim.Muon), fp16 on cards that only emulate bf16 (compute capability
below 8.0; engine.config.plan picks it); the normalised iterate stays within
fp16's range.

Under DDP (`shard=True`, world size > 1) every rank holds the all-reduced
gradients and updates every momentum buffer (so each rank's state is the
whole state: a checkpoint resumes on any number of ranks), but each shape
group's matrices are split into one contiguous share per rank (zero-padded
to equal shares): each rank orthogonalises only its share and an all-gather
hands every rank all the results, as nanochat's DistMuon does. The
orthogonalisation, the step's cost, shrinks as ranks are added.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim._muon.DEFAULT_A/B/C
NS_STEPS = 5
EPS = 1e-7


def newton_schulz(x: torch.Tensor | list[torch.Tensor], steps: int = NS_STEPS, eps: float = EPS) -> torch.Tensor:
    """The approximate orthogonalisation U·S'·Vᵀ of each (rows, cols) matrix in a (n, rows, cols) batch.

    Runs in x's dtype (bf16 or fp16) and divides `x` in place by its norms.
    `x` may come as a one-tensor list, which is emptied: the caller then
    holds no reference to it and the first iterate frees it. (A caller's
    argument is not always released when the call starts: under a PEP 523
    frame hook, such as the one a failed torch.compile leaves installed,
    CPython holds it until the call returns, one more batch at the peak.)
    """
    if isinstance(x, list):
        x = x.pop()
    a, b, c = NS_COEFFICIENTS
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT  # iterate on the smaller Gram matrix
    x.div_(x.norm(dim=(-2, -1), keepdim=True).clamp_(min=eps))  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters (see the module docstring); lr, weight_decay and momentum per group.

    `ns_dtype`: the Newton-Schulz dtype; `shard`: split the orthogonalisation
    over the default process group's ranks (every rank must step).
    """

    _step_supports_amp_scaling = True  # GradScaler passes found_inf / grad_scale instead of syncing

    def __init__(self, params, lr: float = 0.02, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, *, ns_dtype: torch.dtype = torch.bfloat16, shard: bool = False) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov})
        self.ns_dtype, self.shard = ns_dtype, shard
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
        # Set by GradScaler.step for the duration of the call (absent without a scaler).
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
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
            if grad_scale is not None:  # the gradients are still scaled
                torch._foreach_div_(grads, grad_scale)
            mu, lr = group["momentum"], group["lr"]
            decay = 1 - lr * group["weight_decay"]
            keep = None
            if found_inf is None:
                torch._foreach_lerp_(bufs, grads, 1 - mu)
            else:
                # Skipped on the device: an inf or nan would reach the buffer even at weight 0.
                skip = found_inf > 0
                keep = (~skip).to(params[0].dtype)
                for g in grads:
                    g.masked_fill_(skip, 0.0)
                weight = torch.where(skip, 0.0, 1 - mu).to(params[0].device)
                torch._foreach_lerp_(bufs, grads, [weight] * len(bufs))
                decay = torch.where(skip, 1.0, decay).to(params[0].device)
            updates = bufs
            if group["nesterov"]:  # the look-ahead, written over the spent gradients
                torch._foreach_lerp_(grads, bufs, mu)
                updates = grads
            if group["weight_decay"]:
                torch._foreach_mul_(params, decay)
            shapes: dict[tuple[int, int], list[int]] = {}
            for i, p in enumerate(params):
                shapes.setdefault(tuple(p.shape), []).append(i)
            for (rows, cols), idx in shapes.items():
                ortho = self._orthogonalise([updates[i] for i in idx])
                if keep is not None:
                    ortho.mul_(keep)
                scale = lr * math.sqrt(max(1.0, rows / cols))
                torch._foreach_add_([params[i] for i in idx], list(ortho[:len(idx)].unbind(0)), alpha=-scale)
                del ortho  # freed before the next group's stack: one group's buffers at a time
        return loss

    def _orthogonalise(self, updates: list[torch.Tensor]) -> torch.Tensor:
        """Newton-Schulz of a group of equal-shaped updates, stacked (this rank's share, then all-gathered)."""
        world = dist.get_world_size() if self.shard else 1
        share = -(-len(updates) // world)
        start = dist.get_rank() * share if self.shard else 0
        # Handed over in a list newton_schulz empties: its only reference, so it is freed with the first iterate.
        ortho = newton_schulz([_stack(updates[start:start + share], share, updates[0], self.ns_dtype)])
        if world == 1:
            return ortho
        tall = ortho.size(-2) > ortho.size(-1)
        iterate = ortho.mT if tall else ortho  # contiguous: what newton_schulz iterated on
        gathered = torch.empty((world * share, *iterate.shape[1:]), dtype=iterate.dtype, device=iterate.device)
        dist.all_gather_into_tensor(gathered, iterate)
        return gathered.mT if tall else gathered


def _stack(updates: list[torch.Tensor], n: int, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`updates` (shaped like `like`) cast into one (n, rows, cols) tensor of `dtype`, zero-padded to n rows
    (a rank whose share is empty gets only padding; padding orthogonalises to zeros)."""
    x = torch.empty((n, *like.shape), dtype=dtype, device=like.device)
    if updates:
        torch._foreach_copy_(list(x[:len(updates)].unbind(0)), updates)
    x[len(updates):].zero_()
    return x
