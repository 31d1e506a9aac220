"""--time-budget: the steps that fit, fixed once after a measured warm-up, recorded, and kept on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import events as ev
from engine.config.loading import build_config, read_toml
from engine.config.run_config import parse_duration
from engine.control import TrainingControl
from engine.errors import ConfigError
from engine.speed.budget import budget_total, periodic_evals
from engine.train.trainer import Trainer
from tests.conftest import tiny_config


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "45m", "2h", "1.5h")] == [90, 2700, 7200, 5400]
    for bad in ("90", "5x", "-3m", "0s", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ConfigError, match=r"train.time_budget must be a duration like 90s, 45m or 2h, got '5x'"):
        build_config("tiny", None, {"train": {"time_budget": "5x"}})


def test_the_steps_that_fit() -> None:
    # 90 s left after 10 spent, 1 s a step from step 10, no evaluations: 90 more steps, to step 100.
    assert budget_total(budget_s=100, spent_s=10, step=10, step_s=1.0, eval_interval=0, eval_s=0, final_s=0) == 100
    # A 5 s final evaluation and a 2 s evaluation every 10 steps.
    total = budget_total(budget_s=100, spent_s=10, step=10, step_s=1.0, eval_interval=10, eval_s=2, final_s=5)
    assert (total - 10) + 2 * periodic_evals(10, total, 10) + 5 <= 90
    assert (total + 1 - 10) + 2 * periodic_evals(10, total + 1, 10) + 5 > 90
    assert budget_total(budget_s=10, spent_s=20, step=7, step_s=1.0, eval_interval=0, eval_s=0, final_s=0) == 7


def test_a_budgeted_run_fixes_records_and_ends_at_its_total(corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(corpus, tmp_path / "out", time_budget="5s", max_steps=100_000, eval_interval=0)
    control = TrainingControl()
    events: list[ev.Event] = []

    def sink(e: ev.Event) -> None:
        events.append(e)
        if isinstance(e, ev.SettingsChanged):
            control.stop()  # stop right after the total is fixed: the resume must keep it

    stopped = Trainer(cfg, sink, control).run()
    changed = [e for e in events if isinstance(e, ev.SettingsChanged)]
    assert len(changed) == 1 and changed[0].changes["train.budget_steps"][0] == 0
    total = changed[0].changes["train.budget_steps"][1]
    assert isinstance(stopped, ev.Finished) and stopped.stopped and stopped.step <= total
    run_dir = tmp_path / "out" / "r"
    assert read_toml(run_dir / "run.toml")["train"]["budget_steps"] == total
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "SettingsChanged" and r["changes"]["train.budget_steps"][1] == total for r in records)
    assert any(isinstance(e, ev.Log) and "time budget 5s" in e.message and "predicted to end at" in e.message
               for e in events)
    # The resume continues to exactly that total, measuring nothing again; the cosine ends there.
    resumed: list[ev.Event] = []
    done = Trainer(build_config(None, run_dir / "run.toml"), resumed.append, run_dir=run_dir, resume=True).run()
    assert isinstance(done, ev.Finished) and not done.stopped and done.step == total
    assert not [e for e in resumed if isinstance(e, ev.SettingsChanged)]
    last = [e for e in resumed if isinstance(e, ev.StepMetrics)][-1]
    # The LR of the last step is the cosine's at total - 1: the schedule ends at the fixed total (on a slow
    # machine the total is small, and the last step's LR is not quite the floor yet).
    from engine.config.plan import DeviceInfo, plan_run

    fixed = plan_run(build_config(None, run_dir / "run.toml"), device=DeviceInfo("cpu"))
    assert fixed.total_steps == total and fixed.schedule.multiplier(total) == pytest.approx(cfg.train.min_lr_ratio)
    assert last.total_steps == total and last.lr == pytest.approx(cfg.train.lr * fixed.schedule.multiplier(total - 1))


def _watch(monkeypatch, budget: str, clock: list[float]):
    """A BudgetWatch on a plan of 8 x 32-token steps, no evaluations, its wall clock `clock[0]`."""
    import engine.train.budget as budget_module
    from engine.config.plan import DeviceInfo, plan_run
    from engine.train.budget import BudgetWatch

    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    cfg = build_config(None, None, {"model": {"max_seq_len": 32}, "train": {
        "batch_size": 8, "max_steps": 100_000, "time_budget": budget, "eval_interval": 0, "final_eval_batches": -1}})
    plan = plan_run(cfg, device=DeviceInfo("cpu"))
    return BudgetWatch(cfg, plan, start_step=0, spent_s=0.0, valid_tokens=10_000, test_tokens=10_000)


def test_the_total_follows_the_speed_when_it_moves(monkeypatch) -> None:
    """The speed on a shared machine moves with the load: the total is fixed again when the end would move by
    more than 2% of the budget, and kept through smaller wobbles."""
    import math

    clock = [0.0]
    watch = _watch(monkeypatch, "100s", clock)

    def run(steps: range, step_s: float) -> list[tuple[int, float, int, float]]:
        """(step, wall clock, total, s/step) of each fix while training `steps` at `step_s`."""
        fixes = []
        for s in steps:
            clock[0] += step_s
            fixed = watch.observe(s, clock[0])
            if fixed:
                fixes.append((s, clock[0], fixed[0], fixed[1]))
        return fixes

    # Warm-up to step 2, then 5 s (5% of the budget) at 1 s a step: 93 s left at step 7.
    assert run(range(1, 21), 1.0) == [(7, 7.0, 100, pytest.approx(1.0))]
    assert run(range(21, 41), 1.01) == []  # 1% slower: the end moves by under 2 s, kept
    slower = run(range(41, 61), 2.0)  # twice as slow: fixed again, last from a window wholly at the new speed
    assert len(slower) >= 1 and all(t < 100 for _, _, t, _ in slower)
    step, spent, total, step_s = slower[-1]
    assert step_s == pytest.approx(2.0) and total == step + math.floor((100 - spent) / 2.0) < 100


def test_a_budget_too_short_for_any_step_says_so(tmp_path: Path) -> None:
    """The final evaluation alone outlasts what is left after measuring: the total is the step reached, and the
    log says why and what to change."""
    from engine.config.plan import DeviceInfo, plan_run
    from engine.train.budget import fix_total

    cfg = build_config(None, None, {"train": {"time_budget": "20s", "max_steps": 1000}})
    plan = plan_run(cfg, device=DeviceInfo("cpu"))
    events: list[ev.Event] = []
    fixed_cfg, fixed_plan = fix_total(cfg, plan, 10, 10, 1.05, 14.0, events.append, tmp_path / "run.toml")
    assert fixed_plan.total_steps == 10 and fixed_cfg.train.budget_steps == 10
    (log,) = [e for e in events if isinstance(e, ev.Log)]
    assert log.level == "warning" and "no step fits after the measurement (1.05 s a step; the final evaluation " \
        "needs about 14 s): the run ends at step 10" in log.message and "train.final_eval_batches" in log.message
    # A later fix says the speed moved, from which total to which.
    events.clear()
    fix_total(fixed_cfg, fixed_plan, 20, 30, 2.0, 20.0, events.append)
    assert "the speed moved to 2 s a step; the run ends at step 30 instead of 10" in events[0].message
    assert events[1].changes == {"train.budget_steps": [10, 30]}
