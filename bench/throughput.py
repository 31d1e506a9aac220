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
flops_per_token(seq) x tokens/s / the GPU's peak from engine.memory.gpus (looked up
by torch.cuda.get_device_name(); bf16/fp16 peak for half precision, TF32 =
bf16 peak / 2 for fp32 with TF32 matmuls, which the engine turns on for
CUDA; "n/a" on the CPU), step ms, peak memory (torch.cuda.max_memory_allocated
on a GPU, peak RSS of this process during the run on the CPU), compile s
(torch.compile's warm-up compile as the trainer logs it, plus the first
window's excess over steady steps: for compile-off rows only eager warm-up).
`--loss-chunk N` adds a row per preset trained with train.loss_chunk N (the
chunked loss), `--lever KEY=VALUE` one trained with that speed lever
(engine.config.levers: fused_loss=liger, attention_backend=cudnn, fp8=rowwise,
compile_mode=reduce-overhead, ...), their runs interleaved with the plain
ones; a context line gives the median of the per-pair tokens/s ratios and the
two peaks. A lever that did not resolve as asked (its library missing) says
what ran instead. The reference row runs at the engine's precision and
compile setting (bf16 + compile: nanoGPT's own loop).

    python bench/throughput.py                       # CPU here: tiny + small + reference, a few minutes
    python bench/throughput.py --device cuda         # GPU: tiny, small, medium at seed seq lengths
    python bench/throughput.py --device cuda --presets medium --compile both --json
    python bench/throughput.py --device cuda --presets medium --loss-chunk 4096
    python bench/throughput.py --device cuda --presets medium --lever fused_loss=liger --lever fp8=rowwise
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from device_stats import catalogue_gpu, peak_flops, peak_rss, read_peak, release, reset_peak  # noqa: E402
from reference_gpt import RefConfig, measure_reference  # noqa: E402
from throughput_report import Row, context_lines, format_table, ratios  # noqa: E402

from engine import events as ev  # noqa: E402
from engine.config.costs import count_params, flops_per_token  # noqa: E402
from engine.config.loading import build_config  # noqa: E402
from engine.config.run_config import RunConfig  # noqa: E402
from engine.control import TrainingControl  # noqa: E402
from engine.train.runtime import resolve_runtime  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402

PRESETS = ("tiny", "small", "medium")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
GPU_BATCH = {"tiny": 32, "small": 16, "medium": 16}  # fit one 80 GB GPU with room to spare
CPU_BATCH = {"tiny": 8, "small": 4, "medium": 2}
CPU_STEPS = {"tiny": 3, "small": 2, "medium": 2}  # timed steps per run; a tiny step is seconds on 2 cores
CPU_REPEATS = {"tiny": 3, "small": 2, "medium": 1}  # runs per row (tiny's interleaved with the reference)
GPU_STEPS = 100


# ----------------------------------------------------------------------------- one engine run

@dataclass
class EngineRun:
    tokens_per_s: float
    step_s: float
    compile_logged_s: float
    first_window_excess_s: float
    peak_bytes: int
    precision: str  # the trainer's plan, from RunStarted
    error: str = ""
    compiled: bool = False
    device: str = ""
    levers: dict = dataclasses.field(default_factory=dict)  # as the plan resolved them (RunStarted)


def engine_config(preset: str, *, device: str, precision: str, compile: str, batch: int, seq_len: int | None,
                  steps: int, log_interval: int, dataset: Path, vocab_size: int, out_dir: Path,
                  run_name: str, model_overrides: dict | None = None, variant: dict | None = None) -> RunConfig:
    """The run config of one engine measurement: one warm-up window plus `steps` timed steps.

    `variant`: train settings of the measured variant ({} or None: the plain path)."""
    windows = max(1, math.ceil(steps / log_interval))
    total = (1 + windows) * log_interval
    model = {**({"max_seq_len": seq_len} if seq_len else {}), **(model_overrides or {})}
    return build_config(preset, None, {
        "model": model,
        "data": {"dataset": str(dataset), "vocab_size": vocab_size},
        "train": {"batch_size": batch, "max_steps": total + 1, "log_interval": log_interval,
                  "eval_interval": 0, "save_interval": 0, "sample_tokens": 0, "keep_checkpoints": 1,
                  "device": device, "precision": precision, "compile": compile, **(variant or {})},
        "run": {"out_dir": str(out_dir), "run_name": run_name},
    })


def run_engine(cfg: RunConfig) -> EngineRun:
    """Train with the real Trainer; stop after the warm-up window and the timed windows."""
    t = cfg.train
    total = t.max_steps - 1
    rt = resolve_runtime(t)
    control = TrainingControl()
    metrics: list[ev.StepMetrics] = []
    started: list[ev.RunStarted] = []

    def emit(e: ev.Event) -> None:
        if isinstance(e, ev.StepMetrics):
            metrics.append(e)
            if e.step >= total:
                control.stop()
        elif isinstance(e, ev.RunStarted):
            started.append(e)  # the plan: precision, compile on/off and its time, device

    release(rt.device)  # each run compiles afresh, as a new training process would
    reset_peak(rt.device)
    result = Trainer(cfg, emit, control).run()
    peak = read_peak(rt.device)
    release(rt.device)
    plan = started[0] if started else None
    precision = plan.precision if plan else t.precision
    if isinstance(result, ev.Failed):
        return EngineRun(0.0, 0.0, 0.0, 0.0, peak, precision, f"{result.kind}: {result.message.splitlines()[0]}")
    steady = metrics[1:]
    if plan is None or not steady:
        return EngineRun(0.0, 0.0, 0.0, 0.0, peak, precision, "no timed window (too few steps)")
    step_s = statistics.median(m.step_time_s for m in steady)
    tokens_per_s = statistics.median(m.tokens_per_s for m in steady)
    first = metrics[0]
    excess = max(0.0, (first.step_time_s - step_s) * first.step)  # the first window holds `first.step` steps
    return EngineRun(tokens_per_s, step_s, plan.compile_s, excess, peak, precision, compiled=plan.compiled,
                     device=plan.device, levers=plan.levers)


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
    model_overrides: dict | None = None,
    variants: list[dict] | None = None,
) -> list[Row]:
    """Measure each preset with the engine (and the reference loop for the presets in `reference`).

    `seq_len` None keeps each preset's own length (256/512/1024). `reference`
    None means ["tiny"] on the CPU and none on a GPU. Engine and reference
    runs alternate, `repeats` times each (None: 1 on a GPU, CPU_REPEATS on
    the CPU). `threads` sets torch's intra-op threads for the bench
    (restored afterwards); None keeps torch's default. `model_overrides`
    changes the presets' model settings (e.g. {"dropout": 0.0}). `variants`
    (default [{}], the plain path) measures each preset with each set of train
    settings ({"loss_chunk": 4096}, {"fused_loss": "liger"}), the runs
    interleaved, so their rows compare side by side.
    """
    from engine.config.run_config import DataConfig
    from engine.data.token_cache import prepare_data

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
                 vocab_size=vocab_size, repeats=repeats, log_interval=log_interval, log=log,
                 model_overrides=model_overrides, variants=list(variants or [{}]))
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def _measure(rows: list[Row], presets: list[str], modes: list[str], reference: list[str], data, *, device: str,
             on_gpu: bool, steps: int | None, batch_size: int | None, precision: str, seq_len: int | None,
             dataset: Path | str, vocab_size: int, repeats: int | None, log_interval: int,
             log: Callable[[str], None], model_overrides: dict | None, variants: list[dict]) -> None:
    with tempfile.TemporaryDirectory(prefix="tui-lm-bench-") as tmp:
        for preset in presets:
            batch = batch_size or (GPU_BATCH if on_gpu else CPU_BATCH)[preset]
            n = steps or (GPU_STEPS if on_gpu else CPU_STEPS[preset])
            runs = repeats or (1 if on_gpu else CPU_REPEATS[preset])
            for mi, mode in enumerate(modes):
                with_ref = preset in reference and mi == 0
                keys = list(range(len(variants)))
                engine_runs: dict[int, list[EngineRun]] = {v: [] for v in keys}
                ref_runs = []
                cfgs: dict[int, RunConfig] = {}
                for r in range(runs):
                    # ABBA order (the first side first on even repeats, last on odd ones), so a drift
                    # in the machine's load favours neither the reference nor a variant.
                    order = keys if r % 2 == 0 else keys[::-1]
                    if with_ref and r % 2:
                        ref_runs.append(_run_reference(preset, cfgs[0], engine_runs[0], data, batch, n, device,
                                                       on_gpu, r, runs, log))
                    for v in order:
                        if engine_runs[v] and engine_runs[v][-1].error:
                            continue
                        name = f"{preset}-{mode}-{v}-{r}"
                        cfg = cfgs[v] = engine_config(
                            preset, device=device, precision=precision, compile=mode, batch=batch, seq_len=seq_len,
                            steps=n, log_interval=log_interval, dataset=dataset, vocab_size=vocab_size,
                            out_dir=Path(tmp), run_name=name, model_overrides=model_overrides, variant=variants[v])
                        log(f"engine {preset} compile={mode} {variant_label(variants[v])} run {r + 1}/{runs}: batch "
                            f"{batch} x seq {cfg.model.max_seq_len}, {n} timed steps")
                        run = run_engine(cfg)
                        shutil.rmtree(Path(tmp) / name, ignore_errors=True)
                        engine_runs[v].append(run)
                        log(f"  -> {run.tokens_per_s:,.0f} tokens/s{' ' + run.error if run.error else ''}")
                    if with_ref and not r % 2:
                        ref_runs.append(_run_reference(preset, cfgs[0], engine_runs[0], data, batch, n, device,
                                                       on_gpu, r, runs, log))
                for v in keys:
                    rows.append(_engine_row(preset, cfgs[v], engine_runs[v], variants[v]))
                    if ref_runs and v == 0:
                        rows.append(_reference_row(preset, cfgs[v], ref_runs))


