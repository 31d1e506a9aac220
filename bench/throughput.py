"""Benchmark: training throughput of the engine's real training step, per preset, with MFU.

Each engine row is a real `Trainer(cfg, emit, control).run()` on WikiText-2
(../shared/data/wikitext-2 next to the repository, tokenized once into the
token cache) with eval_interval, save_interval and sample_tokens at 0. The
first log window holds the warm-up (first step, optimizer state, CUDA
context) and is left out; tokens/s and step time come from the StepMetrics
events of the windows after it (median). Once enough steps have run the
bench calls `TrainingControl.stop()`, so the final full-split evaluation is
skipped (the stop writes one checkpoint into a temporary run folder, which is
deleted). A "reference" row trains `bench/reference_gpt.py`'s independent
nanoGPT-style loop (fp32, eager, same shapes and FLOPs, same token stream),
interleaved with the engine runs (engine, reference, engine, reference, ...)
so that load from other processes hits both alike; the engine/reference
ratio is the median of the per-pair ratios.

Columns: tokens/s (median over runs of the median steady window), MFU % =
flops_per_token(seq) x tokens/s / the GPU's peak from engine.gpus (looked up
by torch.cuda.get_device_name(); bf16/fp16 peak for half precision, TF32 =
bf16 peak / 2 for fp32 with TF32 matmuls, which the engine turns on for
CUDA; "n/a" on the CPU), step ms, peak memory (torch.cuda.max_memory_allocated
on a GPU, peak RSS of this process during the run on the CPU), compile s
(torch.compile's warm-up compile as the trainer logs it, plus the first
window's excess over steady steps: for compile-off rows only eager warm-up).

    python bench/throughput.py                       # CPU here: tiny + small + reference, a few minutes
    python bench/throughput.py --device cuda         # GPU: tiny, small, medium at seed seq lengths
    python bench/throughput.py --device cuda --presets medium --compile both --json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from engine import events as ev  # noqa: E402
from engine.config import RunConfig, build_config  # noqa: E402
from engine.control import TrainingControl  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from engine.gpus import find_gpu  # noqa: E402
from engine.memory import format_bytes  # noqa: E402
from engine.model import GPT  # noqa: E402
from engine.runtime import resolve_runtime  # noqa: E402
from engine.trainer import Trainer  # noqa: E402
from reference_gpt import RefConfig, measure_reference  # noqa: E402

PRESETS = ("tiny", "small", "medium")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
GPU_BATCH = {"tiny": 32, "small": 16, "medium": 16}  # fit one 80 GB GPU with room to spare
CPU_BATCH = {"tiny": 8, "small": 4, "medium": 2}
CPU_STEPS = {"tiny": 3, "small": 2, "medium": 2}  # timed steps per run; a tiny step is seconds on 2 cores
CPU_REPEATS = {"tiny": 3, "small": 2, "medium": 1}  # runs per row (tiny's interleaved with the reference)
GPU_STEPS = 100
COLUMNS = ("loop", "preset", "device", "precision", "compile", "batch", "seq", "tokens/s", "MFU %",
           "step ms", "peak mem", "compile s")
_COMPILED = re.compile(r"compiled in ([0-9.]+) s")

# Published single-GPU rates for GPT-2 124M (the "medium" preset), for context.
CONTEXT = (
    "reference GPU rates (GPT-2 124M, seq 1024, bf16): pure-PyTorch speed runs ~460K tok/s on one H100; "
    "llm.c ~470K tok/s per H100",
    "target: medium, seq 1024, bf16, one H100: >= 450K tok/s (~40% MFU)",
)
TARGET = {"preset": "medium", "seq": 1024, "precision": "bf16", "tokens_per_s": 450_000, "gpu": "H100 80GB"}


@dataclass
class Row:
    loop: str  # "engine" (the real Trainer) or "reference" (bench/reference_gpt.py)
    preset: str
    device: str  # "cpu" or "cuda (NVIDIA H100 80GB HBM3)"
    precision: str  # as resolved: fp32 | bf16 | fp16 (tf32 noted for fp32 on CUDA)
    compile: bool
    batch: int
    seq: int
    tokens_per_s: float = 0.0
    mfu: float | None = None  # fraction of the GPU's peak; None on the CPU or an unknown GPU
    step_ms: float = 0.0
    peak_bytes: int = 0
    compile_s: float | None = None  # compile_logged_s + first_window_excess_s
    compile_logged_s: float = 0.0  # the trainer's own "torch.compile: compiled in X s" (before the clock)
    first_window_excess_s: float = 0.0  # first window minus as many steady steps: warm-up, recompiles
    gpu: str = ""  # engine.gpus catalogue entry of the device, "" on the CPU or an unknown GPU
    num_params: int = 0
    flops_per_token: int = 0
    runs: list[float] = field(default_factory=list)  # tokens/s of each repeat, in run order
    error: str = ""

    def cells(self) -> list[str]:
        if self.error:
            return [self.loop, self.preset, self.device, self.precision, "on" if self.compile else "off",
                    str(self.batch), str(self.seq), "failed", "", "", "", ""]
        return [
            self.loop, self.preset, self.device, self.precision, "on" if self.compile else "off",
            str(self.batch), str(self.seq), f"{self.tokens_per_s:,.0f}",
            "n/a" if self.mfu is None else f"{100 * self.mfu:.1f}",
            f"{self.step_ms:,.0f}", format_bytes(self.peak_bytes) if self.peak_bytes else "n/a",
            "" if self.compile_s is None else f"{self.compile_s:.1f}",
        ]


# ----------------------------------------------------------------------------- memory

def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the peak is the process's lifetime peak


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _release(device: torch.device) -> None:
    """Drop what an earlier run left behind: compiled graphs (and the models they hold), cached blocks."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()


