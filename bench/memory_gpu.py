"""Check engine.memory.estimate's estimate against what PyTorch really allocates, eager and torch.compile'd.

On a CUDA machine (`gpu_memory_rows`, also called by bench/gpu_check.py):
for each preset x {eager, compiled} x checkpointing {off, on} (and small and
medium with the chunked loss, train.loss_chunk 4096, and with the levers
of LEVER_ROWS: FP8 rowwise, SDPA's math kernel), bf16 (fp16
on cards without bf16), real training steps written like engine.train.trainer's
(GPT, engine.optim.groups's fused AdamW, autocast, the loader's batch layout,
zero_grad(set_to_none=True), torch.compile(dynamic=False) for compiled
rows) followed by one evaluation batch (engine.train.evaluate.score_tokens,
as the trainer evaluates); over the last step and that evaluation:
- torch.cuda.max_memory_allocated against the estimate's allocated bytes,
- torch.cuda.max_memory_reserved against allocated + allocator slack,
- NVML's used memory of this process (after the step) against the
  estimate's total (CUDA context included).
Compile time (the first step, compilation included) is reported apart.

Everywhere (and on CPU only these), at a reduced batch and sequence length,
with tests/memory_probe.py's yardsticks:
1. the bytes autograd saves during one training forward, eager and compiled
   (inductor on the CPU), against the estimate's `saved_bytes`;
2. the peak of live bytes over a whole CPU training step, eager and
   compiled, against the estimate's `allocated_bytes` for device "cpu".

    python bench/memory_gpu.py                 # CPU: a few minutes (inductor compiles on the CPU)
    python bench/memory_gpu.py --device cuda   # GPU grid, about two minutes on an H100
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.config.loading import build_config  # noqa: E402
from engine.config.run_config import RunConfig  # noqa: E402
from engine.memory.estimate import estimate_memory, format_bytes  # noqa: E402
from engine.model.gpt import GPT  # noqa: E402
from tests.memory_probe import autocast, measure_peak, measure_peak_profiled, measure_saved, set_variant, train_step  # noqa: E402

PRESETS = ("tiny", "small", "medium")
GPU_BATCH = {"tiny": 32, "small": 16, "medium": 16}  # moderate: the grid must finish in about two minutes
# Levers whose memory rows are read off source (engine.memory.fp8) or the CPU (SDPA's math kernel).
LEVER_ROWS = ({"fp8": "rowwise", "fp8_modules": "mlp+head"}, {"attention_backend": "math"})


def _nvml_device_used() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:  # no pynvml, no driver, or a UUID in CUDA_VISIBLE_DEVICES
        return None


# The device's used memory before this process touched it (when imported first).
NVML_BASELINE = None if torch.cuda.is_available() and torch.cuda.is_initialized() else _nvml_device_used()


def nvml_used(baseline: int | None) -> tuple[int | None, str]:
    """This process's GPU memory as NVML sees it: (bytes, how it was read)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        mine = [p for p in procs if p.pid == os.getpid()] or (procs if len(procs) == 1 else [])
        if mine and mine[0].usedGpuMemory:
            return int(mine[0].usedGpuMemory), "process"
        if baseline is not None:
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used) - baseline, "device - baseline"
    except Exception:
        pass
    return None, "unavailable"


def estimate_for(cfg: RunConfig, batch: int, seq: int, precision: str, attention: str, ckpt: bool,
                 device: str, compiled: bool = False):
    model = dataclasses.replace(cfg.model, max_seq_len=seq, attention=attention)
    train = dataclasses.replace(cfg.train, batch_size=batch, grad_accum_steps=1, precision=precision,
                                grad_checkpointing=ckpt)
    return estimate_memory(dataclasses.replace(cfg, model=model, train=train), device=device, compiled=compiled)


# ----------------------------------------------------------------------------- CPU (and any device): saved bytes