def variant_label(variant: dict, levers: dict | None = None) -> str:
    """"plain", "loss_chunk=4096", "fused_loss=liger"; with the resolved levers, what ran where it differs."""
    said = []
    for k, v in variant.items():
        ran = (levers or {}).get(k, v)
        said.append(f"{k}={v}" if ran == v else f"{k}={v} (ran {ran})")
    return ", ".join(said) or "plain"


def _run_reference(preset: str, cfg: RunConfig, plain: list[EngineRun], data, batch: int, steps: int, device: str,
                   on_gpu: bool, r: int, repeats: int, log: Callable[[str], None]):
    """One reference run at the plain engine run's precision (bf16 or fp32) and compile setting."""
    m = cfg.model
    rc = RefConfig(data.vocab_size, m.d_model, m.num_heads, m.num_layers, m.d_ff, m.max_seq_len, m.dropout)
    precision = "bf16" if plain and plain[0].precision == "bf16" else "fp32"
    compiled = bool(plain and plain[0].compiled)
    log(f"reference {preset} run {r + 1}/{repeats}: batch {batch} x seq {m.max_seq_len}, {steps} timed steps, "
        f"{precision}, compile {'on' if compiled else 'off'}")
    reset_peak(torch.device(device))
    ref = measure_reference(rc, batch_size=batch, steps=steps, warmup=3 if on_gpu else 1, device=device,
                            window=cfg.train.log_interval, tokens=data.train.ids, precision=precision,
                            compile=compiled)
    if not ref.peak_bytes:
        ref.peak_bytes = peak_rss()
    log(f"  -> {ref.tokens_per_s:,.0f} tokens/s")
    return ref


