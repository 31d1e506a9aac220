"""Count what PyTorch really holds during a training step: the yardstick of engine.memory.estimate's estimate.

Three measures, all on the CPU (and the first also on CUDA):
- `measure_saved_bytes`: bytes autograd saves in one training forward, by
  saved-tensor hooks, which also see what a torch.compile'd graph saves for
  its backward (AOTAutograd hands its saved values to `save_for_backward`);
- `measure_peak`: peak live tensor bytes of one eager step, op by op, with a
  dispatch mode (a CPU stand-in for torch.cuda.max_memory_allocated);
- `measure_peak_profiled`: the same peak from the CPU allocator's own
  allocation events (the profiler's memory records), which also sees the
  buffers inside compiled graphs that no dispatch mode is shown.

The training step is written like engine.train.trainer's: autocast forward that
keeps only the loss, backward (under DDP's no_sync but on the last micro-step),
clip, fused AdamW, engine.train.build.zero_grad.
tests/engine/test_memory.py and bench/memory_gpu.py both use this module.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from engine.config.run_config import RunConfig
from engine.model.gpt import GPT

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Weight copies: autocast's half ones, torchao's FP8 ones (train.fp8 tensorwise).
COPY_DTYPES = (torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2)
_VIEWS = {"TBackward0", "ViewBackward0", "TransposeBackward0", "PermuteBackward0", "ExpandBackward0",
          "UnsafeViewBackward0", "AliasBackward0"}


def autocast(device: str, precision: str):
    return torch.autocast(torch.device(device).type, dtype=DTYPES.get(precision, torch.bfloat16),
                          enabled=precision != "fp32")


def set_variant(model: GPT, attention: str, checkpointing: bool) -> None:
    """Switch a built model between attention paths and checkpointing without rebuilding it."""
    model.cfg.attention, model.grad_checkpointing = attention, checkpointing
    for block in model.h:
        block.attn.fused = attention == "fused"


def _weight_copy(t: torch.Tensor, params: set[int], shapes: set[tuple[int, ...]]) -> bool:
    """True for a half copy of a parameter (or a view of one): a weight copy, not an activation.

    Eager autocast copies carry a ToCopyBackward0 from the parameter; a
    compiled graph's saved copies (and torchao's FP8 weights) carry no
    history, so those are told by a parameter's shape (or its transpose) in
    a half or FP8 dtype.
    """
    fn = t.grad_fn
    if fn is None:
        return t.dtype in COPY_DTYPES and tuple(t.shape) in shapes
    while fn is not None and type(fn).__name__ in _VIEWS:
        fn = fn.next_functions[0][0]
    if fn is None or type(fn).__name__ != "ToCopyBackward0":
        return False
    leaf = fn.next_functions[0][0]
    var = getattr(leaf, "variable", None)
    return var is not None and var.untyped_storage().data_ptr() in params


def measure_saved(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> tuple[int, int]:
    """(activation bytes, weight-copy bytes) of distinct storages saved in one training forward with loss.

    `model` may be torch.compile'd; parameters themselves are not counted.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    shapes |= {s[::-1] for s in shapes}
    acts: dict[int, int] = {}
    copies: dict[int, int] = {}

    def pack(saved: torch.Tensor) -> torch.Tensor:
        # torchao's FP8 tensors are wrappers (no storage of their own): count the FP8 bytes they wrap.
        inner = getattr(saved, "_data", None)
        t = inner if isinstance(inner, torch.Tensor) else saved
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr and ptr not in params:
            into = copies if _weight_copy(t, params, shapes) else acts
            into[ptr] = max(into.get(ptr, 0), st.nbytes())
        return saved  # keeping the tensor keeps its address unique until we are done

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(x.device.type, precision):
        loss = model(x, y)[1]
    del loss
    return sum(acts.values()), sum(copies.values())


def measure_saved_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> int:
    """Activation bytes autograd saves in one training forward (weight copies left out)."""
    return measure_saved(model, x, y, precision)[0]


