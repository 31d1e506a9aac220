"""Peak training memory of the GPT in engine/model/gpt.py (either arch), from the config alone.

Pure arithmetic (no torch), so the dashboard can re-estimate on every
keystroke. It models one training step as engine.train.trainer runs it (autocast
forward, `_, loss = model(x, y)`, backward, clip, fused AdamW or Muon, zero_grad),
eager or torch.compile'd (inductor; the default on CUDA), tensor by tensor: what autograd saves per op
(engine.memory.activations) and what else is live at each moment of the step.
Both paths are checked on the CPU against PyTorch itself (tests/memory_probe.py
counts saved tensors and the whole-step peak; tests/engine/test_memory.py);
CUDA differs only where noted (1-byte dropout masks, flash attention, fp32
softmax under autocast), and bench/memory_gpu.py measures it on a GPU.

The peak is the largest of these moments; `rows` is its breakdown and
`peak_phase` its name:

- end of forward: parameters + optimizer state + saved activations + weight
  copies (eager: every autocast copy, held by autocast's cache until
  `with autocast()` exits, even under checkpointing; compiled: those the
  graph saves) + the logits terms (eager: the logits, their fp32 upcast and
  the fp32 log-probabilities being computed; compiled: the saved logits).
- start of backward: eager: the saved log-probabilities plus nll_loss's and
  log_softmax's fp32 (tokens x vocab) gradients; compiled: the saved logits
  plus two logits-sized buffers. Usually the peak: the logits terms dominate
  small models.
- lm_head backward: the logits' gradient and the tied weight's gradient.
- first recomputed block (checkpointing): block inputs + one block's
  activations and weight copies + gradients in flight.
- end of backward: parameters + gradients + optimizer state, plus the tied
  embedding's partial gradients being summed; the peak for big models at
  small batches.
- optimizer step: parameters + gradients + optimizer state, plus (Muon) the
  step's working buffers (muon_step_bytes: one shape group's half-precision
  stack and Newton-Schulz products; counted in the "optimizer state" row).
- evaluation (between steps, eager, inference mode, `eval_multiple`
  training micro-batches at once): their logits, and one micro-batch's fp32
  upcast and cross-entropy log-probabilities at a time. The evaluation batch
  is the largest (up to 8 micro-batches) that stays within the training
  step's peak; the peak of compiled half-precision runs with a large
  vocabulary, where even one micro-batch exceeds it.

With train.loss_chunk the logits terms of every phase are those of
engine.model.losses' chunked loss instead (chunked_head_bytes, chunked_eval_bytes):
one chunk's logits at a time, in training and in evaluation. With a fused
loss (train.fused_loss resolved to liger or cce on CUDA) they are its
library's buffers (engine.memory.fused_loss; cce: no logits at all), in the same row.
With train.fp8 its layers keep no weight copy where autocast keeps one
(engine.memory.fp8); with train.attention_backend math the blocks
save SDPA's math kernel's tensors (engine.memory.activations).

Gradients do not exist before backward (set_to_none), except with gradient
accumulation, where earlier micro-steps' are held, and under DDP, whose
buckets hold them for the whole run (zeroed in place there, never set to
None: engine.train.build.zero_grad). Under DDP on CUDA, NCCL's own buffers
(outside PyTorch's allocator) add a row. On the CPU the total is the
process's RAM: the tensors, glibc's heap kept between steps ("allocator
slack") and the process itself ("Python + torch"), held to a real run's
peak RSS (tests/engine/test_memory.py). `run_verdict` is what a user reads:
never "fits" for a run the device cannot start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config.costs import block_matrix_params, block_matrix_shapes, count_params, flops_per_token
from engine.config.plan import DeviceInfo, RunPlan, plan_run, replan, with_train
from engine.config.run_config import RunConfig
from engine.memory.activations import inference_block_bytes, saved_activations
from engine.memory.fp8 import KEPT_BYTES, fp8_head_backward_bytes, fp8_weights
from engine.memory.fused_loss import cce_head_bytes, liger_chunk
from engine.memory.head import chunked_eval_bytes, chunked_head_bytes, head_phases

MiB = 1024**2
GiB = 1024**3
CUDA_CONTEXT_BYTES = 512 * MiB  # driver context + kernels, lazily loaded; not in memory_allocated
# cuBLAS workspaces come from the caching allocator (so they do count in
# memory_allocated): 32 MiB on Hopper, ~8 MiB before, one per thread that
# runs matmuls (forward, and autograd's device thread in backward).
CUBLAS_WORKSPACE_BYTES = 64 * MiB
# NCCL's channel buffers (send/receive per peer and protocol, ~4 MiB each by
# NCCL_BUFFSIZE, for up to 32 channels on NVLink) and its own workspaces: a
# rule of thumb per rank, allocated by NCCL itself, so only NVML sees it.
NCCL_BUFFER_BYTES = 384 * MiB
ALLOCATOR_SLACK = 0.10  # caching allocator's reserved-over-allocated (fragmentation, rounding)
# An eager half-precision step allocates and frees (tokens x vocab) blocks of
# two sizes (the half logits and their gradient; the fp32 upcast, log-probs
# and their gradients) between the other tensors, and the caching allocator
# cannot pack them: with expandable segments an H200 held 0.5-1.0 fp32 logits
# blocks beyond the allocated peak on all six eager rows of bench/memory_gpu.py
# (three presets, checkpointing off and on; bench/README.md), where 10% of the
# allocation fell 12-16% short on three. Compiled steps keep one logits dtype.
EAGER_LOGITS_SLACK = 0.75  # of one fp32 (tokens x vocab) block
# A CPU run's own process before its tensors: Python, torch's CPU libraries, the engine and what it
# imports (tokenizers, the TensorBoard writer), its threads. The peak RSS of a tiny-model training run
# (d_model 32, two layers: 0.9 MB of tensors) measured 344 MiB here (torch 2.13 CPU, Python 3.11,
# Linux x86-64, 2 cores); more cores add thread stacks and malloc arenas.
CPU_PROCESS_BYTES = 344 * MiB
# glibc's malloc raises its mmap threshold after the first large free, so later blocks of that size come
# from the heap, which it keeps between steps: a tiny run's peak RSS above the process was 1.28x (batch 8)
# and 1.30x (batch 16) the estimated tensors, 1.00x with MALLOC_MMAP_THRESHOLD_=131072 (no heap reuse).
CPU_MALLOC_SLACK = 0.30
EVAL_MULTIPLE_MAX = 8  # an evaluation batch holds at most this many training micro-batches
TIGHT = 0.85  # above this share of the card a run may fail on fragmentation or another process

# Row names in display order; "NCCL buffers" appears only with world_size > 1 on CUDA, "Python + torch"
# only on the CPU (where the process's own memory shares the RAM with the tensors).
ROWS = ("parameters", "gradients", "optimizer state", "autocast weight copies", "activations",
        "logits + cross-entropy", "CUDA context", "Python + torch", "NCCL buffers", "allocator slack")


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
    compiled: bool = False  # the path modelled: torch.compile (inductor) or eager
    eval_multiple: int = 1  # training micro-batches per evaluation batch (engine.train.trainer evaluates with it)

    @property
    def reserved_bytes(self) -> int:
        """What the caching allocator holds: compare with torch.cuda.max_memory_reserved."""
        return self.allocated_bytes + self.rows.get("allocator slack", 0)


def optimizer_state_bytes(m, t) -> int:
    """AdamW keeps two fp32 moments per weight; Muon one momentum buffer for the blocks' matrices."""
    n = count_params(m)
    if t.optimizer == "muon":
        muon = m.num_layers * block_matrix_params(m)
        return 8 * (n - muon) + 4 * muon
    return 8 * n


