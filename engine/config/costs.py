"""What a model shape costs: parameter count, training FLOPs per token, the SwiGLU hidden width.

Pure arithmetic on a ModelConfig (no torch), so the one formula serves the
model (engine.model builds SwiGLU at `swiglu_hidden`), the memory estimate,
the run's announcement, the export (Qwen3's intermediate_size) and the bench.
tests/engine/test_memory.py holds `count_params` to the real model's tensors
for both architectures, tied and untied.
"""

from __future__ import annotations

from engine.config.run_config import ModelConfig

SWIGLU_MULTIPLE = 64  # the SwiGLU width is rounded to this for fast matmuls


def swiglu_hidden(d_ff: int) -> int:
    """SwiGLU width with the parameters of a d_ff GELU MLP: 3·h·d ≈ 2·d_ff·d, so h ≈ 2/3·d_ff."""
    return max(SWIGLU_MULTIPLE, round(2 * d_ff / 3 / SWIGLU_MULTIPLE) * SWIGLU_MULTIPLE)


def block_matrix_shapes(m: ModelConfig) -> list[tuple[tuple[int, int], int]]:
    """((rows, cols), how many per block) of one block's matrices, as the model's Linear weights hold them."""
    C = m.d_model
    if m.arch == "modern":
        F = swiglu_hidden(m.d_ff)
        return [((C, C), 4), ((F, C), 2), ((C, F), 1)]  # q, k, v, o; gate, up; down
    return [((3 * C, C), 1), ((C, C), 1), ((m.d_ff, C), 1), ((C, m.d_ff), 1)]  # qkv, proj; fc, proj


def block_matrix_params(m: ModelConfig) -> int:
    """Weights of one block's matrices: what Muon optimises and autocast copies to half precision."""
    return sum(rows * cols * n for (rows, cols), n in block_matrix_shapes(m))


def count_params(m: ModelConfig) -> int:
    """Unique parameters of GPT(m) (a tied embedding counted once): embeddings, positions (gpt2), blocks, final norm."""
    C, F = m.d_model, m.d_ff
    embeddings = m.padded_vocab_size * C * (1 if m.tie_embeddings else 2)
    if m.arch == "modern":
        # per block: matrices, two RMSNorm gains 2C, the q/k norm gains 2·head_dim; no biases, no positions
        return embeddings + m.num_layers * (block_matrix_params(m) + 2 * C + 2 * m.head_dim) + C
    # per block: matrices, biases 3C + C + F + C, two LayerNorms 4C
    block = block_matrix_params(m) + 9 * C + F
    return embeddings + m.max_seq_len * C + m.num_layers * block + 2 * C


def flops_per_token(m: ModelConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token: 6N for the weights plus attention's 12·L·d·T (PaLM appendix B).

    N counts only weights that multiply: the learned positions and an
    untied input embedding are lookups (a tied one is the head's matmul).
    """
    T = seq_len or m.max_seq_len
    n = count_params(m)
    if m.arch != "modern":
        n -= m.max_seq_len * m.d_model
    if not m.tie_embeddings:
        n -= m.padded_vocab_size * m.d_model
    return 6 * n + 12 * m.num_layers * m.d_model * T
