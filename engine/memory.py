"""Peak training memory of the GPT in engine/model.py (either arch), from the config alone.

Pure arithmetic (no torch), so the dashboard can re-estimate on every
keystroke. It models one eager training step as engine.trainer runs it
(autocast forward, `_, loss = model(x, y)`, backward, clip, fused AdamW,
`zero_grad(set_to_none=True)`), tensor by tensor: what autograd saves per op
(`saved_activations`) and what else is live at each moment of the step.
On CPU both are byte-exact against PyTorch (tests/engine/test_memory.py and
bench/memory_gpu.py count them); CUDA differs only where noted (1-byte
dropout masks, flash attention, fp32 softmax under autocast).

The peak is the largest of these moments; `rows` is its breakdown and
`peak_phase` its name:

- end of forward: parameters + optimizer state + saved activations + every
  autocast weight copy (autocast's cache holds them until `with autocast()`
  exits, even under checkpointing) + the logits, their fp32 upcast and the
  fp32 log-probabilities being computed.
- start of backward: the same without the upcast, plus nll_loss's and
  log_softmax's fp32 (tokens x vocab) gradients beside the saved
  log-probabilities; under checkpointing only lm_head's weight copy remains.
  Usually the peak: the logits terms dominate small models.
- lm_head backward: the logits' gradient and the tied weight's gradient.
- first recomputed block (checkpointing): block inputs + one block's
  activations and weight copies + gradients in flight.
- end of backward: parameters + gradients + optimizer state, plus the tied
  embedding's two partial gradients being summed; the peak for big models at
  small batches.

Gradients do not exist before backward (set_to_none), except with gradient
accumulation, where earlier micro-steps' are held. The logits exist only
inside the forward: the trainer keeps just the loss. torch.compile saves fewer activations than eager: for
compiled runs this errs on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine.config import RunConfig
from engine.plan import DeviceInfo, RunPlan, plan_run, replan, resolve_precision

MiB = 1024**2
GiB = 1024**3
CUDA_CONTEXT_BYTES = 512 * MiB  # driver context + kernels, lazily loaded; not in memory_allocated
# cuBLAS workspaces come from the caching allocator (so they do count in
# memory_allocated): 32 MiB on Hopper, ~8 MiB before, one per thread that
# runs matmuls (forward, and autograd's device thread in backward).
CUBLAS_WORKSPACE_BYTES = 64 * MiB
ALLOCATOR_SLACK = 0.10  # caching allocator's reserved-over-allocated (fragmentation, rounding)
TIGHT = 0.85  # above this share of the card a run may fail on fragmentation or another process

# Row names in display order; "DDP gradient buckets" appears only with world_size > 1.
ROWS = ("parameters", "gradients", "optimizer state", "autocast weight copies", "activations",
        "logits + cross-entropy", "DDP gradient buckets", "CUDA context", "allocator slack")


@dataclass(frozen=True)
class MemoryEstimate:
    num_params: int
    micro_batch: int  # sequences per forward on one device
    seq_len: int
    precision: str  # resolved: fp32 | bf16 | fp16
    tokens_per_step: int  # batch_size * seq_len, all ranks and micro-steps
    flops_per_token: int
    rows: dict[str, int]  # the peak moment's live bytes by kind (ROWS order); sums to total_bytes
    total_bytes: int  # what the card must hold, context and allocator slack included
    peak_phase: str = ""  # which moment of the step the rows describe
    allocated_bytes: int = 0  # tensors + cuBLAS workspaces: compare with torch.cuda.max_memory_allocated
    saved_bytes: int = 0  # what autograd holds after forward (no parameters, no weight copies)
    gradient_bytes: int = 0  # all gradients, whether or not they are live at the peak
    phases: dict[str, int] = field(default_factory=dict)  # allocated bytes at each moment


def swiglu_hidden(d_ff: int) -> int:
    """Equal to engine.model_modern.swiglu_hidden (repeated here: this module must not import torch)."""
    return max(64, round(2 * d_ff / 3 / 64) * 64)


def block_matrix_params(m) -> int:
    """Weights of one block's matrices: what Muon optimises and autocast copies to half precision."""
    C = m.d_model
    if m.arch == "modern":
        return 4 * C * C + 3 * C * swiglu_hidden(m.d_ff)  # q, k, v, o + gate, up, down
    return 4 * C * C + 2 * C * m.d_ff  # qkv, attn proj, fc, mlp proj