def muon_step_bytes(m, world_size: int = 1) -> int:
    """Peak bytes engine.optim.muon's step holds besides weights, gradients and momentum buffers.

    The shape groups go one at a time (the blocks' matrices of one shape, all
    layers); a rank orthogonalises its share of k = ceil(n / ranks) of a
    group's n matrices (rows x cols, m the smaller side) in half precision:
    the stack, which becomes the first iterate, beside the next iterate and
    the two (k x m x m) products of an iteration; under DDP then the
    all-gathered group (ranks x k matrices) beside the share's result.
    """
    groups: dict[tuple[int, int], int] = {}
    for shape, per_block in block_matrix_shapes(m):
        groups[shape] = groups.get(shape, 0) + per_block * m.num_layers
    world = max(1, world_size)
    peak = 0
    for (rows, cols), n in groups.items():
        k, small = -(-n // world), min(rows, cols)
        peak = max(peak, 2 * k * (2 * rows * cols + 2 * small * small))
        if world > 1:
            peak = max(peak, 2 * (world + 1) * k * rows * cols)
    return peak


def estimate_memory(cfg: RunConfig, *, device: str = "cuda", world_size: int = 1,
                    bf16_supported: bool = True, plan: RunPlan | None = None,
                    compiled: bool | None = None, loss_chunk: int | None = None) -> MemoryEstimate:
    """Peak memory of one training step of `cfg` on one device (see the module docstring).

    Micro-batch, accumulation, precision, compile, ranks and vocabulary come
    from the run plan (engine.config.plan); without one, a plan for a generic
    `device` ("cuda" unless told otherwise) with cfg.model.vocab_size is made
    here. `compiled` overrides the plan's torch.compile choice (the bench
    measures both paths of one config), `loss_chunk` cfg.train.loss_chunk
    (> 0: the loss is engine.model.losses.chunked_linear_cross_entropy with that
    many tokens a chunk).
    """
    if plan is None:
        plan = plan_run(cfg, world_size=world_size, device=DeviceInfo.kind(device, bf16_supported),
                        vocab_size=cfg.model.vocab_size)
    m, t = plan.model, cfg.train
    device = plan.device.type
    world, accum, micro = plan.world_size, plan.grad_accum_steps, plan.micro_batch
    T, V, C, L = m.max_seq_len, m.padded_vocab_size, m.d_model, m.num_layers
    precision = plan.precision
    compiled = plan.compile if compiled is None else compiled
    fused = plan.levers.fused_loss  # takes the place of the chunked loss where it resolves
    loss_chunk = 0 if fused != "off" else t.loss_chunk if loss_chunk is None else loss_chunk
    half = precision != "fp32"
    cuda = device.startswith("cuda")
    s = micro * T
    n = count_params(m)

    P = 4 * n  # fp32 master weights
    G = 4 * n
    O = optimizer_state_bytes(m, t)
    block_w = block_matrix_params(m)
    VC = V * C
    # FP8 layers (train.fp8) keep no weight copy where autocast keeps a half one (engine.memory.fp8).
    fp8_blk, fp8_head = fp8_weights(m, plan.levers.fp8_modules) if plan.levers.fp8 != "off" else (0, 0)
    e_copy = 2 if half else 0
    W_head = e_copy * (VC - fp8_head) + KEPT_BYTES * fp8_head  # lm_head's copy of its weight
    W_blk = e_copy * (block_w - fp8_blk) + KEPT_BYTES * fp8_blk
    W_all = W_head + L * W_blk
    # Gradients are live before backward with accumulation (earlier
    # micro-steps') and under DDP, whose buckets hold them for the whole run
    # (the .grad tensors are views of the buckets: gradient_as_bucket_view).
    g_live = G if accum > 1 or world > 1 else 0

    sdpa_math = plan.levers.attention_backend == "math"  # SDPA's math kernel (train.attention_backend)
    a = saved_activations(m, micro, T, precision, device, compiled, sdpa_math)
    ckpt = t.grad_checkpointing
    head = a["head_checkpointed"] if ckpt else a["head"]
    A = a["embed"] + L * (a["block_input"] if ckpt else a["block"]) + head
    saved = A + a["logits"]
    sV = s * V
    logits = head_phases(compiled, half, sV, VC)
    if fp8_head:  # the FP8 head's backward casts, beside the logits' gradient
        logits["lm_head backward"] += fp8_head_backward_bytes(s, V, C)
    tied = m.tie_embeddings
    wte_grad = 4 * VC  # the tied weight's lm_head gradient waits in autograd's buffer (untied: in .grad)
    if compiled:
        # The one backward graph returns every gradient; the embedding's dense
        # gradient and lm_head's (fp32, and its half original) are summed
        # inside it. fp32 logits are only freed at its end.
        # (An untied head's gradient needs no sum: measured tied only.)
        end_extra = ((6 if tied else 2) * VC if half else (4 * VC if tied else 0) + 4 * sV) + (G if accum > 1 else 0)
        W_fwd = W_bwd = W_head if ckpt else W_all  # saved copies; checkpointed blocks recast theirs
        L_saved = a["logits"]
    else:
        # At the end the embedding's dense gradient joins the buffered one;
        # autograd sums them out of place (the buffered grad is a transposed
        # layout), and with accumulation that sum is added into .grad. An
        # untied embedding's gradient goes straight to its .grad.
        end_extra = wte_grad * (2 + (accum > 1)) if tied else 0
        W_fwd, W_bwd = W_all, (W_head if ckpt else W_all)  # autocast's cache holds every copy to the end of forward
        L_saved = 0  # the log-probs are in logits' own phases
    if loss_chunk > 0 or fused != "off":
        # The loss (eager, even in a compiled model) makes its own head copy in
        # its forward phase and keeps two gradients instead of any (tokens x
        # vocab) tensor. Its head gradient is contiguous, so autograd adds the
        # embedding's into it in place: one gradient-sized buffer fewer.
        # The fused loss likewise, with its library's buffers (engine.memory.fused_loss).
        if fused == "cce":
            fwd, bwd, kept = cce_head_bytes(s, V, C, half)
        else:
            chunk = liger_chunk(s, V, C) if fused == "liger" else loss_chunk
            (fwd, bwd), kept = chunked_head_bytes(s, V, C, chunk, half), 4 * s * C + 4 * VC
        logits = {"end of forward": fwd, "start of backward": bwd, "lm_head backward": 0}
        L_saved, W_fwd, W_bwd = 0, W_fwd - W_head, W_bwd - W_head
        end_extra = wte_grad * (1 + (accum > 1)) if tied else 0
        saved = A + kept

    def phase(grads: int, copies: int, acts: int, head_bytes: int) -> dict[str, int]:
        return {"parameters": P, "gradients": grads, "optimizer state": O,
                "autocast weight copies": copies, "activations": acts,
                "logits + cross-entropy": head_bytes}

    phases = {
        "end of forward": phase(g_live, W_fwd, A, L_saved + logits["end of forward"]),
        "start of backward": phase(g_live, W_bwd, A, L_saved + logits["start of backward"]),
        "lm_head backward": phase(g_live, W_bwd, A, L_saved + logits["lm_head backward"]),
        "end of backward": phase(G + end_extra, 0, 16 * s, 0),  # ids and targets remain
        # AdamW's fused kernel holds nothing more; Muon's working buffers count with its state.
        "optimizer step": {**phase(G, 0, 16 * s, 0),
                           "optimizer state": O + (muon_step_bytes(m, world) if t.optimizer == "muon" else 0)},
    }
    if ckpt:
        # The last block is recomputed: one block's activations and weight
        # copies, plus the gradients in flight through its MLP (residual, the
        # MLP output's and the hidden layer's).
        e = 2 if half else 4
        in_flight = e * s * m.d_ff + (4 + e) * s * C
        phases["first recomputed block"] = phase(g_live + wte_grad, W_blk + (W_head if compiled else 0),
                                                 A - head + a["block"] + in_flight, 0)
    # Evaluation (engine.train.evaluate: the raw model, eager, inference mode)
    # between steps, on `k` training micro-batches at once. Its peak is
    # either inside a block (inference_block_bytes) or at the head: the
    # logits, then one micro-batch at a time their fp32 upcast (half runs)
    # and cross-entropy's fp32 log-probs; the autocast copies live until the
    # forward returns the logits. k is the largest (up to EVAL_MULTIPLE_MAX)
    # that stays within the training step's own peak, so evaluating never
    # raises the run's peak; with none, k = 1 and the evaluation may be it.
    def evaluation(k: int) -> dict[str, int]:
        block = phase(g_live, 0, inference_block_bytes(m, k * s, precision, sdpa_math), 0)
        if fused != "off":  # the fused loss's own buffers (liger makes its gradients here too)
            loss_bytes = (cce_head_bytes(k * s, V, C, half)[0] if fused == "cce" else
                          chunked_head_bytes(k * s, V, C, liger_chunk(k * s, V, C), half)[0])
            head_phase = phase(g_live, W_all - W_head, 0, loss_bytes)
        elif loss_chunk > 0:  # the model's own chunked loss, its own head copy
            head_phase = phase(g_live, W_all - W_head, 0, chunked_eval_bytes(k * s, V, C, loss_chunk, half))
        elif half and W_all > 8 * sV:
            head_phase = phase(g_live, W_all, 0, 2 * k * sV)
        else:
            head_phase = phase(g_live, 0, 0, (2 * k + 8 if half else 4 * k + 4) * sV)
        return max(block, head_phase, key=lambda p: sum(p.values()))

    train_peak = max(sum(v.values()) for v in phases.values())
    eval_multiple = max((k for k in range(1, EVAL_MULTIPLE_MAX + 1) if sum(evaluation(k).values()) <= train_peak),
                        default=1)
    phases["evaluation"] = evaluation(eval_multiple)
    totals = {k: sum(v.values()) for k, v in phases.items()}
    peak = max(totals, key=totals.__getitem__)
    rows = phases[peak]
    allocated = totals[peak] + (CUBLAS_WORKSPACE_BYTES if cuda else 0)
    rows["CUDA context"] = CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES if cuda else 0
    if device == "cpu":
        rows["Python + torch"] = CPU_PROCESS_BYTES
    if world > 1 and cuda:
        rows["NCCL buffers"] = NCCL_BUFFER_BYTES  # NCCL's own cudaMallocs, outside the caching allocator
    fragments = int(EAGER_LOGITS_SLACK * 4 * sV) if half and not compiled and not loss_chunk and fused == "off" else 0
    rows["allocator slack"] = (max(int(ALLOCATOR_SLACK * allocated), fragments) if cuda else
                               int(CPU_MALLOC_SLACK * allocated) if device == "cpu" else 0)
    return MemoryEstimate(
        num_params=n, micro_batch=micro, seq_len=T, precision=precision,
        tokens_per_step=plan.tokens_per_step, flops_per_token=flops_per_token(m, T),
        rows=rows, total_bytes=sum(rows.values()), peak_phase=peak,
        allocated_bytes=allocated, saved_bytes=saved, gradient_bytes=G, phases=totals, compiled=compiled,
        eval_multiple=eval_multiple,
    )


def verdict(total_bytes: int, gpu_bytes: int) -> str:
    """"fits", "tight" (over 85% of the card) or "does not fit"."""
    if total_bytes > gpu_bytes:
        return "does not fit"
    return "tight" if total_bytes > TIGHT * gpu_bytes else "fits"


NO_BF16 = "no bf16: fp16 "  # the verdict's prefix where the run only starts in fp16
DOES_NOT_RUN = "does not run"


def run_verdict(plan: RunPlan, capacity: int) -> tuple[str, RunPlan, MemoryEstimate]:
    """(verdict, the plan it is about, its estimate) of `plan` on a device of `capacity` bytes.

    A plan that can start gets verdict(). One that cannot is never "fits":
    bf16 asked of a card without it is judged as the fp16 run the card can
    start ("no bf16: fp16 fits", "no bf16: fp16 does not fit", ...); any
    other error gives "does not run" (the estimate is still the plan's own).
    """
    cfg = plan.config
    if plan.errors and cfg.train.precision == "bf16" and plan.device.type == "cuda" and not plan.device.bf16_native:
        fp16 = replan(plan, with_train(cfg, precision="fp16"))
        if not fp16.errors:
            est = estimate_memory(fp16.config, plan=fp16)
            return NO_BF16 + verdict(est.total_bytes, capacity), fp16, est
    est = estimate_memory(cfg, plan=plan)
    return (DOES_NOT_RUN if plan.errors else verdict(est.total_bytes, capacity)), plan, est


def max_batch_size(cfg: RunConfig, gpu_bytes: int, *, device: str = "cuda", world_size: int = 1,
                   bf16_supported: bool = True, plan: RunPlan | None = None, compiled: bool | None = None) -> int:
    """Largest `train.batch_size` (at the current grad_accum_steps) whose estimate fits; 0 if none.

    Batch sizes step by grad_accum_steps * world_size, the multiples that keep
    every micro-batch whole. The estimate grows with the batch, so bisect.
    """
    unit = max(1, cfg.train.grad_accum_steps) * max(1, plan.world_size if plan else world_size)

    def fits(micro: int) -> bool:
        trial = with_train(cfg, batch_size=micro * unit)
        est = (estimate_memory(trial, plan=replan(plan, trial), compiled=compiled) if plan is not None else
               estimate_memory(trial, device=device, world_size=world_size, bf16_supported=bf16_supported,
                               compiled=compiled))
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