def saved_rows(device: str, batch: int, seq: int, presets, precisions, compiled: bool = False) -> list[tuple]:
    """(preset, path, precision, ckpt, estimated, measured) of the activation bytes saved by one forward.

    Compiled rows on the CPU run without dropout: with it, the CPU's compiled
    SDPA decomposes into the explicit matrix (on CUDA it stays flash).
    """
    rows = []
    for preset in presets:
        cfg = build_config(preset, None, {"model": {"dropout": 0.0}} if compiled and device == "cpu" else None)
        torch.manual_seed(0)
        model = GPT(cfg.model).to(device)
        T = min(seq, cfg.model.max_seq_len)
        x = torch.randint(0, cfg.model.vocab_size, (batch, T), device=device)
        y = torch.randint(0, cfg.model.vocab_size, (batch, T), device=device)
        variants = [("fused", False), ("fused", True)] if compiled else \
            [(a, c) for a in ("fused", "math") for c in (False, True)]
        for attention, ckpt in variants:
            for precision in precisions:
                set_variant(model, attention, ckpt)
                run = model
                if compiled:
                    torch._dynamo.reset()
                    run = torch.compile(model, dynamic=False)
                measured = measure_saved(run, x, y, precision)[0]
                est = estimate_for(cfg, batch, T, precision, attention, ckpt, device, compiled).saved_bytes
                path = ("compiled " if compiled else "") + attention
                rows.append((preset, path, precision, "on" if ckpt else "off", est, measured))
        del model
    return rows


# (preset, model overrides, batch, seq, [(precision, checkpointing)]): each
# estimate peaks at a different moment of the step (named in the last column).
PEAK_CASES = [
    ("tiny", {}, 4, 128, [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]),
    ("small", {}, 4, 128, [("fp32", False), ("bf16", True)]),
    ("medium", {}, 1, 64, [("bf16", False)]),
    ("tiny", {"vocab_size": 512}, 8, 256, [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]),
]
# Compiled: fewer cases (each compiles on the CPU); dropout 0, so fused
# attention is the flash kernel as on CUDA (the CPU falls back to the
# matrix with dropout).
COMPILED_PEAK_CASES = [
    ("tiny", {"num_layers": 2, "dropout": 0.0}, 3, 128, [("bf16", False), ("fp32", False), ("bf16", True)]),
    ("tiny", {"num_layers": 2, "vocab_size": 512, "dropout": 0.0}, 8, 128, [("bf16", False)]),
]


def cpu_peak_rows(cases=PEAK_CASES, compiled: bool = False) -> list[tuple]:
    rows = []
    for preset, model_overrides, batch, seq, variants in cases:
        name = preset + (f"/v{model_overrides['vocab_size']}" if "vocab_size" in model_overrides else "")
        model = None
        for precision, ckpt in variants:
            cfg = build_config(preset, None, {"model": {**model_overrides, "max_seq_len": seq},
                                              "train": {"batch_size": batch, "precision": precision,
                                                        "grad_checkpointing": ckpt}})
            model = model or GPT(cfg.model)
            est = estimate_memory(cfg, device="cpu", compiled=compiled)
            if compiled:
                got = measure_peak_profiled(cfg, precision, compiled=True, model=model, evaluate=True)
            else:
                got = measure_peak(cfg, precision, model)
                est_phases = {k: v for k, v in est.phases.items() if k != "evaluation"}
                est = dataclasses.replace(est, allocated_bytes=max(est_phases.values()),
                                          peak_phase=max(est_phases, key=est_phases.__getitem__))
            rows.append((name, f"{batch}x{seq}", precision, "on" if ckpt else "off", est.allocated_bytes, got,
                         est.peak_phase))
    return rows


def print_rows(rows: list[tuple], title: str, second: str = "attention") -> None:
    print(f"\n{title}")
    print(f"{'preset':9} {second:14} {'prec':5} {'ckpt':4} {'estimated':>12} {'measured':>12} {'error':>8}")
    errs = []
    for preset, col2, precision, ckpt, est, got, *extra in rows:
        err = 100.0 * (est - got) / got
        errs.append(abs(err))
        print(f"{preset:9} {col2:14} {precision:5} {ckpt:4} {format_bytes(est):>12} "
              f"{format_bytes(got):>12} {err:+7.2f}%  {' '.join(extra)}".rstrip())
    print(f"mean absolute error {sum(errs) / len(errs):.2f}%, worst {max(errs):.2f}%")


