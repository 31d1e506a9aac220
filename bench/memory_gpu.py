"""Check engine.memory's estimate against what PyTorch really allocates.

On a CUDA machine: real training steps (engine.model.GPT, fused AdamW,
autocast, zero_grad(set_to_none=True), eager, no torch.compile, the step
written like engine.trainer's) for 3 presets x {fp32, bf16} x checkpointing
{off, on} x two batch sizes; the peak of the last step
(torch.cuda.max_memory_allocated / max_memory_reserved after
reset_peak_memory_stats) against the estimate's allocated bytes.

Everywhere (and on CPU only these), at a reduced batch and sequence length:
1. the bytes autograd saves during one training-mode forward, counted with
   saved_tensors_hooks (deduplicated by storage; parameters and autocast
   weight copies left out), against the estimate's `saved_bytes`;
2. on CPU, the peak of live tensor bytes over a whole training step, tracked
   op by op with a dispatch mode, against the estimate's `allocated_bytes`
   for device "cpu" (which has no CUDA context, workspaces or slack).
tests/engine/test_memory.py imports `measure_saved_bytes` and `measure_peak`.

    python bench/memory_gpu.py                 # CPU: one to two minutes
    python bench/memory_gpu.py --device cuda   # GPU grid, a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from engine.config import RunConfig, build_config  # noqa: E402
from engine.memory import estimate_memory, format_bytes  # noqa: E402
from engine.model import GPT  # noqa: E402
from engine.optim import make_optimizer  # noqa: E402

PRESETS = ("tiny", "small", "medium")
GPU_BATCHES = {"tiny": (16, 128), "small": (8, 64), "medium": (4, 32)}  # all fit 80 GB in fp32
_VIEWS = {"TBackward0", "ViewBackward0", "TransposeBackward0", "PermuteBackward0", "ExpandBackward0",
          "UnsafeViewBackward0", "AliasBackward0"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(device: str, precision: str):
    return torch.autocast(torch.device(device).type, dtype=DTYPES.get(precision, torch.bfloat16),
                          enabled=precision != "fp32")


def _weight_copy(t: torch.Tensor, params: set[int]) -> bool:
    """True for autocast's half copy of a parameter (or a view of one): not an activation."""
    fn = t.grad_fn
    while fn is not None and type(fn).__name__ in _VIEWS:
        fn = fn.next_functions[0][0]
    if fn is None or type(fn).__name__ != "ToCopyBackward0":
        return False
    leaf = fn.next_functions[0][0]
    var = getattr(leaf, "variable", None)
    return var is not None and var.untyped_storage().data_ptr() in params


def measure_saved_bytes(model: GPT, x: torch.Tensor, y: torch.Tensor, precision: str) -> int:
    """Bytes of distinct storages autograd saves in one training forward (with loss)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr and ptr not in params and not _weight_copy(t, params):
            storages[ptr] = max(storages.get(ptr, 0), st.nbytes())
        return t  # keeping the tensor keeps its address unique until we are done

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(x.device.type, precision):
        loss = model(x, y)[1]
    del loss
    return sum(storages.values())


def set_variant(model: GPT, attention: str, checkpointing: bool) -> None:
    """Switch a built model between attention paths and checkpointing without rebuilding it."""
    model.cfg.attention, model.grad_checkpointing = attention, checkpointing
    for block in model.h:
        block.attn.fused = attention == "fused"


def estimate_for(cfg: RunConfig, batch: int, seq: int, precision: str, attention: str, ckpt: bool,
                 device: str):
    model = dataclasses.replace(cfg.model, max_seq_len=seq, attention=attention)
    train = dataclasses.replace(cfg.train, batch_size=batch, grad_accum_steps=1, precision=precision,
                                grad_checkpointing=ckpt)
    return estimate_memory(dataclasses.replace(cfg, model=model, train=train), device=device)


def saved_rows(device: str, batch: int, seq: int, presets, precisions) -> list[tuple]:
    rows = []
    for preset in presets:
        cfg = build_config(preset)
        torch.manual_seed(0)
        model = GPT(cfg.model).to(device)
        T = min(seq, cfg.model.max_seq_len)
        x = torch.randint(0, cfg.model.vocab_size, (batch, T), device=device)
        y = torch.randint(0, cfg.model.vocab_size, (batch, T), device=device)
        for attention in ("fused", "math"):
            for precision in precisions:
                for ckpt in (False, True):
                    set_variant(model, attention, ckpt)
                    measured = measure_saved_bytes(model, x, y, precision)
                    est = estimate_for(cfg, batch, T, precision, attention, ckpt, device).saved_bytes
                    rows.append((preset, attention, precision, "on" if ckpt else "off", est, measured))
        del model
    return rows


def train_step(model: GPT, opt, scaler, micro_batches, precision: str) -> None:
    """One optimizer step written like engine.trainer's (which keeps only the loss, not the logits)."""
    for x, y in micro_batches:
        with _autocast(x.device.type, precision):
            loss = model(x, y)[1]
        loss = loss / len(micro_batches)
        scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)


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