def count_params(m) -> int:
    """Equal to GPT(m).num_params(): embeddings (tied or not), positions (gpt2), blocks, final norm."""
    C, F = m.d_model, m.d_ff
    embeddings = m.padded_vocab_size * C * (1 if m.tie_embeddings else 2)
    if m.arch == "modern":
        # per block: matrices, two RMSNorm gains 2C, the q/k norm gains 2·head_dim; no biases, no positions
        return embeddings + m.num_layers * (block_matrix_params(m) + 2 * C + 2 * m.head_dim) + C
    # per block: matrices, biases 3C + C + F + C, two LayerNorms 4C
    block = block_matrix_params(m) + 9 * C + F
    return embeddings + m.max_seq_len * C + m.num_layers * block + 2 * C


def flops_per_token(m, seq_len: int | None = None) -> int:
    """Equal to GPT.flops_per_token: 6N (lookups excluded: positions, an untied input embedding) + 12·L·d·T."""
    T = seq_len or m.max_seq_len
    n = count_params(m)
    if m.arch != "modern":
        n -= m.max_seq_len * m.d_model
    if not m.tie_embeddings:
        n -= m.padded_vocab_size * m.d_model
    return 6 * n + 12 * m.num_layers * m.d_model * T


def optimizer_state_bytes(m, t) -> int:
    """AdamW keeps two fp32 moments per weight; Muon one momentum buffer for the blocks' matrices."""
    n = count_params(m)
    if t.optimizer == "muon":
        muon = m.num_layers * block_matrix_params(m)
        return 8 * (n - muon) + 4 * muon
    return 8 * n


def saved_activations(m, batch: int, seq: int, precision: str, device: str) -> dict[str, int]:
    """Bytes autograd saves in one training forward, by part: embed, block (each), head, logprobs.

    `block` is one non-checkpointed block; `block_input` what checkpointing
    keeps of one block instead. Derived op by op from eager PyTorch:
    LayerNorm keeps its fp32 input plus mean/rstd; each Linear its input (a
    half cast of the LayerNorm output under autocast); GELU its input; dropout
    a 1-byte mask on CUDA but a noise tensor of the input's dtype on CPU.
    """
    C, F, H, T = m.d_model, m.d_ff, m.num_heads, seq
    s = batch * seq  # tokens
    cuda = device.startswith("cuda")
    e = 4 if precision == "fp32" else 2  # matmul inputs/outputs under autocast
    drop = m.dropout > 0

    def mask(elt: int) -> int:  # bytes per element a dropout keeps for backward
        return (1 if cuda else elt) if drop else 0

    attn = _attention_core(m, batch, seq, e, cuda, mask)
    if m.arch == "modern":
        return _modern_saved(m, batch, seq, e, mask, attn)
    ln = 4 * s * C + 8 * s  # fp32 input + mean + rstd
    block = (ln + e * s * C + attn + mask(e) * s * C  # attention half
             + ln + e * s * C + 2 * e * s * F + mask(e) * s * C)  # MLP half
    return {
        "embed": 8 * s + 8 * T + mask(4) * s * C,  # token ids, positions, embedding dropout
        "block": block,
        "block_input": 4 * s * C,  # fp32 residual stream
        "head": ln + e * s * C + 8 * s,  # ln_f, lm_head input, targets
        "logprobs": 4 * s * m.padded_vocab_size,
    }


