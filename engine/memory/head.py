"""The (tokens x vocab) terms of a training step: the plain loss's logits, the chunked loss's buffers.

Pure arithmetic, the "logits + cross-entropy" row of engine.memory.estimate:
what lives around the loss at each moment of the step (`head_phases`: eager
or compiled cross-entropy over the whole logits), and what
engine.model.losses' chunked loss holds instead (`chunked_head_bytes` in
training, `chunked_eval_bytes` in evaluation). s tokens, V the padded
vocabulary, C d_model; `half`: the matmuls run in bf16 / fp16.
"""

from __future__ import annotations


def chunked_head_bytes(s: int, V: int, C: int, chunk: int, half: bool) -> tuple[int, int]:
    """(forward, backward) peak bytes of engine.model.losses.chunked_linear_cross_entropy over s tokens.

    Forward: the gradients it keeps for h (fp32, ln_f's output) and for the
    weight (fp32), its half copy of the weight, and one chunk at a time the
    larger of: the logits (half) beside their shifted fp32 copy, that copy
    beside the half gradient written from it, or the half gradient beside its
    (V x C) half product with the chunk's hidden states (added into the fp32
    weight gradient); plus a (chunk x C) product. In fp32 the logits' own
    buffer becomes the gradient. Backward: the two gradients and their
    scaled copies.
    """
    k = min(chunk, s)
    e = 2 if half else 4
    per_chunk = max(6 * k * V, 2 * k * V + 2 * V * C) if half else 4 * k * V
    fwd = 4 * s * C + 4 * V * C + (2 * V * C if half else 0) + per_chunk + e * k * C
    return fwd, 8 * s * C + 8 * V * C


def chunked_eval_bytes(s: int, V: int, C: int, chunk: int, half: bool) -> int:
    """Peak bytes of the chunked loss without gradients (evaluation) over s tokens.

    The hidden states (fp32), the weight's half copy, and one chunk's logits
    (half, then fp32) beside its half hidden states.
    """
    k = min(chunk, s)
    return 4 * s * C + (2 * V * C + 6 * k * V + 2 * k * C if half else 4 * k * V)


def head_phases(compiled: bool, half: bool, sV: int, VC: int) -> dict[str, int]:
    """Live bytes of the (tokens x vocab) terms at each moment around the loss, besides saved activations.

    Eager: the logits exist only inside the forward (engine.train.trainer keeps the
    loss), beside their fp32 upcast and the log-probs computed from them;
    backward starts with nll_loss's and log_softmax's fp32 gradients beside
    the saved log-probs; lm_head's backward holds the logits' gradient (cast
    to half), then the weight's gradient (half, then its fp32 copy).
    Compiled (inductor): the forward keeps only the logits (counted among
    the saved tensors); backward makes two logits-sized buffers in their
    dtype, then the weight's gradient in that dtype; fp32 logits stay live to
    the end of backward.
    """
    el = 2 if half else 4
    if compiled:
        return {"end of forward": 0, "start of backward": 2 * el * sV, "lm_head backward": el * VC}
    return {"end of forward": el * sV + (4 * sV if half else 0) + 4 * sV,
            "start of backward": 12 * sV,
            "lm_head backward": max(6 * sV if half else 0, el * sV + (6 if half else 4) * VC)}