def measure_peak(cfg: RunConfig, precision: str, model: GPT | None = None) -> int:
    """Peak live tensor bytes of one CPU training step of `cfg` (its batch and seq), optimizer state made.

    `model` (built from cfg.model) may be passed to save rebuilding it; its
    checkpointing is set from cfg.
    """
    m, t = cfg.model, cfg.train
    torch.manual_seed(0)
    model = model if model is not None else GPT(m)
    set_variant(model.train(), m.attention, t.grad_checkpointing)
    opt = make_optimizer(model, t, fused=True) if t.optimizer == "muon" else \
        torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    micro = t.batch_size // t.grad_accum_steps
    batches = [(torch.randint(0, m.vocab_size, (micro, m.max_seq_len)),
                torch.randint(0, m.vocab_size, (micro, m.max_seq_len))) for _ in range(t.grad_accum_steps)]
    for p in model.parameters():  # a step on zero gradients creates AdamW's state cheaply
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    mode = LiveTensors()
    with mode:
        for p in model.parameters():
            mode.track(p)
        for state in opt.state.values():
            for v in state.values():
                mode.track(v)
        for x, y in batches:
            mode.track(x)
            mode.track(y)
        mode.peak = mode.live
        train_step(model, opt, scaler, batches, precision)
    return mode.peak


# (preset, model overrides, batch, seq, [(precision, checkpointing)]): each
# estimate peaks at a different moment of the step (named in the last column).
PEAK_CASES = [
    ("tiny", {}, 4, 128, [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]),
    ("small", {}, 4, 128, [("fp32", False), ("bf16", True)]),
    ("medium", {}, 1, 64, [("bf16", False)]),
    ("tiny", {"vocab_size": 512}, 8, 256, [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]),
]


def cpu_peak_rows(cases=PEAK_CASES) -> list[tuple]:
    rows = []
    for preset, model_overrides, batch, seq, variants in cases:
        name = preset + (f"/v{model_overrides['vocab_size']}" if "vocab_size" in model_overrides else "")
        model = None
        for precision, ckpt in variants:
            cfg = build_config(preset, None, {"model": {**model_overrides, "max_seq_len": seq},
                                              "train": {"batch_size": batch, "precision": precision,
                                                        "grad_checkpointing": ckpt}})
            model = model or GPT(cfg.model)
            est = estimate_memory(cfg, device="cpu")
            rows.append((name, f"{batch}x{seq}", precision, "on" if ckpt else "off", est.allocated_bytes,
                         measure_peak(cfg, precision, model), est.peak_phase))
    return rows


def train_peak(cfg: RunConfig, batch: int, precision: str, ckpt: bool, steps: int) -> tuple[int, int]:
    """(max allocated, max reserved) over the last of `steps` real training steps, eager."""
    m = cfg.model
    torch.cuda.empty_cache()
    torch.manual_seed(0)
    model = GPT(m, grad_checkpointing=ckpt).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    batches = [(torch.randint(0, m.vocab_size, (batch, m.max_seq_len), device="cuda"),
                torch.randint(0, m.vocab_size, (batch, m.max_seq_len), device="cuda"))]
    for i in range(steps):
        if i == steps - 1:  # the first steps create optimizer state and warm the allocator
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        train_step(model, opt, scaler, batches, precision)
    torch.cuda.synchronize()
    out = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    del model, opt, batches
    return out


