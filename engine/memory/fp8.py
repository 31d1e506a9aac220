"""What torchao's float8 training (train.fp8) keeps instead of the bf16 path's weight copies, from torchao's source.

Read off torchao 0.18.0, the version constraints.txt pins
(torchao/float8/float8_linear.py), not measured on a GPU: FP8 needs compute
capability 8.9 (tests/engine/test_memory.py counts the saved weights on the
CPU with torchao's emulation). Float8Linear.forward hands its fp32 weight
and its input (cast to bf16 under CUDA autocast, as F.linear casts it) to
`matmul_with_hp_or_float8_args`, which saves those two and casts each to FP8
inside the forward and again in backward, with tensorwise and rowwise scales
alike. So an FP8 layer saves the bf16 path's activations but no weight copy
(autocast kept a 2-byte one per weight), and its FP8 casts are transient.

In backward a layer casts the output's gradient to FP8 twice (one per
matmul, both live until it returns), its weight and its input once each;
for the head those casts are (tokens x vocab) sized (`fp8_head_backward_bytes`),
beside the logits' gradient, in the "logits + cross-entropy" row. The blocks'
casts are (tokens x d_ff) at most and left out, like the other per-layer
transients, as are the eager scaling's temporaries (a compiled graph fuses them).
"""

from __future__ import annotations

from engine.config.costs import block_matrix_shapes
from engine.config.levers import FP8_DIVISOR

KEPT_BYTES = 0  # bytes per weight an FP8 layer keeps for backward besides its fp32 weight (autocast's copy: 2)


def _fp8_sized(rows: int, cols: int) -> bool:
    """engine.model.kernels.fp8_filter's size rule: both dimensions divisible by FP8_DIVISOR."""
    return rows % FP8_DIVISOR == 0 and cols % FP8_DIVISOR == 0


def fp8_weights(m, modules: str) -> tuple[int, int]:
    """(weights in one block's FP8 layers, weights of an FP8 head) for train.fp8_modules (resolved; "" = none)."""
    wanted = set(modules.split("+")) if modules else set()
    block = 0
    if "mlp" in wanted:
        # The MLP's matrices are the last two shape groups of block_matrix_shapes (gpt2: fc, proj;
        # modern: gate and up, down).
        block = sum(r * c * k for (r, c), k in block_matrix_shapes(m)[-2:] if _fp8_sized(r, c))
    V, C = m.padded_vocab_size, m.d_model
    head = V * C if "head" in wanted and _fp8_sized(V, C) else 0
    return block, head


def fp8_head_backward_bytes(s: int, V: int, C: int) -> int:
    """Extra bytes live in an FP8 head's backward over s tokens: the logits' gradient in FP8 twice, the
    weight and the input in FP8 once."""
    return 2 * s * V + V * C + s * C
