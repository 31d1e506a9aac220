"""--time-budget: the steps that fit, fixed once after a measured warm-up, recorded, and kept on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import events as ev
from engine.config.run_config import parse_duration
from engine.config.loading import build_config, read_toml
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
    assert last.total_steps == total and last.lr == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio, rel=0.02)