def _attention_core(m, batch: int, T: int, e: int, cuda: bool, mask) -> int:
    """What attention saves from q, k, v to the output projection's input (both blocks alike)."""
    C, H, s, drop = m.d_model, m.num_heads, batch * T, m.dropout > 0
    probs = batch * H * T * T  # elements of one layer's attention matrix
    if m.attention == "fused" and (cuda or not drop):
        # flash / memory-efficient (CUDA) or CPU flash: q, k, v stay views of
        # the qkv output; the output doubles as c_proj's input; logsumexp is fp32.
        attn = 3 * e * s * C + e * s * C + 4 * batch * H * T
    elif m.attention == "fused":
        # CPU with dropout falls back to SDPA's math path, which upcasts to
        # fp32: contiguous q/k/v copies, softmax, noise and dropped matrix.
        attn = 3 * 4 * s * C + 12 * probs + e * s * C
    else:
        # explicit matrix: matmul copies the transposed q, k, v views; softmax
        # runs in fp32 under CUDA autocast (same dtype on CPU), then dropout,
        # then a cast back for `att @ v` when the dtypes differ.
        sm = 4 if cuda else e
        after = e if sm != e else (sm if drop else 0)
        attn = 3 * e * s * C + T * T + probs * (sm + mask(sm) + after) + e * s * C
    return attn


def _modern_saved(m, batch: int, T: int, e: int, mask, attn: int) -> dict[str, int]:
    """saved_activations for arch "modern" (RoPE, RMSNorm, SwiGLU, QK-norm), op by op as on the CPU.

    RMSNorm (eager, composite) keeps its fp32 input, rstd and the normalised
    input; the per-head q/k norms do the same on the projections' outputs.
    Under autocast every Linear casts its input separately, so q, k and v
    keep three half copies (gate and up two); in fp32 they share one tensor.
    RoPE keeps its cos/sin: under autocast four half casts per layer; in fp32
    the model's own tables (buffers of 2 x max_seq_len x head_dim floats, left
    out like the parameters: under 1 MiB at head_dim 64 and 1024 positions). SwiGLU keeps gate's and up's outputs, silu's output and their
    product. On CUDA a fused RMSNorm may keep less: this errs on the safe side.
    """
    C, H, hd, F = m.d_model, m.num_heads, m.head_dim, swiglu_hidden(m.d_ff)
    s = batch * T
    half = e == 2
    norm = 8 * s * C + 4 * s  # fp32 input, normalised input, rstd
    qk_norms = 2 * (8 * s * C + 4 * s * H)
    rope = 4 * T * hd * e if half else 0
    block = (norm + (3 if half else 1) * e * s * C + qk_norms + rope + attn + mask(e) * s * C  # attention half
             + norm + (2 if half else 1) * e * s * C + 4 * e * s * F + mask(e) * s * C)  # SwiGLU half
    return {
        "embed": 8 * s + mask(4) * s * C,  # token ids, embedding dropout
        "block": block,
        "block_input": 4 * s * C,  # fp32 residual stream
        "head": norm + e * s * C + 8 * s,  # final norm, lm_head input, targets
        "logprobs": 4 * s * m.padded_vocab_size,
    }