def _flops_per_token(cfg: RunConfig) -> tuple[int, int]:
    return count_params(cfg.model), flops_per_token(cfg.model)


def _engine_row(preset: str, cfg: RunConfig, runs: list[EngineRun], variant: dict) -> Row:
    rt = resolve_runtime(cfg.train)
    params, fpt = _flops_per_token(cfg)
    precision = runs[0].precision
    row = Row("engine", preset, runs[0].device or rt.describe(), precision, runs[0].compiled, cfg.train.batch_size,
              cfg.model.max_seq_len, num_params=params, flops_per_token=fpt,
              variant=variant_label(variant, runs[0].levers), levers=runs[0].levers)
    failed = [r for r in runs if r.error]
    if failed:
        row.error = failed[0].error
        return row
    tf32 = rt.tf32 and precision == "fp32"  # the runtime's TF32 matmuls (CUDA, Ampere and newer)
    if tf32:
        row.precision = "fp32/tf32"
    row.runs = [r.tokens_per_s for r in runs]
    row.tokens_per_s = statistics.median(row.runs)
    row.step_ms = 1e3 * row.batch * row.seq / row.tokens_per_s
    row.peak_bytes = max(r.peak_bytes for r in runs)
    # The first run's: later ones may hit inductor's on-disk cache.
    row.compile_logged_s, row.first_window_excess_s = runs[0].compile_logged_s, runs[0].first_window_excess_s
    row.compile_s = row.compile_logged_s + row.first_window_excess_s
    gpu = catalogue_gpu(rt.device)
    row.gpu = gpu.name if gpu else ""
    peak = peak_flops(gpu, precision, tf32)
    row.mfu = fpt * row.tokens_per_s / peak if peak else None
    return row


