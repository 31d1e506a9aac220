"""How right is the time plan? Predicted vs measured seconds per step on this CPU, and a time budget kept.

    python bench/plan_accuracy.py                      # the table (several minutes on 2 shared cores)
    python bench/plan_accuracy.py --budget 40s         # the budgeted run's length
    python bench/plan_accuracy.py --only 1,2 --budget 0s  # a few rows, no budgeted run
    python bench/plan_accuracy.py --seed-overhead      # the CPU's per-step overhead, fitted (engine/speed/table.py)

For each CPU configuration (shapes, micro-batches, compile on/off, arch and
optimizer, accumulation) on WikiText-2's BPE token ids:

- "model": the seconds per step engine.speed.model predicts from its rows
  (engine.speed.table), never a kept measurement;
- "--measure": what `tui-lm estimate --measure` predicts: engine.train.measure's
  few steps after a warm-up (kept in the user's cache, as the command keeps it);
- "real": a separate run of the real Trainer (evaluation, samples and
  checkpoints off, as in --measure), its mean seconds per step after the same
  warm-up, over more steps.

Then a `--time-budget` run (tiny shape, periodic and final evaluations on): its
budget against the wall time from its first step to the end of its final
evaluation (what the budget covers, engine/train/budget.py). Targets (issue
21): median error <= 15% from the model, <= 5% after --measure, the budgeted
run within 5% of its budget. The machine's load (os.getloadavg) is printed
beside the numbers: on a shared machine the step time moves with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import events as ev  # noqa: E402
from engine.config.loading import build_config  # noqa: E402
from engine.config.plan import DeviceInfo, plan_run  # noqa: E402
from engine.config.run_config import RunConfig, parse_duration  # noqa: E402
from engine.control import TrainingControl  # noqa: E402
from engine.data.token_cache import cached_vocab_size  # noqa: E402
from engine.memory.estimate import estimate_memory  # noqa: E402
from engine.speed.model import modelled_throughput  # noqa: E402
from engine.train.measure import _measuring_config, measure  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402

DATA = Path(os.environ.get("TUI_LM_DATA", "/work/shared/data")) / "wikitext-2"
WARMUP = 2
TARGETS = {"model": 0.15, "measure": 0.05, "budget": 0.05}


def _shape(d: int, layers: int, heads: int, ff: int, seq: int) -> dict:
    return {"d_model": d, "num_layers": layers, "num_heads": heads, "d_ff": ff, "max_seq_len": seq, "dropout": 0.0}


# (label, model overrides, train overrides): none of them is a row of engine/speed/table.py
CONFIGS: list[tuple[str, dict, dict]] = [
    ("d32x1 b4x32", _shape(32, 1, 2, 64, 32), {"batch_size": 4}),
    ("d64x2 b8x64", _shape(64, 2, 2, 256, 64), {"batch_size": 8}),
    ("d128x2 b16x128 accum 2", _shape(128, 2, 4, 512, 128), {"batch_size": 16, "grad_accum_steps": 2}),
    ("d128x2 b8x64 modern+muon", {**_shape(128, 2, 4, 512, 64), "arch": "modern"},
     {"batch_size": 8, "optimizer": "muon"}),
    ("d256x4 b4x128", _shape(256, 4, 4, 1024, 128), {"batch_size": 4}),
    ("d384x6 b4x256", _shape(384, 6, 6, 1536, 256), {"batch_size": 4}),
    ("d64x2 b8x64 compiled", _shape(64, 2, 2, 256, 64), {"batch_size": 8, "compile": "on"}),
]


@dataclass
class Row:
    label: str
    tokens_per_step: int
    model_s: float  # seconds per step, the time model
    measure_s: float  # after --measure
    real_s: float  # the separate real run
    source: str = ""

    @property
    def model_error(self) -> float:
        return self.model_s / self.real_s - 1

    @property
    def measure_error(self) -> float:
        return self.measure_s / self.real_s - 1


def config(model: dict, train: dict, dataset: Path = DATA, out: str = "", **extra_train) -> RunConfig:
    train = {"device": "cpu", "max_steps": 100, "warmup_steps": 1, "compile": "off", **train, **extra_train}
    return build_config(None, None, {"model": model, "train": train, "data": {"dataset": str(dataset)},
                                     "run": {"out_dir": out or tempfile.gettempdir(), "preset": ""}})


def modelled_step_s(cfg: RunConfig) -> tuple[float, str]:
    """(seconds per step, source) of the time model alone (no kept measurement), on this CPU."""
    plan = plan_run(cfg, device=DeviceInfo("cpu"), vocab_size=cached_vocab_size(cfg.data))
    th = modelled_throughput(plan, estimate_memory(cfg, plan=plan), None)
    return plan.tokens_per_step / th.tokens_per_s, th.source


def real_step_s(cfg: RunConfig, steps: int) -> float:
    """Mean seconds per step of a real Trainer run after WARMUP steps (the trainer's own clock)."""
    total = WARMUP + steps
    control = TrainingControl()
    elapsed: dict[int, float] = {}

    def emit(e: ev.Event) -> None:
        if isinstance(e, ev.StepMetrics):
            elapsed[e.step] = e.elapsed_s
            if e.step >= total:
                control.stop()
        elif isinstance(e, ev.Failed):
            raise RuntimeError(e.message)

    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as tmp:
        Trainer(_measuring_config(cfg, Path(tmp), total), emit, control).run()
    return (elapsed[total] - elapsed[WARMUP]) / steps


def run_bench(configs: list[tuple[str, dict, dict]], *, dataset: Path = DATA, seconds: float = 10.0,
              max_steps: int = 40, log: Callable[[str], None] = print) -> list[Row]:
    """One Row per configuration; the real run lasts about `seconds` (at least 5 steps, at most `max_steps`)."""
    rows = []
    for label, model, train in configs:
        cfg = config(model, train, dataset)
        _, _, m = measure(cfg)  # first: it prepares the data, whose real vocabulary the model needs
        model_s, source = modelled_step_s(cfg)
        tokens = plan_run(cfg, device=DeviceInfo("cpu")).tokens_per_step
        measure_s = tokens / m.tokens_per_s
        steps = max(5, min(max_steps, round(seconds / measure_s)))
        real_s = real_step_s(cfg, steps)
        rows.append(Row(label, tokens, model_s, measure_s, real_s, source))
        log(f"{label}: model {model_s:.3f} s, --measure {measure_s:.3f} s, real {real_s:.3f} s over {steps} steps "
            f"(load {os.getloadavg()[0]:.1f})")
    return rows


BUDGET_SHAPE = _shape(64, 2, 2, 256, 64)


def budget_run(budget: str, dataset: Path = DATA, model: dict = BUDGET_SHAPE,
               train: dict | None = None) -> tuple[float, float, int]:
    """(budget s, wall s from the first step to the end of the final evaluation, steps) of a budgeted run:
    evaluations every 50 steps over 4 batches, a final one over 4 batches of each split."""
    cfg = config(model, train or {"batch_size": 8}, dataset, max_steps=1_000_000, time_budget=budget,
                 eval_interval=50, eval_batches=4, final_eval_batches=4, sample_tokens=0, log_interval=5,
                 save_interval=0)
    marks: dict[str, float] = {}

    def emit(e: ev.Event) -> None:
        if isinstance(e, ev.RunStarted):
            marks["start"] = time.perf_counter()
        elif isinstance(e, ev.Finished):
            marks["end"] = time.perf_counter()
            marks["step"] = e.step
        elif isinstance(e, ev.Failed):
            raise RuntimeError(e.message)

    with tempfile.TemporaryDirectory(prefix="plan-budget-") as tmp:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=tmp))
        Trainer(cfg, emit, TrainingControl()).run()
    return parse_duration(budget), marks["end"] - marks["start"], int(marks["step"])