def estimate_memory(cfg: RunConfig, *, device: str = "cuda", world_size: int = 1,
                    bf16_supported: bool = True, plan: RunPlan | None = None) -> MemoryEstimate:
    """Peak memory of one training step of `cfg` on one device (see the module docstring).

    Micro-batch, accumulation, precision, ranks and vocabulary come from the
    run plan (engine.plan); without one, a plan for a generic `device` ("cuda"
    unless told otherwise) with cfg.model.vocab_size is made here.
    """
    if plan is None:
        plan = plan_run(cfg, world_size=world_size, device=DeviceInfo.kind(device, bf16_supported),
                        vocab_size=cfg.model.vocab_size)
    m, t = plan.model, cfg.train
    device = plan.device.type
    world, accum, micro = plan.world_size, plan.grad_accum_steps, plan.micro_batch
    T, V, C, L = m.max_seq_len, m.padded_vocab_size, m.d_model, m.num_layers
    precision = plan.precision
    half = precision != "fp32"
    cuda = device.startswith("cuda")
    s = micro * T
    n = count_params(m)

    P = 4 * n  # fp32 master weights
    G = 4 * n
    block_w = block_matrix_params(m)
    O = optimizer_state_bytes(m, t)
    ddp = G if world > 1 else 0  # DDP's buckets mirror the gradients (gradient_as_bucket_view off)
    W_head = 2 * V * C if half else 0  # lm_head's copy of the tied embedding
    W_blk = 2 * block_w if half else 0
    W_all = W_head + L * W_blk
    g_live = G if accum > 1 else 0

    a = saved_activations(m, micro, T, precision, device)
    ckpt = t.grad_checkpointing
    A = a["embed"] + L * (a["block_input"] if ckpt else a["block"]) + a["head"]
    saved = A + a["logprobs"]
    sV = s * V
    # The logits live only inside the forward (engine.trainer drops them as it
    # returns), beside their fp32 upcast and the log-probs computed from them.
    logits_fwd = (2 if half else 4) * sV + (4 * sV if half else 0) + 4 * sV
    logits_bwd = 12 * sV  # saved log-probs, nll_loss's grad, log_softmax's grad (fp32)
    # lm_head backward: the logits' grad (cast to half), then the weight's grad
    # (half, then its fp32 copy).
    head_grad = max(6 * sV if half else 0, (2 if half else 4) * sV + (6 if half else 4) * V * C)
    wte_grad = 4 * V * C  # the tied weight's lm_head gradient waits in autograd's buffer (untied: in .grad)
    # At the end the embedding's dense gradient joins the buffered one; autograd
    # sums them out of place (the buffered grad is a transposed layout), and with
    # accumulation that sum is then added into the existing .grad. An untied
    # embedding's gradient goes straight to its .grad.
    emb_extra = wte_grad * (2 + (accum > 1)) if m.tie_embeddings else 0

    def phase(grads: int, copies: int, acts: int, logits: int) -> dict[str, int]:
        return {"parameters": P, "gradients": grads, "optimizer state": O,
                "autocast weight copies": copies, "activations": acts,
                "logits + cross-entropy": logits, "DDP gradient buckets": ddp}

    W_bwd = W_all if not ckpt else W_head
    phases = {
        "end of forward": phase(g_live, W_all, A, logits_fwd),
        "start of backward": phase(g_live, W_bwd, A, logits_bwd),
        "lm_head backward": phase(g_live, W_bwd, A, head_grad),
        "end of backward": phase(G + emb_extra, 0, 16 * s, 0),  # ids and targets remain
    }
    if ckpt:
        # The last block is recomputed: one block's activations and weight
        # copies, plus the gradients in flight through its MLP (residual, the
        # MLP output's and the hidden layer's).
        e = 2 if half else 4
        in_flight = e * s * m.d_ff + (4 + e) * s * C
        phases["first recomputed block"] = phase(g_live + wte_grad, W_blk,
                                                 A - a["head"] + a["block"] + in_flight, 0)
    totals = {k: sum(v.values()) for k, v in phases.items()}
    peak = max(totals, key=totals.__getitem__)
    rows = phases[peak]
    allocated = totals[peak] + (CUBLAS_WORKSPACE_BYTES if cuda else 0)
    rows["CUDA context"] = CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES if cuda else 0
    rows["allocator slack"] = int(ALLOCATOR_SLACK * allocated) if cuda else 0
    if not ddp:
        del rows["DDP gradient buckets"]
    return MemoryEstimate(
        num_params=n, micro_batch=micro, seq_len=T, precision=precision,
        tokens_per_step=plan.tokens_per_step, flops_per_token=flops_per_token(m, T),
        rows=rows, total_bytes=sum(rows.values()), peak_phase=peak,
        allocated_bytes=allocated, saved_bytes=saved, gradient_bytes=G, phases=totals,
    )