def train_step(model: torch.nn.Module, opt, scaler, micro_batches, precision: str, ddp=None) -> torch.Tensor:
    """One optimizer step written like engine.train.trainer's (which keeps only the loss, not the logits).

    `ddp`: the DistributedDataParallel wrapper `model` runs under (engine.train.build.wrap_ddp), or None.
    """
    from engine.model.losses import backward_scale
    from engine.train.build import zero_grad

    total = None
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
            with autocast(x.device.type, precision):
                loss = model(x, y, grad_scale=backward_scale(scaler, len(micro_batches), x.device))[1]
            loss = loss / len(micro_batches)
            scaler.scale(loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    zero_grad(opt, ddp)
    return total


def real_batches(cfg: RunConfig, device: str = "cpu", seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Micro-batches laid out as engine.data.loader's: x and y are views of one (B, T+1) buffer."""
    m, t = cfg.model, cfg.train
    micro = t.batch_size // t.grad_accum_steps
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(t.grad_accum_steps):
        buf = torch.randint(0, m.vocab_size, (micro, m.max_seq_len + 1), generator=g).to(device)
        out.append((buf[:, :-1], buf[:, 1:]))
    return out


class LiveTensors(TorchDispatchMode):
    """Live tensor bytes and their peak, op by op: a CPU stand-in for max_memory_allocated."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        ptr, size = st.data_ptr(), st.nbytes()
        if not ptr or ptr in self._refs:
            return
        self.live += size
        self.peak = max(self.peak, self.live)

        def freed(_, ptr=ptr, size=size) -> None:
            self.live -= size
            self._refs.pop(ptr, None)

        self._refs[ptr] = weakref.ref(st, freed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def _prepare(cfg: RunConfig, model: GPT | None):
    """Model (checkpointing and attention from cfg), optimizer with its state made, batches, resident bytes."""
    m = cfg.model
    torch.manual_seed(0)
    model = model if model is not None else GPT(m)
    set_variant(model.train(), m.attention, cfg.train.grad_checkpointing)
    model.loss_chunk = cfg.train.loss_chunk
    if cfg.train.optimizer == "muon":
        from engine.optim.groups import make_optimizer

        opt = make_optimizer(model, cfg.train, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    for p in model.parameters():  # a step on zero gradients creates the optimizer's state cheaply
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    batches = real_batches(cfg)
    resident = [*model.parameters(), *(v for s in opt.state.values() for v in s.values()
                                       if isinstance(v, torch.Tensor)),
                *(b[0] for b in batches)]
    return model, opt, batches, resident


def measure_peak(cfg: RunConfig, precision: str, model: GPT | None = None) -> int:
    """Peak live tensor bytes of one eager CPU training step of `cfg` (its batch and seq), optimizer state made.

    `model` (built from cfg.model) may be passed to save rebuilding it; its
    checkpointing and attention are set from cfg.
    """
    model, opt, batches, resident = _prepare(cfg, model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    mode = LiveTensors()
    with mode:
        for t in resident:
            mode.track(t)
        mode.peak = mode.live
        train_step(model, opt, scaler, batches, precision)
    return mode.peak


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def profiled_peak(fn) -> tuple[int, list[int]]:
    """Run fn() under the profiler's CPU memory records: (peak growth of live bytes, running total per event).

    Only allocations made inside are counted: frees of older blocks are
    ignored by the allocator's reporter, so the peak is over the live bytes
    at the start.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live, peak, trace = 0, 0, []
    for _, n in events:
        live += n
        peak = max(peak, live)
        trace.append(live)
    return peak, trace


def measure_peak_profiled(cfg: RunConfig, precision: str, *, compiled: bool, model: GPT | None = None,
                          warmup: int = 1, evaluate: bool = False, eval_multiple: int = 1, ddp: bool = False) -> int:
    """Peak live bytes of one CPU training step, eager or torch.compile'd (inductor), from allocator events.

    The compiled model runs `warmup` steps first (compilation, with the
    batches' real strides), as engine.train.trainer warms it up before the clock.
    `evaluate` adds one evaluation batch of `eval_multiple` micro-batches
    after the step, as the trainer evaluates (engine.train.evaluate.score_tokens on
    the eager model, the cross-entropy one micro-batch at a time). `ddp` wraps the
    model as the trainer does under torchrun (a process group must exist) and
    runs two steps first: DDP rebuilds its buckets once, at the second step.
    """
    import torch._dynamo

    model, opt, batches, resident = _prepare(cfg, model)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    run, wrapper = model, None
    if ddp:
        from engine.config.plan import DeviceInfo
        from engine.train.build import wrap_ddp
        from engine.train.runtime import Runtime

        run = wrapper = wrap_ddp(model, Runtime(torch.device("cpu"), DeviceInfo(), distributed=True), lambda e: None)
        for _ in range(2):
            train_step(run, opt, scaler, batches, precision, wrapper)
        resident += [p.grad for p in model.parameters()]  # views of the buckets, which live for the run
    if compiled:
        torch._dynamo.reset()
        run = torch.compile(model, backend="inductor")
        for _ in range(warmup):
            for x, y in batches:
                with autocast("cpu", precision):
                    loss = run(x, y)[1]
                loss.backward()
            opt.zero_grad(set_to_none=True)
    base = _storage_bytes(resident)

    def step() -> None:
        train_step(run, opt, scaler, batches, precision, wrapper)
        if evaluate:
            from engine.train.evaluate import score_tokens

            micro, T = batches[0][0].shape
            ids = torch.randint(0, cfg.model.vocab_size, (eval_multiple * micro * T + 1,)).numpy()
            score_tokens(model, ids, seq_len=T, batch_size=eval_multiple * micro, device=torch.device("cpu"),
                         max_batches=1, autocast=autocast("cpu", precision), loss_rows=micro)

    peak, _ = profiled_peak(step)
    return base + peak