# The CPU rows --seed-overhead measures for engine/speed/table.py: (label, shape, micro-batch)
SEED_ROWS = [("d32x1 b32x32", _shape(32, 1, 2, 64, 32), 32), ("d128x2 b8x128", _shape(128, 2, 4, 512, 128), 8),
             ("tiny b8x256", _shape(256, 4, 4, 1024, 256), 8)]


def seed_overhead(dataset: Path = DATA, repeats: int = 2,
                  log: Callable[[str], None] = print) -> tuple[float, dict[str, float]]:
    """(overhead s, {row label: tokens/s}): the overhead fitted to one tiny shape at micro-batches 1 and 32
    (step = overhead + tokens x k), and the rows of SEED_ROWS.

    Each figure is the fastest of `repeats` interleaved runs: on a shared machine the least disturbed one.
    """
    points = [("d32x1 b1x32", _shape(32, 1, 2, 64, 32), 1), *SEED_ROWS]
    best = {label: float("inf") for label, _, _ in points}
    for _ in range(repeats):
        for label, shape, batch in points:
            step_s = real_step_s(config(shape, {"batch_size": batch}, dataset), 10)
            best[label] = min(best[label], step_s)
            log(f"{label}: {step_s * 1e3:.1f} ms a step (load {os.getloadavg()[0]:.1f})")
    s1, s2 = best["d32x1 b1x32"], best["d32x1 b32x32"]
    k = (s2 - s1) / (32 * 32 - 32)
    rows = {label: batch * shape["max_seq_len"] / best[label] for label, shape, batch in SEED_ROWS}
    return s1 - k * 32, rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'config':<26} {'tokens/step':>11} {'real s':>8} {'model s':>8} {'error':>7} {'measure s':>9} "
             f"{'error':>7}"]
    for r in rows:
        lines.append(f"{r.label:<26} {r.tokens_per_step:>11,} {r.real_s:>8.3f} {r.model_s:>8.3f} "
                     f"{r.model_error:>+7.1%} {r.measure_s:>9.3f} {r.measure_error:>+7.1%}")
    model = statistics.median(abs(r.model_error) for r in rows)
    after = statistics.median(abs(r.measure_error) for r in rows)
    lines.append(f"median |error|: model {model:.1%} (target {TARGETS['model']:.0%}), after --measure {after:.1%} "
                 f"(target {TARGETS['measure']:.0%})")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated row numbers (1-based) of the configurations")
    p.add_argument("--seconds", type=float, default=10.0, help="about how long each real run trains")
    p.add_argument("--budget", default="40s", help="the budgeted run's --time-budget; 0s: none")
    p.add_argument("--dataset", type=Path, default=DATA)
    p.add_argument("--seed-overhead", action="store_true", help="fit the CPU's per-step overhead and stop")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own, as a run has)")
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    import torch

    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    if a.seed_overhead:
        overhead, rows = seed_overhead(a.dataset)
        print(f"overhead {overhead * 1e3:.1f} ms a step; rows: "
              + ", ".join(f"{label} {tps:,.1f} tokens/s" for label, tps in rows.items()))
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return
    chosen = [CONFIGS[int(i) - 1] for i in a.only.split(",")] if a.only else CONFIGS
    start = time.perf_counter()
    rows = run_bench(chosen, dataset=a.dataset, seconds=a.seconds)
    print(format_table(rows))
    if a.budget != "0s":
        budget, wall, steps = budget_run(a.budget, a.dataset)
        print(f"time budget {a.budget}: ended after {wall:.1f} s ({wall / budget - 1:+.1%}, target within "
              f"{TARGETS['budget']:.0%}), {steps} steps")
    print(f"{time.perf_counter() - start:.0f} s; load average at the end: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