# ----------------------------------------------------------------------------- CUDA grid

def _release() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def _phase_peaks(run, model, opt, batch_xy, precision: str) -> dict[str, int]:
    """Peak allocated bytes within forward, backward, optimizer step, and saved bytes: one more step, split."""
    x, y = batch_xy
    out = {}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with autocast("cuda", precision):
        loss = run(x, y)[1]
    torch.cuda.synchronize()
    out["forward"], out["after forward"] = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss.backward()
    torch.cuda.synchronize()
    out["backward"], out["after backward"] = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
    del loss
    torch.cuda.reset_peak_memory_stats()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    out["optimizer"] = torch.cuda.max_memory_allocated()
    out["saved activations"], out["saved weight copies"] = measure_saved(run, x, y, precision)
    return out


def gpu_row(preset: str, batch: int, compiled: bool, ckpt: bool, steps: int = 2,
            nvml_baseline: int | None = None, diagnose: bool = False, loss_chunk: int = 0,
            levers: dict | None = None) -> dict:
    """One row of the CUDA grid (see the module docstring); errors (an OOM) come back in "error".

    `levers`: speed-lever settings (train.fp8, train.attention_backend, ...), resolved for this card by the
    run plan; the model is built with them, as engine.train.build builds it.

    `diagnose` adds "phases_measured" (peaks of forward, backward and the
    optimizer step, measured saved bytes) and the estimate's "phases" and
    "saved_estimate", from one more step after the measured one.
    """
    from engine.optim.groups import make_optimizer
    from engine.train.evaluate import score_tokens

    major = torch.cuda.get_device_capability()[0]
    precision = "bf16" if major >= 8 else "fp16"
    cfg = build_config(preset, None, {"train": {"batch_size": batch, "precision": precision,
                                                "grad_checkpointing": ckpt, "compile": "on" if compiled else "off",
                                                "loss_chunk": loss_chunk, **(levers or {})}})
    from engine.config.plan import plan_run
    from engine.train.runtime import device_info

    plan = plan_run(cfg, device=device_info(torch.device("cuda", torch.cuda.current_device())),
                    vocab_size=cfg.model.vocab_size)
    est = estimate_memory(cfg, plan=plan, compiled=compiled)
    row = {"preset": preset, "compile": compiled, "checkpointing": ckpt, "loss_chunk": loss_chunk, "batch": batch,
           "lever": " ".join(str(v) for v in (levers or {}).values()),
           "precision": precision,
           "seq": cfg.model.max_seq_len, "eval_multiple": est.eval_multiple, "estimate_allocated": est.allocated_bytes,
           "estimate_reserved": est.reserved_bytes, "estimate_total": est.total_bytes, "peak_phase": est.peak_phase,
           "max_allocated": None, "max_reserved": None, "nvml_used": None, "nvml_source": "",
           "err_alloc_pct": None, "err_reserved_pct": None, "err_nvml_pct": None,
           "compile_s": None, "step_s": None, "error": ""}
    if plan.errors:  # a lever this card cannot run (FP8 before capability 8.9)
        row["error"] = f"skipped: {plan.errors[0][:120]}"
        return row
    _release()
    model = opt = run = batches = None
    try:
        torch.manual_seed(0)
        model = GPT(cfg.model, grad_checkpointing=ckpt, loss_chunk=loss_chunk, levers=plan.levers).cuda().train()
        opt = make_optimizer(model, cfg.train)
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        run = torch.compile(model, dynamic=False) if compiled else model
        buf = torch.randint(0, cfg.model.vocab_size, (batch, cfg.model.max_seq_len + 1), device="cuda")
        batches = [(buf[:, :-1], buf[:, 1:])]  # engine.data.loader's layout: views of one (B, T + 1) buffer
        eval_batch = batch * est.eval_multiple  # as engine.train.trainer evaluates
        ids = torch.randint(0, cfg.model.vocab_size, (eval_batch * cfg.model.max_seq_len + 1,)).numpy()
        for i in range(max(2, steps)):
            if i == max(2, steps) - 1:  # the earlier steps compile, create optimizer state, warm the allocator
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            train_step(run, opt, scaler, batches, precision)
            torch.cuda.synchronize()
            row["compile_s" if i == 0 else "step_s"] = round(time.perf_counter() - start, 3)
        # One evaluation batch, as engine.train.trainer evaluates (the raw model, eager, inference mode,
        # the cross-entropy one training micro-batch at a time).
        score_tokens(model, ids, seq_len=cfg.model.max_seq_len, batch_size=eval_batch, device=torch.device("cuda"),
                     max_batches=1, autocast=autocast("cuda", precision), loss_rows=batch)
        torch.cuda.synchronize()
        row["max_allocated"] = alloc = torch.cuda.max_memory_allocated()
        row["max_reserved"] = resv = torch.cuda.max_memory_reserved()
        row["nvml_used"], row["nvml_source"] = nvml_used(nvml_baseline)
        row["err_alloc_pct"] = round(100.0 * (est.allocated_bytes - alloc) / alloc, 2)
        row["err_reserved_pct"] = round(100.0 * (est.reserved_bytes - resv) / resv, 2)
        if row["nvml_used"]:
            row["err_nvml_pct"] = round(100.0 * (est.total_bytes - row["nvml_used"]) / row["nvml_used"], 2)
        if diagnose:
            row["phases_measured"] = _phase_peaks(run, model, opt, batches[0], precision)
            row["phases"], row["saved_estimate"] = est.phases, est.saved_bytes
    except Exception as e:  # an OOM or a compile failure: report it in the row, go on with the grid
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    finally:
        del model, opt, run, batches
        _release()
    return row