def verdict(total_bytes: int, gpu_bytes: int) -> str:
    """"fits", "tight" (over 85% of the card) or "does not fit"."""
    if total_bytes > gpu_bytes:
        return "does not fit"
    return "tight" if total_bytes > TIGHT * gpu_bytes else "fits"


def _with(cfg: RunConfig, **train) -> RunConfig:
    return replace(cfg, train=replace(cfg.train, **train))


def max_batch_size(cfg: RunConfig, gpu_bytes: int, *, device: str = "cuda", world_size: int = 1,
                   bf16_supported: bool = True, plan: RunPlan | None = None) -> int:
    """Largest `train.batch_size` (at the current grad_accum_steps) whose estimate fits; 0 if none.

    Batch sizes step by grad_accum_steps * world_size, the multiples that keep
    every micro-batch whole. The estimate grows with the batch, so bisect.
    """
    unit = max(1, cfg.train.grad_accum_steps) * max(1, plan.world_size if plan else world_size)

    def fits(micro: int) -> bool:
        trial = _with(cfg, batch_size=micro * unit)
        est = (estimate_memory(trial, plan=replan(plan, trial)) if plan is not None else
               estimate_memory(trial, device=device, world_size=world_size, bf16_supported=bf16_supported))
        return est.total_bytes <= gpu_bytes

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):  # gallop to a size that does not fit
        lo, hi = hi, hi * 2
        if hi > 1 << 24:  # a tiny model on a huge card: plenty is enough
            return lo * unit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo * unit


def format_bytes(n: float) -> str:
    """1234567890 -> "1.15 GiB"."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def oom_advice(cfg: RunConfig, gpu_name: str, gpu_bytes: int) -> str:
    """One paragraph: the estimate, the card, and the change most likely to make it fit."""
    est = estimate_memory(cfg)
    t, m = cfg.train, cfg.model
    big = sorted(((v, k) for k, v in est.rows.items() if v), reverse=True)[:2]
    parts = ", ".join(f"{k} {format_bytes(v)}" for v, k in big)
    head = (f"The estimated peak of this run is {format_bytes(est.total_bytes)} (largest: {parts}) "
            f"against {format_bytes(gpu_bytes)} on {gpu_name}.")
    if est.total_bytes <= TIGHT * gpu_bytes:
        return head + (" The estimate fits with room to spare, so another process may be holding GPU "
                       "memory (check nvidia-smi), or torch.compile's first steps needed extra.")
    tips: list[str] = []
    best = max_batch_size(cfg, gpu_bytes)
    if 0 < best < t.batch_size:
        tips.append(f"batch_size {best} fits")
        # Same effective batch through accumulation: the smallest grad_accum_steps that fits.
        for accum in range(t.grad_accum_steps + 1, t.batch_size + 1):
            if t.batch_size % accum == 0 and \
                    estimate_memory(_with(cfg, grad_accum_steps=accum)).total_bytes <= gpu_bytes:
                tips.append(f"or keep batch_size {t.batch_size} with grad_accum_steps {accum} "
                            f"(micro-batch {t.batch_size // accum})")
                break
    if not t.grad_checkpointing:
        ck = _with(cfg, grad_checkpointing=True)
        ck_best = max_batch_size(ck, gpu_bytes)
        if ck_best > best:
            tips.append(f"turn on grad checkpointing (train.grad_checkpointing = true; "
                        f"up to batch_size {ck_best} then fits)")
    if resolve_precision(t.precision, DeviceInfo.gpu())[0] == "fp32":
        bf = _with(cfg, precision="bf16")
        if max_batch_size(bf, gpu_bytes) > best:
            tips.append("use bf16 (train.precision = \"bf16\", or fp16 on GPUs without bf16)")
    if not tips:
        tips.append(f"even batch_size {max(1, t.grad_accum_steps)} does not fit; reduce model.max_seq_len "
                    f"({m.max_seq_len}), the model size or the vocabulary")
    return head + " To fit: " + "; ".join(tips) + "."
