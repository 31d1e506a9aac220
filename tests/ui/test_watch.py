"""The dashboard attached to a run a real headless trainer writes: live view, steering keys, a dead trainer, a resume."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Static

from engine.runs.liveness import read_state
from tests.processes import TrainerProcess, headless_flags
from tests.ui.conftest import run, text, wait_for
from tui_lm.app import make_app
from tui_lm.screens.resume import ResumeScreen
from tui_lm.screens.watch import WatchScreen
from tui_lm.widgets.dashboard.event_log import EventLog
from tui_lm.widgets.dashboard.line_plot import LinePlot
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel
from tui_lm.widgets.dashboard.run_header import RunHeader
from tui_lm.widgets.resume.run_table import RunTable

SIZE = (120, 40)


def log_text(screen: WatchScreen) -> str:
    return "\n".join(strip.text for strip in screen.query_one(EventLog).lines)


def train_points(screen: WatchScreen) -> list[float]:
    return list(screen.query_one("#loss-plot", LinePlot).series["train"].xs)


def test_attach_steer_survive_a_dead_trainer_and_follow_its_resume(corpus: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / "live"
    first = TrainerProcess(headless_flags(corpus, runs, "live", 100_000, eval_interval=25), tmp_path, tag="first")
    second: TrainerProcess | None = None
    try:
        first.wait_until(lambda: read_state(run_dir).get("step", 0) >= 30, what="a first evaluation")

        async def flow() -> None:
            nonlocal second
            # Attach from the resume picker: the running run is listed, `a` attaches.
            app = make_app(resume_picker=True, roots=[runs])
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
                assert [r.status for r in app.screen.query_one(RunTable).runs] == ["running"]
                await pilot.press("a")
                await wait_for(pilot, lambda: isinstance(app.screen, WatchScreen), 10, "attached view")
                view = app.screen
                await wait_for(pilot, lambda: view.query_one(MetricsPanel).train is not None, 30, "numbers")
                # The history from before attaching is plotted, and the view goes on with the trainer.
                await wait_for(pilot, lambda: len(train_points(view)) >= 30 and train_points(view)[0] <= 2, 30,
                               "history")
                assert view.query_one(MetricsPanel).valid is not None
                seen = max(train_points(view))
                await wait_for(pilot, lambda: max(train_points(view)) > seen + 20, 30, "live steps")
                assert view.state == "running"
                await wait_for(pilot, lambda: f"watching pid {first.pid} on" in view.query_one(RunHeader).device, 10,
                               "the trainer named in the header")

                # The dashboard's keys steer the other process.
                await pilot.press("p")
                await wait_for(pilot, lambda: view.state == "paused", 60, "paused")
                assert read_state(run_dir)["status"] == "paused"
                assert "paused, checkpoint" in log_text(view)
                await pilot.press("r")
                await wait_for(pilot, lambda: view.state == "running" and "resumed" in log_text(view), 60, "resumed")

                # The trainer dies without a word: the view says so.
                first.kill()
                await wait_for(pilot, lambda: view.state == "failed", 30, "gone")
                panel = view.query_one("#error-panel", Static)
                assert panel.display and f"trainer process {first.pid} is gone" in text(panel)
                await wait_for(pilot, lambda: "no trainer" in view.query_one(RunHeader).device, 10, "no trainer")
                assert "tui-lm --no-ui --resume" in text(panel)

                # Resumed in another shell: the view follows the new process.
                second = TrainerProcess(["--no-ui", "--resume", str(run_dir)], tmp_path, tag="second")
                await wait_for(pilot, lambda: view.state == "running", 120, "following the resumed run")
                assert not panel.display
                await wait_for(pilot, lambda: f"watching pid {second.pid} on" in view.query_one(RunHeader).device, 10,
                               "the new trainer named in the header")
                steps = read_state(run_dir)["step"]
                await wait_for(pilot, lambda: max(train_points(view)) > steps + 10, 60, "steps of the new process")
                xs = train_points(view)
                assert xs == sorted(xs)  # the steps it replayed after its checkpoint replaced the old ones

                await pilot.press("s")
                await wait_for(pilot, lambda: view.state == "stopped", 60, "stopped")
                assert second.finish(60)[0] == 0
                assert read_state(run_dir)["status"] == "stopped"
                # Leaving the view never touches the run.
                await pilot.press("escape")
                await wait_for(pilot, lambda: not isinstance(app.screen, WatchScreen), 10, "left")

        run(flow())
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_watch_command_refuses_what_is_not_a_run(tmp_path: Path, capsys) -> None:
    from tui_lm.cli import main

    assert main(["watch", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"tui-lm watch: error: run folder {tmp_path / 'nowhere'} does not exist"
    assert main(["watch", str(tmp_path)]) == 2
    assert "is not a run folder (no run.toml in it)" in capsys.readouterr().err


def test_attach_refused_for_a_run_nobody_trains(corpus: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = TrainerProcess(headless_flags(corpus, runs, "done", 6), tmp_path)
    assert done.finish(120)[0] == 0

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[runs])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            await pilot.press("a")
            await pilot.pause()
            assert isinstance(app.screen, ResumeScreen)
            assert any("the run is finished; nothing to attach to" in str(n.message) for n in app._notifications)

    run(flow())
    assert json.loads((runs / "done" / "state.json").read_text())["status"] == "finished"
