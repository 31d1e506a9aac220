"""Linear + cross-entropy in token chunks: the (tokens x vocab) logits never exist whole.

`chunked_linear_cross_entropy(h, weight, targets)` equals
`F.cross_entropy(F.linear(h, weight).float(), targets)` (the mean over
tokens, as GPT.forward computes its loss), but the forward pass works through
the tokens `chunk` at a time: one chunk's logits (in the matmul dtype, then
fp32), their log-sum-exp, and at once the logits' gradient (softmax minus the
one-hot targets), the gradient of `h` for those tokens and the weight's
gradient, accumulated in fp32. Backward only scales the two stored gradients
by the incoming one. The logits terms of the step then cost one chunk's
(chunk x vocab) buffers plus h's and the weight's gradients, instead of the
three full (tokens x vocab) fp32 tensors of eager cross-entropy
(engine.memory.head.chunked_head_bytes models it). Without gradients (evaluation)
only the loss is computed, a chunk at a time.

Under fp16 the gradients made in the forward carry GradScaler's loss scale
(`grad_scale`, from `backward_scale`), so overflow and skipped steps behave
as with the plain loss, whose backward makes them from the scaled loss.

GPT uses it when train.loss_chunk > 0 (off by default: whether it is as fast
as the plain path, one big matmul or inductor's fused kernels, is measured on
a GPU by bench/throughput.py --loss-chunk).
"""

from __future__ import annotations

import torch


def _chunk_softmax(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed NLL, exp(logits - row max) in fp32, its row sums) of one chunk's logits (in the matmul dtype).

    The target logits and row maxima are read from the matmul's own output
    (exact: its fp32 copy holds the same values), and the subtraction writes
    the fp32 copy: one pass instead of an upcast plus an in-place subtract,
    and no second chunk-sized buffer as torch.logsumexp would make. (CPU
    kernels do copy a half input to fp32 for the mixed-dtype subtraction;
    CUDA kernels cast as they read.)
    """
    picked = logits.gather(1, targets[:, None]).squeeze(1).float()
    top = logits.amax(dim=1).float()
    shifted = logits.sub_(top[:, None]) if logits.dtype == torch.float32 else logits - top[:, None]
    sums = shifted.exp_().sum(dim=1)
    return (sums.log() + top - picked).sum(), shifted, sums


def _loss_only(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
               dtype: torch.dtype) -> torch.Tensor:
    """The mean loss without gradients (evaluation): one chunk's logits at a time."""
    w = weight.to(dtype)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], chunk):
        total += _chunk_softmax(h[start:start + chunk].to(dtype) @ w.t(), targets[start:start + chunk])[0]
    return total / h.shape[0]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                dtype: torch.dtype, grad_scale: torch.Tensor | None) -> torch.Tensor:
        n = h.shape[0]
        # The logits' gradient is made here, in the matmul dtype: with fp16 it must carry the loss scale
        # backward will bring (d(grad_scale * loss)/d(logits), as the plain loss's backward makes it), or
        # GradScaler's overflow checks and scale search would not see the values the plain path has.
        per_token = None if grad_scale is None else grad_scale.float() / n
        w = weight.to(dtype)  # the matmul copy autocast would make
        grad_h = torch.empty(h.shape, dtype=h.dtype, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, n, chunk):
            hc, tc = h[start:start + chunk].to(dtype), targets[start:start + chunk]
            nll, exps, sums = _chunk_softmax(hc @ w.t(), tc)
            total += nll
            # d(summed loss)/d(logits) = softmax - one-hot, written in the matmul dtype
            # (in place in fp32, where the buffer is the logits' own).
            grad = torch.div(exps, sums[:, None] if per_token is None else sums[:, None] / per_token,
                             out=exps if dtype == torch.float32 else
                             torch.empty(exps.shape, dtype=dtype, device=exps.device))
            del exps  # (a no-op in fp32, where grad is the same tensor)
            grad[torch.arange(grad.shape[0], device=grad.device), tc] -= 1.0 if per_token is None else per_token
            grad_h[start:start + chunk] = grad @ w
            if dtype == torch.float32:
                grad_w.addmm_(grad.t(), hc)
            else:  # a half product, added into fp32 without an fp32 copy of it
                grad_w += grad.t() @ hc
            del grad, hc  # before the next chunk's logits: one chunk live at a time
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.weight_dtype, ctx.grad_scale = n, weight.dtype, grad_scale
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        # The stored gradients are of the mean loss, or of grad_scale times it: 1 when backward brings
        # the announced scale (an inf stays inf, for GradScaler to find).
        scale = grad_out / ctx.n if ctx.grad_scale is None else grad_out / ctx.grad_scale
        return grad_h * scale.to(grad_h.dtype), (grad_w * scale).to(ctx.weight_dtype), None, None, None, None


def backward_scale(scaler: torch.amp.GradScaler, micro_steps: int, device: torch.device) -> torch.Tensor | None:
    """What backward will multiply the loss's gradient by in a step of `micro_steps` micro-batches: the
    GradScaler's current scale over the micro-steps, a device tensor (no host sync); None without a scaler
    (fp32, bf16), where the chunked loss keeps its unscaled gradients, bit for bit as before."""
    if not scaler.is_enabled():
        return None
    return scaler.scale(torch.ones((), device=device)) / micro_steps


@torch.compiler.disable
def chunked_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk: int = 4096, grad_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `targets`, `chunk` tokens at a time.

    h: (..., C) hidden states; weight: (V, C) the output head's; targets:
    (...) token ids. Under autocast the matmuls run in autocast's dtype, as
    F.linear's would; the log-sum-exp and the loss are fp32.

    `grad_scale` (fp16 with GradScaler: `backward_scale`): the gradient
    backward will bring, so the gradients made in the forward are those of
    the scaled loss, overflowing (to inf, which GradScaler finds and skips)
    exactly where the plain loss's backward would, and shrinking with the
    scale. Any other incoming gradient is still applied exactly.

    Always eager, also inside a torch.compile'd model (one graph break):
    compiled by inductor it measured one (V x C) fp32 buffer more than this
    eager path, which engine.memory.estimate models.
    """
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    with torch.autocast(device, enabled=False):
        if not (torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)):
            return _loss_only(h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1), max(1, chunk), dtype)
        return _ChunkedLinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1),
                                                max(1, chunk), dtype, grad_scale)