def _reference_row(preset: str, cfg: RunConfig, runs: list) -> Row:
    rt = resolve_runtime(cfg.train)
    _, fpt = _flops_per_token(cfg)
    row = Row("reference", preset, rt.describe(), runs[0].precision, runs[0].compiled, cfg.train.batch_size,
              cfg.model.max_seq_len, num_params=runs[0].num_params, flops_per_token=fpt)
    row.runs = [r.tokens_per_s for r in runs]
    row.tokens_per_s = statistics.median(row.runs)
    row.step_ms = 1e3 * row.batch * row.seq / row.tokens_per_s
    row.peak_bytes = max(r.peak_bytes for r in runs)
    peak = peak_flops(catalogue_gpu(rt.device), row.precision, tf32=False)
    row.mfu = fpt * row.tokens_per_s / peak if peak else None
    return row


def lever_variant(p: argparse.ArgumentParser, text: str) -> dict:
    """{"fused_loss": "liger"} from "fused_loss=liger", checked against the lever's declared choices."""
    from engine.config.levers import Levers
    from engine.config.run_config import SETTINGS

    key, _, value = text.partition("=")
    s = SETTINGS.get(f"train.{key.strip()}")
    levers = [f.name for f in dataclasses.fields(Levers)]
    if s is None or s.name not in levers or value.strip() not in s.choices:
        p.error(f"--lever {text!r}: expected KEY=VALUE with KEY one of {', '.join(levers)} and VALUE one of its "
                f"choices")
    return {s.name: value.strip()}


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
    p.add_argument("--loss-chunk", default="",
                   help="also measure train.loss_chunk N (the chunked loss) beside the plain loss, interleaved; "
                        "comma-separated values, e.g. 4096 or 2048,8192")
    p.add_argument("--lever", action="append", default=[], metavar="KEY=VALUE",
                   help="also measure a speed lever beside the plain path, interleaved (repeatable): fused_loss=liger, "
                        "attention_backend=cudnn, fp8=rowwise, compile_mode=reduce-overhead, ...")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    a = p.parse_args(argv)

    device = _resolve_device(a.device)
    presets = [s.strip() for s in a.presets.split(",") if s.strip()] or (
        list(PRESETS) if device.startswith("cuda") else ["tiny", "small"])
    unknown = [s for s in presets if s not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    try:
        chunks = [int(c) for c in a.loss_chunk.split(",") if c.strip()]
    except ValueError:
        p.error(f"--loss-chunk: expected token counts like 4096 or 2048,8192, got {a.loss_chunk!r}")
    if any(c <= 0 for c in chunks):
        p.error(f"--loss-chunk: token counts must be positive (the plain loss is always measured), "
                f"got {a.loss_chunk!r}")
    variants = [{}] + [{"loss_chunk": c} for c in dict.fromkeys(chunks)] + [lever_variant(p, x) for x in a.lever]
    reference = None if a.reference is None else [s.strip() for s in a.reference.split(",")
                                                  if s.strip() and s.strip() != "none"]
    start = time.perf_counter()
    rows = run_bench(presets, device=device, steps=a.steps or None, batch_size=a.batch_size or None,
                     precision=a.precision, compile=a.compile, seq_len=a.seq_len or None, dataset=a.dataset,
                     vocab_size=a.vocab_size, repeats=a.repeats or None, reference=reference,
                     log_interval=a.log_interval or None, threads=a.threads or None,
                     variants=variants)
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