def gpu_memory_rows(presets=PRESETS, batches: dict[str, int] | None = None, steps: int = 2,
                    budget_s: float | None = None, nvml_baseline: int | None = None,
                    diagnose: bool = False, loss_chunk: int = 4096) -> list[dict]:
    """The CUDA grid: preset x eager/compiled x checkpointing off/on, one dict per row,
    plus small and medium (eager, compiled) with the chunked loss (train.loss_chunk = `loss_chunk`).

    Keys: preset, compile, checkpointing, batch, precision, seq, estimate_allocated,
    estimate_reserved, estimate_total, peak_phase, max_allocated, max_reserved,
    nvml_used, nvml_source, err_alloc_pct, err_reserved_pct, err_nvml_pct,
    compile_s (first step, compilation included), step_s, error. Eager rows
    run first (they are quick); rows past `budget_s` seconds are skipped
    ("skipped: time budget" in error). NVML's used memory is this process's
    own where NVML lists it, else the device's minus `nvml_baseline` (default:
    what it was when this module was imported, if CUDA was not yet in use).
    """
    batches = {**GPU_BATCH, **(batches or {})}
    base = nvml_baseline if nvml_baseline is not None else NVML_BASELINE
    start = time.monotonic()
    def rows_of(compiled: bool, chunked: bool) -> list[tuple[str, bool, bool, int]]:
        if chunked:
            return [(p, compiled, False, loss_chunk) for p in presets if p != "tiny"] if loss_chunk else []
        return [(p, compiled, ckpt, 0) for p in presets for ckpt in (False, True)]

    # Quick eager rows first, then the compiled chunked ones, whose estimate is the least tried; then the
    # levers whose memory is modelled but not yet measured on a GPU (FP8 needs capability 8.9).
    grid = rows_of(False, False) + rows_of(False, True) + rows_of(True, True) + rows_of(True, False)
    grid = [(*g, None) for g in grid] + [(p, c, False, 0, lever) for lever in LEVER_ROWS
                                         for p in presets if p != "tiny" for c in (False, True)]
    rows = []
    for preset, compiled, ckpt, chunk, levers in grid:
        if budget_s is not None and time.monotonic() - start > budget_s:
            rows.append({"preset": preset, "compile": compiled, "checkpointing": ckpt, "loss_chunk": chunk,
                         "batch": batches[preset], "error": "skipped: time budget"})
            continue
        rows.append(gpu_row(preset, batches[preset], compiled, ckpt, steps, base, diagnose, chunk, levers))
    return rows