def _read_peak(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss()


# ----------------------------------------------------------------------------- MFU

def peak_flops(device: torch.device, precision: str, tf32: bool) -> float | None:
    """The GPU's dense peak FLOP/s for this precision, from engine.gpus; None on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    try:
        gpu = find_gpu(torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory)
    except ConfigError:
        return None
    if precision in ("bf16", "fp16"):
        return gpu.peak_bf16_tflops * 1e12
    if tf32 and gpu.bf16:  # TF32 tensor cores run at half the bf16 rate on Ampere and newer
        return gpu.peak_bf16_tflops / 2 * 1e12
    return gpu.peak_fp32_tflops * 1e12


def _catalogue_name(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    try:
        return find_gpu(torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory).name
    except ConfigError:
        return ""


def _device_label(device: torch.device) -> str:
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def _flops_per_token(cfg: RunConfig) -> tuple[int, int]:
    with torch.device("meta"):
        model = GPT(cfg.model)
    return model.num_params(), model.flops_per_token(cfg.model.max_seq_len)


# ----------------------------------------------------------------------------- one engine run

@dataclass
class EngineRun:
    tokens_per_s: float
    step_s: float
    compile_logged_s: float
    first_window_excess_s: float
    peak_bytes: int
    precision: str
    error: str = ""


def engine_config(preset: str, *, device: str, precision: str, compile: str, batch: int, seq_len: int | None,
                  steps: int, log_interval: int, dataset: Path, vocab_size: int, out_dir: Path,
                  run_name: str) -> RunConfig:
    """The run config of one engine measurement: one warm-up window plus `steps` timed steps."""
    windows = max(1, math.ceil(steps / log_interval))
    total = (1 + windows) * log_interval
    model = {"max_seq_len": seq_len} if seq_len else {}
    return build_config(preset, None, {
        "model": model,
        "data": {"dataset": str(dataset), "vocab_size": vocab_size},
        "train": {"batch_size": batch, "max_steps": total + 1, "log_interval": log_interval,
                  "eval_interval": 0, "save_interval": 0, "sample_tokens": 0, "keep_checkpoints": 1,
                  "device": device, "precision": precision, "compile": compile},
        "run": {"out_dir": str(out_dir), "run_name": run_name},
    })


def run_engine(cfg: RunConfig) -> EngineRun:
    """Train with the real Trainer; stop after the warm-up window and the timed windows."""
    t = cfg.train
    total = t.max_steps - 1
    rt = resolve_runtime(t)
    control = TrainingControl()
    metrics: list[ev.StepMetrics] = []
    compiled_s = 0.0

    def emit(e: ev.Event) -> None:
        nonlocal compiled_s
        if isinstance(e, ev.StepMetrics):
            metrics.append(e)
            if e.step >= total:
                control.stop()
        elif isinstance(e, ev.Log) and (m := _COMPILED.search(e.message)):
            compiled_s = float(m.group(1))

    _release(rt.device)  # each run compiles afresh, as a new training process would
    _reset_peak(rt.device)
    result = Trainer(cfg, emit, control).run()
    peak = _read_peak(rt.device)
    _release(rt.device)
    if isinstance(result, ev.Failed):
        return EngineRun(0.0, 0.0, 0.0, 0.0, peak, rt.precision, f"{result.kind}: {result.message.splitlines()[0]}")
    steady = metrics[1:]
    if not steady:
        return EngineRun(0.0, 0.0, 0.0, 0.0, peak, rt.precision, "no timed window (too few steps)")
    step_s = statistics.median(m.step_time_s for m in steady)
    tokens_per_s = statistics.median(m.tokens_per_s for m in steady)
    first = metrics[0]
    excess = max(0.0, (first.step_time_s - step_s) * first.step)  # the first window holds `first.step` steps
    return EngineRun(tokens_per_s, step_s, compiled_s, excess, peak, rt.precision)


# ----------------------------------------------------------------------------- the bench

def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA GPU is available")
    return device


def run_bench(
    presets: list[str],
    *,
    device: str = "auto",
    steps: int | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    compile: str = "auto",
    seq_len: int | None = None,
    dataset: Path | str = DEFAULT_DATA,
    vocab_size: int = 50257,
    repeats: int | None = None,
    reference: list[str] | None = None,
    log_interval: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> list[Row]:
    """Measure each preset with the engine (and the reference loop for the presets in `reference`).

    `seq_len` None keeps each preset's own length (256/512/1024). `reference`
    None means ["tiny"] on the CPU and none on a GPU. Engine and reference
    runs alternate, `repeats` times each (None: 1 on a GPU, CPU_REPEATS on
    the CPU). `threads` sets torch's intra-op threads for the bench
    (restored afterwards); None keeps torch's default.
    """
    from engine.config import DataConfig
    from engine.tokenizer import prepare_data

    os.environ.setdefault("TUI_LM_CACHE", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                              / "tui-lm"))
    device = _resolve_device(device)
    on_gpu = device.startswith("cuda")
    log_interval = log_interval or (10 if on_gpu else 1)
    if reference is None:
        reference = [] if on_gpu else ["tiny"]
    modes = ["off", "on"] if compile == "both" else [compile]
    dataset = Path(dataset).resolve() if Path(dataset).exists() else dataset
    log(f"preparing tokens for {dataset} (cached after the first time)")
    data = prepare_data(DataConfig(dataset=str(dataset), vocab_size=vocab_size), log=log)

    rows: list[Row] = []
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        _measure(rows, presets, modes, reference, data, device=device, on_gpu=on_gpu, steps=steps,
                 batch_size=batch_size, precision=precision, seq_len=seq_len, dataset=dataset,
                 vocab_size=vocab_size, repeats=repeats, log_interval=log_interval, log=log)
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def _measure(rows: list[Row], presets: list[str], modes: list[str], reference: list[str], data, *, device: str,
             on_gpu: bool, steps: int | None, batch_size: int | None, precision: str, seq_len: int | None,
             dataset: Path | str, vocab_size: int, repeats: int | None, log_interval: int,
             log: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="tui-lm-bench-") as tmp:
        for preset in presets:
            batch = batch_size or (GPU_BATCH if on_gpu else CPU_BATCH)[preset]
            n = steps or (GPU_STEPS if on_gpu else CPU_STEPS[preset])
            runs = repeats or (1 if on_gpu else CPU_REPEATS[preset])
            for mi, mode in enumerate(modes):
                with_ref = preset in reference and mi == 0
                engine_runs: list[EngineRun] = []
                ref_runs = []
                cfg = None
                for r in range(runs):
                    cfg = engine_config(preset, device=device, precision=precision, compile=mode, batch=batch,
                                        seq_len=seq_len, steps=n, log_interval=log_interval, dataset=dataset,
                                        vocab_size=vocab_size, out_dir=Path(tmp), run_name=f"{preset}-{mode}-{r}")
                    # ABBA order (engine first on even repeats, reference first on odd ones), so a
                    # drift in the machine's load does not favour either side.
                    if with_ref and r % 2:
                        ref_runs.append(_run_reference(preset, cfg, data, batch, n, device, on_gpu, r, runs, log))
                    log(f"engine {preset} compile={mode} run {r + 1}/{runs}: batch {batch} x seq "
                        f"{cfg.model.max_seq_len}, {n} timed steps")
                    run = run_engine(cfg)
                    shutil.rmtree(Path(tmp) / f"{preset}-{mode}-{r}", ignore_errors=True)
                    engine_runs.append(run)
                    log(f"  -> {run.tokens_per_s:,.0f} tokens/s{' ' + run.error if run.error else ''}")
                    if run.error:
                        break
                    if with_ref and not r % 2:
                        ref_runs.append(_run_reference(preset, cfg, data, batch, n, device, on_gpu, r, runs, log))
                assert cfg is not None
                rows.append(_engine_row(preset, cfg, engine_runs))
                if ref_runs:
                    rows.append(_reference_row(preset, cfg, ref_runs))


def _run_reference(preset: str, cfg: RunConfig, data, batch: int, steps: int, device: str, on_gpu: bool,
                   r: int, repeats: int, log: Callable[[str], None]):
    m = cfg.model
    rc = RefConfig(data.vocab_size, m.d_model, m.num_heads, m.num_layers, m.d_ff, m.max_seq_len, m.dropout)
    log(f"reference {preset} run {r + 1}/{repeats}: batch {batch} x seq {m.max_seq_len}, {steps} timed steps")
    _reset_peak(torch.device(device))
    ref = measure_reference(rc, batch_size=batch, steps=steps, warmup=3 if on_gpu else 1, device=device,
                            tokens=data.train.ids)
    if not ref.peak_bytes:
        ref.peak_bytes = _peak_rss()
    log(f"  -> {ref.tokens_per_s:,.0f} tokens/s")
    return ref


def _engine_row(preset: str, cfg: RunConfig, runs: list[EngineRun]) -> Row:
    rt = resolve_runtime(cfg.train)
    params, fpt = _flops_per_token(cfg)
    precision = runs[0].precision
    row = Row("engine", preset, _device_label(rt.device), precision, rt.compile, cfg.train.batch_size,
              cfg.model.max_seq_len, num_params=params, flops_per_token=fpt)
    failed = [r for r in runs if r.error]
    if failed:
        row.error = failed[0].error
        return row
    tf32 = rt.device.type == "cuda" and precision == "fp32"  # the runtime enables TF32 on CUDA
    if tf32:
        row.precision = "fp32/tf32"
    row.runs = [r.tokens_per_s for r in runs]
    row.tokens_per_s = statistics.median(row.runs)
    row.step_ms = 1e3 * row.batch * row.seq / row.tokens_per_s
    row.peak_bytes = max(r.peak_bytes for r in runs)
    # The first run's: later ones may hit inductor's on-disk cache.
    row.compile_logged_s, row.first_window_excess_s = runs[0].compile_logged_s, runs[0].first_window_excess_s
    row.compile_s = row.compile_logged_s + row.first_window_excess_s
    row.gpu = _catalogue_name(rt.device)
    peak = peak_flops(rt.device, precision, tf32)
    row.mfu = fpt * row.tokens_per_s / peak if peak else None
    return row


def _reference_row(preset: str, cfg: RunConfig, runs: list) -> Row:
    rt = resolve_runtime(cfg.train)
    _, fpt = _flops_per_token(cfg)
    row = Row("reference", preset, _device_label(rt.device), "fp32", False, cfg.train.batch_size,
              cfg.model.max_seq_len, num_params=runs[0].num_params, flops_per_token=fpt)
    row.runs = [r.tokens_per_s for r in runs]
    row.tokens_per_s = statistics.median(row.runs)
    row.step_ms = 1e3 * row.batch * row.seq / row.tokens_per_s
    row.peak_bytes = max(r.peak_bytes for r in runs)
    peak = peak_flops(rt.device, "fp32", tf32=False)
    row.mfu = fpt * row.tokens_per_s / peak if peak else None
    return row


# ----------------------------------------------------------------------------- output

def format_table(rows: list[Row]) -> str:
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {"batch", "seq", "tokens/s", "MFU %", "step ms", "peak mem", "compile s"}

    def line(cs: list[str]) -> str:
        return "  ".join(c.rjust(w) if name in right else c.ljust(w)
                         for c, w, name in zip(cs, widths, COLUMNS)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out)


def ratios(rows: list[Row]) -> list[tuple[Row, Row, float, list[float]]]:
    """(engine row, reference row, median of per-pair engine/reference ratios, the pair ratios)."""
    out = []
    for eng, ref in zip(rows, rows[1:]):  # a reference row follows the engine row it ran interleaved with
        if ref.loop != "reference" or eng.loop != "engine" or eng.error:
            continue
        pairs = [e / f for e, f in zip(eng.runs, ref.runs) if f > 0]
        if pairs:
            out.append((eng, ref, statistics.median(pairs), pairs))
    return out


def context_lines(rows: list[Row], settings: dict) -> list[str]:
    lines = []
    for eng, ref, ratio, pairs in ratios(rows):
        lines.append(f"engine/reference, {eng.preset} on {eng.device} ({eng.precision} vs fp32 eager): {ratio:.2f}x "
                     f"(median of per-pair ratios {', '.join(f'{p:.2f}' for p in pairs)})")
    for r in rows:
        if r.loop == "engine" and not r.error and r.compile:
            lines.append(f"compile s, engine {r.preset}: {r.compile_logged_s:.1f} logged by the trainer's compile "
                         f"warm-up + {r.first_window_excess_s:.1f} in the first timed window (recompiles, warm-up)")
    for r in rows:
        if r.error:
            lines.append(f"{r.loop} {r.preset} compile={'on' if r.compile else 'off'} failed: {r.error}")
    lines.extend(CONTEXT)
    for r in rows:
        if (r.loop == "engine" and not r.error and r.preset == TARGET["preset"] and r.seq == TARGET["seq"]
                and r.precision == TARGET["precision"] and r.device.startswith("cuda")):
            verdict = "meets" if r.tokens_per_s >= TARGET["tokens_per_s"] else "below"
            where = "" if r.gpu == TARGET["gpu"] else f" (measured on {r.device}, target is for one H100 SXM)"
            lines.append(f"medium bf16 compile={'on' if r.compile else 'off'}: {r.tokens_per_s:,.0f} tok/s, "
                         f"{verdict} the target{where}")
    lines.append("MFU = flops_per_token(seq) x tokens/s / peak (engine.gpus, by torch.cuda.get_device_name()); "
                 "n/a on the CPU. compile s = logged torch.compile warm-up + first window's excess over steady.")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"settings: {settings}; host: {os.cpu_count()} CPU threads, torch {torch.__version__}, "
                 f"load average {load:.1f} at the end (other processes share the CPU: figures are medians "
                 f"of interleaved runs)")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Training throughput of the engine per preset, with MFU.")
    p.add_argument("--presets", default="",
                   help="comma-separated; default tiny,small on the CPU, all three on a GPU")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--steps", type=int, default=0,
                   help=f"timed steps per run (default GPU {GPU_STEPS}, CPU {CPU_STEPS})")
    p.add_argument("--batch-size", type=int, default=0, help=f"default GPU {GPU_BATCH}, CPU {CPU_BATCH}")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off", "both"))
    p.add_argument("--seq-len", type=int, default=0, help="override every preset's sequence length")
    p.add_argument("--repeats", type=int, default=0,
                   help=f"runs per row, interleaved with the reference (default GPU 1, CPU {CPU_REPEATS})")
    p.add_argument("--reference", default=None,
                   help="presets that also get a reference-loop row, comma-separated or 'none' "
                        "(default tiny on the CPU, none on a GPU)")
    p.add_argument("--log-interval", type=int, default=0, help="steps per timing window (default GPU 10, CPU 1)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--dataset", default=str(DEFAULT_DATA))
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    a = p.parse_args(argv)

    device = _resolve_device(a.device)
    presets = [s.strip() for s in a.presets.split(",") if s.strip()] or (
        list(PRESETS) if device.startswith("cuda") else ["tiny", "small"])
    unknown = [s for s in presets if s not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    reference = None if a.reference is None else [s.strip() for s in a.reference.split(",")
                                                  if s.strip() and s.strip() != "none"]
    start = time.perf_counter()
    rows = run_bench(presets, device=device, steps=a.steps or None, batch_size=a.batch_size or None,
                     precision=a.precision, compile=a.compile, seq_len=a.seq_len or None, dataset=a.dataset,
                     vocab_size=a.vocab_size, repeats=a.repeats or None, reference=reference,
                     log_interval=a.log_interval or None, threads=a.threads or None)
    settings = {"steps": a.steps or "default", "repeats": a.repeats or "default",
                "threads": a.threads or torch.get_num_threads(), "log_interval": a.log_interval or "default",
                "wall_s": round(time.perf_counter() - start)}
    if a.json:
        print(json.dumps({"rows": [dataclasses.asdict(r) for r in rows],
                          "ratios": [{"preset": e.preset, "device": e.device, "engine_over_reference": q,
                                      "pairs": ps} for e, _, q, ps in ratios(rows)],
                          "context": context_lines(rows, settings)}, indent=2))
        return
    print(format_table(rows))
    print()
    for line in context_lines(rows, settings):
        print(line)


if __name__ == "__main__":
    main()
