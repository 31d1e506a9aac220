"""Benchmark: is the memory estimate fast enough to follow every keystroke on the setup screen?

    python bench/estimator.py [--repeats 200]

Times, per call, what the setup screen's memory panel does on each change:
the run plan (engine.config.plan.plan_run), the estimate (engine.memory.estimate.estimate_memory)
and the largest batch that fits (max_batch_size, a bisection of estimates),
the time (engine.speed.run_time on an H100, with the kept-measurement
lookup) and the quality guide (engine.speed.quality), for each preset.
Targets: under 1 ms for plan + estimate + quality, under 20 ms for the
largest batch and the time (a keystroke should not wait on any).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config.loading import build_config, preset_names  # noqa: E402
from engine.config.plan import DeviceInfo, plan_run  # noqa: E402
from engine.memory.estimate import GiB, estimate_memory, max_batch_size  # noqa: E402
from engine.memory.gpus import find_gpu  # noqa: E402
from engine.speed.model import SplitSizes  # noqa: E402
from engine.speed.quality import quality_guide  # noqa: E402
from engine.speed.run_time import run_time  # noqa: E402

SIZES = SplitSizes(train=2_224_629, valid=246_547, test=280_965, exact=True)  # WikiText-2's BPE tokens

TARGETS_MS = {"plan": 1.0, "estimate": 1.0, "max batch": 20.0, "time": 20.0, "quality": 1.0}


def per_call_ms(fn, repeats: int) -> float:
    """Median over 5 rounds of the mean time of one call, in ms."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        rounds.append((time.perf_counter() - start) / repeats * 1e3)
    return statistics.median(rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    a = p.parse_args()
    print(f"{'preset':<8} {'what':<10} {'ms/call':>9} {'target':>8}  verdict")
    h100 = find_gpu("H100")
    for preset in preset_names():
        cfg = build_config(preset, None, {"train": {"batch_size": 32}})
        plan = plan_run(cfg, device=DeviceInfo.gpu())
        cases = {
            "plan": (lambda: plan_run(cfg, device=DeviceInfo.gpu()), a.repeats),
            "estimate": (lambda: estimate_memory(cfg, plan=plan), a.repeats),
            "max batch": (lambda: max_batch_size(cfg, 80 * GiB, plan=plan), max(1, a.repeats // 20)),
            "time": (lambda: run_time(plan, estimate_memory(cfg, plan=plan), h100, SIZES), max(1, a.repeats // 20)),
            "quality": (lambda: quality_guide(plan, 1, SIZES.train), a.repeats),
        }
        for what, (fn, repeats) in cases.items():
            ms = per_call_ms(fn, repeats)
            verdict = "ok" if ms <= TARGETS_MS[what] else "SLOW"
            print(f"{preset:<8} {what:<10} {ms:>9.3f} {TARGETS_MS[what]:>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
