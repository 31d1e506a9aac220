"""What autograd saves in one training forward of engine/model/gpt.py's GPT, op by op, eager or compiled.

Pure arithmetic (no torch), the activation half of engine.memory.estimate's estimate.
Each rule was read off PyTorch itself (tests/memory_probe.py counts the
saved tensors; tests/engine/test_memory.py holds the two to a tight
tolerance). Sizes: s tokens (batch x seq), C d_model, F d_ff, H heads,
T seq, V padded vocabulary, e bytes of a matmul input/output (2 under
autocast, 4 in fp32).

Eager and torch.compile (inductor) keep nearly the same tensors inside a
block; they differ in three places:
- dropout: a compiled graph keeps a 1-byte bool mask on every device, eager
  a 1-byte mask on CUDA but a noise tensor of the input's dtype on the CPU;
- the head: eager keeps cross-entropy's fp32 log-probabilities (4sV),
  compiled keeps the logits in their own dtype (e*sV) plus two fp32 numbers
  per token (max and log-sum-exp) and recomputes the rest in backward;
- checkpointing: compiled recomputes ln_f's input too, and saves no block
  weight copies (they are recast in backward).
"""

from __future__ import annotations

from engine.config.costs import swiglu_hidden

CPU_RNG_STATE_BYTES = 5056  # torch.get_rng_state(): what checkpointing keeps to replay dropout


def _attention(m, batch: int, seq: int, e: int, cuda: bool, compiled: bool, sdpa_math: bool = False) -> int:
    """Bytes one attention layer saves besides its input LayerNorm and c_attn's input."""
    C, H, T = m.d_model, m.num_heads, seq
    s = batch * seq
    drop = m.dropout > 0
    probs = batch * H * T * T  # elements of one layer's attention matrix
    if m.attention == "fused" and not sdpa_math and (cuda or not drop):
        # flash / memory-efficient (CUDA) or CPU flash: q, k, v stay views of
        # the qkv output; the output doubles as c_proj's input; logsumexp is fp32.
        return 3 * e * s * C + e * s * C + 4 * batch * H * T
    if m.attention == "fused" and not compiled:
        # SDPA's math path: train.attention_backend math, or eager CPU with
        # dropout (no fused CPU kernel takes dropout). A composite of ATen ops,
        # the same on every device (aten/src/ATen/native/transformers/attention.cpp):
        # it upcasts half q, k, v to fp32, so it saves q and k scaled, v
        # contiguous (all fp32), the fp32 softmax and, with dropout, the mask
        # (CPU: an fp32 noise tensor; CUDA: native_dropout's bool) and the dropped matrix.
        mask = (1 if cuda else 4) if drop else 0
        return 3 * 4 * s * C + probs * (4 + (mask + 4 if drop else 0)) + e * s * C
    # The explicit matrix (and the compiled CPU SDPA with dropout, which
    # decomposes into it): matmul copies of the transposed q, k, v views;
    # softmax in fp32 under CUDA autocast (or when SDPA upcasts), then dropout,
    # then the matrix `att @ v` reads when its dtype differs.
    sm = 4 if cuda or m.attention == "fused" else e
    if compiled:
        mask = 1 if drop else 0
    else:
        mask = (1 if cuda else sm) if drop else 0
    after = e if sm != e else (sm if drop else 0)
    stats = 9 * batch * H * T if compiled and drop else 0  # decomposed softmax's max/sum, fp32 + bool
    return 3 * e * s * C + T * T + probs * (sm + mask + after) + e * s * C + stats


