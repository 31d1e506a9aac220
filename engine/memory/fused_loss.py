"""What train.fused_loss's libraries hold around the loss: liger's chunk size, cut-cross-entropy's buffers.

Read off the libraries' source (liger-kernel 0.8.5, cut-cross-entropy
25.1.1), not yet measured on a GPU. liger's fused linear cross-entropy works
like engine.model.losses' chunked loss (h's and the weight's fp32 gradients
made in the forward, also when evaluating), at its own chunk size, so
engine.memory.estimate models it with engine.memory.head.chunked_head_bytes at `liger_chunk`.
cut-cross-entropy never writes logits (`cce_head_bytes`).
"""

from __future__ import annotations


def liger_chunk(s: int, V: int, C: int) -> int:
    """liger's tokens per chunk over s tokens: s / ceil(V / C) rounded up to a power of two, at most s.

    One chunk's (chunk x V) logits are then about the size of the (s x C) hidden states.
    """
    per = -(-s // -(-V // C))
    return min(s, 1 << max(0, per - 1).bit_length())


def cce_head_bytes(s: int, V: int, C: int, half: bool) -> tuple[int, int, int]:
    """(forward and evaluation, backward, saved) peak bytes of cut-cross-entropy over s tokens.

    The forward keeps one fp32 log-sum-exp per token beside the operands
    cast to the matmul dtype (engine.model.kernels casts them under
    autocast); the backward writes h's and the weight's gradients in that
    dtype, and autograd casts them to fp32 for the fp32 originals.
    """
    copies = 2 * (s * C + V * C) if half else 0
    e = 2 if half else 4
    kept = copies + 4 * s
    return kept, kept + (e + (4 if half else 0)) * (s * C + V * C), kept