def print_rows(rows: list[tuple], title: str, second: str = "attention") -> None:
    print(f"\n{title}")
    print(f"{'preset':9} {second:9} {'prec':5} {'ckpt':4} {'estimated':>12} {'measured':>12} {'error':>8}")
    errs = []
    for preset, col2, precision, ckpt, est, got, *extra in rows:
        err = 100.0 * (est - got) / got
        errs.append(abs(err))
        print(f"{preset:9} {col2:9} {precision:5} {ckpt:4} {format_bytes(est):>12} "
              f"{format_bytes(got):>12} {err:+7.2f}%  {' '.join(extra)}".rstrip())
    print(f"mean absolute error {sum(errs) / len(errs):.2f}%, worst {max(errs):.2f}%")


def gpu_grid(presets, steps: int) -> None:
    capacity = torch.cuda.get_device_properties(0).total_memory
    print(f"\npeak of a training step on {torch.cuda.get_device_name(0)} (eager, fused AdamW, {steps} steps)")
    print(f"{'preset':8} {'prec':5} {'ckpt':4} {'batch':>5} {'est alloc':>11} {'max alloc':>11} {'error':>8} "
          f"{'est resv':>11} {'max resv':>11} {'error':>8}  phase")
    errs = []
    for preset in presets:
        cfg = build_config(preset)
        for precision in ("fp32", "bf16"):
            for ckpt in (False, True):
                for batch in GPU_BATCHES[preset]:
                    est = estimate_for(cfg, batch, cfg.model.max_seq_len, precision, cfg.model.attention, ckpt,
                                       "cuda")
                    if est.allocated_bytes > 0.9 * capacity:
                        print(f"{preset:8} {precision:5} {'on' if ckpt else 'off':4} {batch:5} skipped: estimate "
                              f"{format_bytes(est.allocated_bytes)} too close to the card")
                        continue
                    alloc, resv = train_peak(cfg, batch, precision, ckpt, steps)
                    est_resv = est.allocated_bytes + est.rows["allocator slack"]
                    ea = 100.0 * (est.allocated_bytes - alloc) / alloc
                    er = 100.0 * (est_resv - resv) / resv
                    errs.append(abs(ea))
                    print(f"{preset:8} {precision:5} {'on' if ckpt else 'off':4} {batch:5} "
                          f"{format_bytes(est.allocated_bytes):>11} {format_bytes(alloc):>11} {ea:+7.2f}% "
                          f"{format_bytes(est_resv):>11} {format_bytes(resv):>11} {er:+7.2f}%  {est.peak_phase}",
                          flush=True)
    if errs:
        print(f"mean absolute error (allocated) {sum(errs) / len(errs):.2f}%, worst {max(errs):.2f}%")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    p.add_argument("--batch", type=int, default=2, help="batch of the saved-tensor comparison")
    p.add_argument("--seq", type=int, default=0, help="sequence length of the saved-tensor comparison "
                                                       "(default 32 on CPU, 128 on GPU)")
    p.add_argument("--steps", type=int, default=3, help="training steps per GPU measurement")
    args = p.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    presets = [s for s in args.presets.split(",") if s]
    start = time.perf_counter()
    seq = args.seq or (128 if device.startswith("cuda") else 32)
    print_rows(saved_rows(device, args.batch, seq, presets, ("fp32", "bf16")),
               f"bytes autograd saves in one training forward on {device} (batch {args.batch}, seq {seq}, dropout 0.1)")
    if device.startswith("cuda"):
        gpu_grid(presets, args.steps)
    else:
        cases = [c for c in PEAK_CASES if c[0] in presets]
        print_rows(cpu_peak_rows(cases), "peak live tensor bytes of one CPU training step (the estimate's peak "
                                         "moment last)", second="batch")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