def saved_activations(m, batch: int, seq: int, precision: str, device: str,
                      compiled: bool = False, sdpa_math: bool = False) -> dict[str, int]:
    """Bytes autograd saves in one training forward, by part: embed, block (each), block_input, head, logits.

    `block` is one non-checkpointed block; `block_input` what checkpointing
    keeps of one block instead; `head` ln_f and lm_head's input (and, unless
    compiled under checkpointing, ln_f's fp32 input); `logits` what the loss
    keeps of the (tokens x vocab) logits. `sdpa_math`: model.attention fused
    runs SDPA's math kernel (train.attention_backend math).
    """
    C, F = m.d_model, m.d_ff
    s = batch * seq
    cuda = device.startswith("cuda")
    e = 4 if precision == "fp32" else 2  # matmul inputs/outputs under autocast
    drop = m.dropout > 0

    def mask(elt: int) -> int:  # bytes per element a dropout keeps for backward
        if not drop:
            return 0
        return 1 if compiled or cuda else elt

    # LayerNorm keeps its fp32 input plus mean and rstd (compiled: rstd only).
    stats = 4 * s if compiled else 8 * s
    ln = 4 * s * C + stats
    attn = _attention(m, batch, seq, e, cuda, compiled, sdpa_math)
    block = (ln + e * s * C + attn + mask(e) * s * C  # attention half
             + ln + e * s * C + 2 * e * s * F + mask(e) * s * C)  # MLP half: c_fc's output, GELU's output
    V = m.padded_vocab_size
    if compiled:
        logits = e * s * V + 8 * s + 4  # logits, their max and log-sum-exp, the mean's divisor
    else:
        logits = 4 * s * V  # log_softmax's fp32 output
    if m.arch == "modern":
        return {**_modern_saved(m, batch, seq, e, mask, attn), "logits": logits}
    return {
        "embed": 8 * s + 8 * seq + mask(4) * s * C,  # token ids, positions, embedding dropout
        "block": block,
        # fp32 residual stream; compiled checkpointing also saves the RNG state
        # per block (a CPU tensor: device memory only on the CPU).
        "block_input": 4 * s * C + (CPU_RNG_STATE_BYTES if compiled and not cuda else 0),
        "head": 4 * s * C + 8 * s + e * s * C + 8 * s,  # ln_f (input, mean, rstd), lm_head input, targets
        # compiled: ln_f's input is recomputed, the position embeddings (T x C) are kept.
        "head_checkpointed": (8 * s + e * s * C + 8 * s + 4 * seq * C) if compiled
        else 4 * s * C + 8 * s + e * s * C + 8 * s,
        "logits": logits,
    }


def _modern_saved(m, batch: int, T: int, e: int, mask, attn: int) -> dict[str, int]:
    """saved_activations for arch "modern" (RoPE, RMSNorm, SwiGLU, QK-norm), op by op as on the CPU.

    RMSNorm (eager, composite) keeps its fp32 input, rstd and the normalised
    input; the per-head q/k norms do the same on the projections' outputs.
    Under autocast every Linear casts its input separately, so q, k and v
    keep three half copies (gate and up two); in fp32 they share one tensor.
    RoPE keeps its cos/sin: under autocast four half casts per layer; in fp32
    the model's own tables (buffers of 2 x max_seq_len x head_dim floats, left
    out like the parameters: under 1 MiB at head_dim 64 and 1024 positions).
    SwiGLU keeps gate's and up's outputs, silu's output and their product. On
    CUDA a fused RMSNorm may keep less, and so may a compiled graph (the
    compiled modern block is not measured yet: these eager rules stand in,
    on the safe side).
    """
    C, H, hd, F = m.d_model, m.num_heads, m.head_dim, swiglu_hidden(m.d_ff)
    s = batch * T
    half = e == 2
    norm = 8 * s * C + 4 * s  # fp32 input, normalised input, rstd
    qk_norms = 2 * (8 * s * C + 4 * s * H)
    rope = 4 * T * hd * e if half else 0
    block = (norm + (3 if half else 1) * e * s * C + qk_norms + rope + attn + mask(e) * s * C  # attention half
             + norm + (2 if half else 1) * e * s * C + 4 * e * s * F + mask(e) * s * C)  # SwiGLU half
    head = norm + e * s * C + 8 * s  # final norm, lm_head input, targets
    return {
        "embed": 8 * s + mask(4) * s * C,  # token ids, embedding dropout
        "block": block,
        "block_input": 4 * s * C,  # fp32 residual stream
        "head": head,
        "head_checkpointed": head,
    }


def inference_block_bytes(m, tokens: int, precision: str, sdpa_math: bool = False) -> int:
    """Peak transient bytes of one block in an inference-mode forward over `tokens` tokens (an evaluation).

    Nothing is saved for backward, so the peak is inside one block: the
    MLP's hidden tensors (gpt2: fc's output and GELU's; modern: SwiGLU's
    gate, up and their product), modern's RoPE and q/k-norm copies, or math
    attention's (T x T) scores and softmax, beside the residual stream's
    (x, its norm, the sublayer output). Read off the CPU allocator
    (tests/engine/test_memory.py), SDPA's math kernel (`sdpa_math`) included.
    """
    e = 4 if precision == "fp32" else 2
    C = m.d_model
    if m.arch == "modern":
        per_token = max(3 * e * swiglu_hidden(m.d_ff) + 12 * C, (6 * e + 12) * C)
    else:
        per_token = 2 * e * m.d_ff + 12 * C
    if m.attention == "math":
        per_token = max(per_token, 2 * e * m.num_heads * m.max_seq_len + (3 * e + 9) * C)
    if m.attention == "fused" and sdpa_math:
        # SDPA's math kernel: fp32 scores, their softmax and _safe_softmax's
        # bool mask beside the fp32 q, k, v (and, for half inputs, their
        # upcasts); plus the causal mask as an fp32 (T x T) matrix per call.
        T = m.max_seq_len
        return tokens * max(per_token, 9 * m.num_heads * T + (24 if e == 4 else 30) * C) + 4 * T * T
    return tokens * per_token
