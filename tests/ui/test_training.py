"""Training flows on the dashboard: start, live metrics, pause, resume, stop, reopen, finish, fail, quit.

A tiny model on a few hundred lines trains in well under a second per 40 steps
on a CPU, so the flow that pauses mid-run slows the training thread down a
little (a sleep in the runner's emit, on the training thread) to leave time for
the key presses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from textual.widgets import Static

from engine.config.loading import read_toml
from tests.ui.conftest import run, text, wait_for
from tui_lm.app import make_app
from tui_lm.runners.training import TrainingRunner
from tui_lm.screens.dashboard import DashboardScreen
from tui_lm.screens.quit_confirm import QuitConfirm
from tui_lm.screens.resume import ResumeScreen
from tui_lm.screens.setup import SetupScreen
from tui_lm.widgets.dashboard.event_log import EventLog
from tui_lm.widgets.dashboard.line_plot import LinePlot
from tui_lm.widgets.dashboard.memory_gauge import MemoryGauge
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel
from tui_lm.widgets.resume.run_table import RunTable

SIZE = (120, 40)


@pytest.fixture
def slow_steps(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Make each logged step take at least `delay` seconds while `delay` is non-zero."""
    knob = {"delay": 0.03}
    original = TrainingRunner.emit

    def emit(self: TrainingRunner, event) -> None:
        if type(event).__name__ == "StepMetrics" and knob["delay"]:
            time.sleep(knob["delay"])
        original(self, event)

    monkeypatch.setattr(TrainingRunner, "emit", emit)
    return knob


def log_text(screen: DashboardScreen) -> str:
    return "\n".join(strip.text for strip in screen.query_one(EventLog).lines)


def screen_state(app) -> str:
    return getattr(app.screen, "state", type(app.screen).__name__)


def test_train_pause_resume_stop_reopen_and_finish(tiny_profile, tmp_path: Path, slow_steps) -> None:
    run_dir = tmp_path / "runs" / "flow"

    async def flow() -> None:
        app = make_app(profile=tiny_profile(max_steps=60), roots=[tmp_path / "runs"])
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5, "dashboard")
            dash = app.screen
            # Metrics arrive: the step line and the loss numbers fill in.
            await wait_for(pilot, lambda: dash.query_one(MetricsPanel).train is not None, 60, "first metrics")
            await pilot.pause(0.3)
            assert "step " in text(dash.query_one("#progress", Static))
            assert "tokens/s" in text(dash.query_one("#progress", Static))
            assert "train loss" in text(dash.query_one(MetricsPanel))
            assert dash.query_one("#loss-plot", LinePlot).point_count("train") > 0
            assert dash.state == "running"

            # Live memory from engine.memory.monitor: on a CPU machine the process, labelled as such.
            gauge = dash.query_one(MemoryGauge)
            await wait_for(pilot, lambda: gauge.sample is not None, 10, "memory sample")
            if gauge.sample.kind == "cpu":
                assert "process memory (no GPU)" in text(gauge)
            assert "estimate" in text(gauge)

            await pilot.press("p")
            await wait_for(pilot, lambda: dash.state == "paused", 30, "paused")
            snapshots = sorted((run_dir / "snapshots").glob("step_*.pt"))
            assert snapshots, "pause wrote no checkpoint"
            assert "paused, checkpoint" in log_text(dash)
            assert snapshots[-1].name in log_text(dash)
            paused_at = json.loads((run_dir / "state.json").read_text())
            assert paused_at["status"] == "paused"

            await pilot.press("r")
            await wait_for(pilot, lambda: dash.state == "running" and "resumed" in log_text(dash), 30, "resumed")
            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen), 30, "back to setup after stop")
            state = json.loads((run_dir / "state.json").read_text())
            assert state["status"] == "stopped" and state["step"] < 60

            # Reopen it from the resume picker and let it finish at full speed.
            slow_steps["delay"] = 0
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30,
                           "resume picker")
            table = app.screen.query_one(RunTable)
            assert [r.name for r in table.runs] == ["flow"]
            assert table.runs[0].status == "stopped" and table.runs[0].resumable
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5, "dashboard again")
            dash = app.screen
            await wait_for(pilot, lambda: dash.state == "finished", 60, "finished")
            assert (run_dir / "models" / "model.safetensors").is_file()
            assert "resumed at step" in log_text(dash)
            assert "finished; model saved" in log_text(dash)
            assert "test ppl" in text(dash.query_one(MetricsPanel))
            await pilot.pause(0.6)  # the history of the first session is plotted too
            assert dash.query_one("#loss-plot", LinePlot).series["train"].xs[0] < state["step"]

            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen), 5, "setup after finish")
            # A finished run is listed but cannot be started again.
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            assert app.screen.query_one(RunTable).runs[0].status == "finished"
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ResumeScreen)

    run(flow())


def test_failed_run_shows_error_and_app_stays_usable(tiny_profile, tmp_path: Path) -> None:
    # A dataset that passes the setup screen's check (the files exist) but has no text to train on.
    empty = tmp_path / "empty-data"
    empty.mkdir()
    for split in ("train", "valid"):
        (empty / f"{split}.txt").write_text("")
    profile = tiny_profile()
    cfg = read_toml(profile)
    profile.write_text(profile.read_text().replace(repr(cfg["data"]["dataset"]).replace("'", '"'), f'"{empty}"'))

    async def flow() -> None:
        app = make_app(profile=profile)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5, "dashboard")
            dash = app.screen
            await wait_for(pilot, lambda: dash.state == "failed", 60, "failed")
            panel = dash.query_one("#error-panel", Static)
            assert panel.display
            assert "Training failed (data)" in text(panel)
            assert "has no training lines" in " ".join(text(panel).split())
            assert "FAILED" in log_text(dash)
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen), 5, "setup after failure")
            await pilot.press("f1")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", 5, "help")
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen), 5, "help closed")

    run(flow())


def test_quit_during_training_checkpoints_first(tiny_profile, tmp_path: Path, slow_steps) -> None:
    run_dir = tmp_path / "runs" / "flow"

    async def flow() -> None:
        app = make_app(profile=tiny_profile(max_steps=200))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5, "dashboard")
            dash = app.screen
            await wait_for(pilot, lambda: dash.query_one(MetricsPanel).train is not None, 60, "metrics")
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirm), 5, "quit dialog")
            assert "will be stopped" in text(app.screen.query_one("#quit-warning", Static))
            await pilot.press("n")
            await wait_for(pilot, lambda: app.screen is dash, 5, "dialog closed")
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirm), 5, "quit dialog")
            await pilot.press("y")
            await wait_for(pilot, lambda: dash.state == "stopped" or not app.is_running, 30, "stopped")
        assert json.loads((run_dir / "state.json").read_text())["status"] == "stopped"
        assert list((run_dir / "snapshots").glob("step_*.pt"))

    run(flow())