def format_gpu_rows(rows: list[dict]) -> str:
    """The CUDA grid as a table (bytes in GiB), with the mean and worst errors."""
    head = (f"{'preset':7} {'path':26} {'ckpt':4} {'batch':>5} {'est alloc':>9} {'max alloc':>9} {'err':>7} "
            f"{'est resv':>9} {'max resv':>9} {'err':>7} {'est total':>9} {'nvml':>9} {'err':>7} "
            f"{'compile':>7} {'step':>6}  peak phase")
    lines = [head]
    gib = 1024**3

    def g(v):
        return f"{v / gib:9.2f}" if v else f"{'-':>9}"

    def pct(v):
        return f"{v:+6.1f}%" if v is not None else f"{'-':>7}"

    for r in rows:
        path = (("compiled" if r["compile"] else "eager") + (f" chunk {r['loss_chunk']}" if r.get("loss_chunk") else "")
                + (f" {r['lever']}" if r.get("lever") else ""))
        ckpt = "on" if r["checkpointing"] else "off"
        if r.get("error"):
            lines.append(f"{r['preset']:7} {path:26} {ckpt:4} {r['batch']:5} {r['error']}")
            continue
        lines.append(f"{r['preset']:7} {path:26} {ckpt:4} {r['batch']:5} {g(r['estimate_allocated'])} "
                     f"{g(r['max_allocated'])} {pct(r['err_alloc_pct'])} {g(r['estimate_reserved'])} "
                     f"{g(r['max_reserved'])} {pct(r['err_reserved_pct'])} {g(r['estimate_total'])} "
                     f"{g(r['nvml_used'])} {pct(r['err_nvml_pct'])} {r['compile_s'] or 0:6.1f}s "
                     f"{r['step_s'] or 0:5.2f}s  {r['peak_phase']}")
    for key, name in (("err_alloc_pct", "allocated"), ("err_reserved_pct", "reserved"), ("err_nvml_pct", "NVML")):
        errs = [abs(r[key]) for r in rows if r.get(key) is not None]
        if errs:
            lines.append(f"{name}: mean absolute error {sum(errs) / len(errs):.1f}%, worst {max(errs):.1f}%")
    lines.append("GiB; bf16 (fp16 without bf16); last of the steps plus one evaluation batch; "
                 f"NVML: {', '.join(sorted({r.get('nvml_source') or 'unavailable' for r in rows}))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    p.add_argument("--batch", type=int, default=2, help="batch of the saved-tensor comparison")
    p.add_argument("--seq", type=int, default=0, help="sequence length of the saved-tensor comparison "
                                                       "(default 32 on CPU, 128 on GPU)")
    p.add_argument("--steps", type=int, default=2, help="training steps per GPU row (the last is measured)")
    p.add_argument("--no-compiled", dest="compiled", action="store_false", help="CPU: skip the compiled rows")
    args = p.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    presets = [s for s in args.presets.split(",") if s]
    start = time.perf_counter()
    if device.startswith("cuda"):
        print(f"peak of a training step + one evaluation batch on {torch.cuda.get_device_name(0)}")
        print(format_gpu_rows(gpu_memory_rows(presets, steps=args.steps)))
        print(f"\n({time.perf_counter() - start:.0f} s)")
        return 0
    seq = args.seq or 32
    print_rows(saved_rows(device, args.batch, seq, presets, ("fp32", "bf16")),
               f"bytes autograd saves in one eager training forward on {device} (batch {args.batch}, seq {seq}, "
               "dropout 0.1)")
    cases = [c for c in PEAK_CASES if c[0] in presets]
    print_rows(cpu_peak_rows(cases), "peak live tensor bytes of one eager CPU training step (the estimate's "
                                     "peak moment last)", second="batch")
    if args.compiled:
        print_rows(saved_rows(device, args.batch, seq, [p for p in presets if p != "medium"], ("fp32", "bf16"),
                              compiled=True),
                   f"bytes a torch.compile'd (inductor) forward saves on {device} (batch {args.batch}, seq {seq})")
        cases = [c for c in COMPILED_PEAK_CASES if c[0] in presets]
        print_rows(cpu_peak_rows(cases, compiled=True), "peak live bytes of one compiled CPU training step "
                   "and an evaluation batch (allocator events)", second="batch")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
