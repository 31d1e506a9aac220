"""A run that crashed after its last checkpoint and was resumed, as the dashboard, watch and browse show it.

The folder is real: a tiny run crashes at step 14 (checkpoint at 10), is
resumed with a shorter schedule (so the steps it logs again differ) and
stopped at 20, then the dashboard resumes it to the end. Every view must plot
one point per step, in order, with the values of the session that logged the
step last (issue 24 items 6 and 7).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine import events as ev
from engine.control import TrainingControl
from tests.ui.conftest import run, tiny_config, wait_for
from tests.ui.scripted import ScriptedRunner
from tui_lm.app import make_app
from tui_lm.screens import dashboard as dashboard_module
from tui_lm.screens.browse import BrowseScreen
from tui_lm.screens.dashboard import DashboardScreen
from tui_lm.screens.watch import WatchScreen
from tui_lm.widgets.dashboard.line_plot import LinePlot
from tui_lm.widgets.dashboard.sample_view import SampleView, sample_text

SIZE = (120, 40)
CRASH, STOP, END = 14, 20, 30


def losses(events: list[ev.Event]) -> dict[int, float]:
    return {e.step: e.loss for e in events if isinstance(e, ev.StepMetrics)}


@pytest.fixture(scope="module")
def crashed_then_stopped(corpus: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    """(run folder, losses of session 1, losses of session 2): crashed at 14, resumed from 10, stopped at 20."""
    from engine.train.launch import resume_request
    from engine.train.trainer import Trainer

    root = tmp_path_factory.mktemp("replayed")
    first: list[ev.Event] = []

    def crash(e: ev.Event) -> None:
        first.append(e)
        if isinstance(e, ev.StepMetrics) and e.step == CRASH:
            raise RuntimeError("power cut")  # after the recorder wrote the step, as a real crash would

    second: list[ev.Event] = []
    control = TrainingControl()

    def stop(e: ev.Event) -> None:
        second.append(e)
        if isinstance(e, ev.SampleGenerated) and e.step == STOP:
            control.stop()  # after step 20's evaluation and sample: stopped with its checkpoint

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUI_LM_CACHE", str(cache_dir))
        cfg = tiny_config(corpus, root, max_steps=100, save_interval=10, eval_interval=10)
        assert isinstance(Trainer(cfg, crash).run(), ev.Failed)
        run_dir = root / cfg.run.run_name
        # The steps after the checkpoint are logged again on a schedule of END steps: other values.
        request = resume_request(run_dir, {"train": {"max_steps": END}})
        result = Trainer(request.config, stop, control, run_dir=run_dir, resume=True, changes=request.changes).run()
    assert isinstance(result, ev.Finished) and result.stopped and result.step == STOP
    one, two = losses(first), losses(second)
    assert max(one) == CRASH and min(two) == 11
    assert all(one[s] != two[s] for s in range(12, CRASH + 1)), "the replayed steps must differ to be told apart"
    return run_dir, one, two


def copied(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def last_written(run_dir: Path) -> dict[int, float]:
    """Each step's loss as the session that logged it last wrote it (each session here went past the last crash)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["event"] == "StepMetrics"}


def plotted(plot: LinePlot, key: str) -> tuple[list[float], list[float]]:
    series = plot.series[key]
    return list(series.xs), list(series.ys)


def test_resumed_run_plots_one_point_per_step_in_the_dashboard_watch_and_browse(crashed_then_stopped,
                                                                              tmp_path: Path) -> None:
    """Bug: the dashboard's own history reader kept the crashed session's steps 11-14 beside the resumed
    session's: 24 points for 20 steps, going back from 14 to 11."""
    source, one, two = crashed_then_stopped
    run_dir = copied(source, tmp_path)
    raw = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
           if '"StepMetrics"' in line]
    assert len(raw) == CRASH + (STOP - 10)  # the file holds both sessions' steps 11-14

    async def dashboard() -> tuple[list[float], list[float], list[float]]:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.resume_run(run_dir)
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 10, "dashboard")
            dash = app.screen
            await wait_for(pilot, lambda: dash.state == "finished", 120, "the resumed run's end")
            await pilot.pause()
            loss = dash.query_one("#loss-plot", LinePlot)
            return *plotted(loss, "train"), plotted(loss, "valid")[0]

    xs, ys, valid = run(dashboard())
    expected = last_written(run_dir)
    assert list(expected) == list(range(1, END + 1))
    assert xs == list(range(1, END + 1)), f"dashboard: {xs}"
    assert ys == [expected[s] for s in xs]
    assert ys[10:STOP] == [two[s] for s in range(11, STOP + 1)]  # the resumed session's, not the crashed one's
    assert ys[:10] == [one[s] for s in range(1, 11)]
    assert valid == [10, 20, END]  # one per evaluation: 10 and 20 from the history, the final one live

    async def watch() -> tuple[list[float], list[float]]:
        app = make_app(watch=run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, WatchScreen) and app.screen.history_complete
                           and app.screen.result is not None, 30, "watch view")
            await pilot.pause()
            return plotted(app.screen.query_one("#loss-plot", LinePlot), "train")

    assert run(watch()) == (xs, ys)

    async def browse() -> tuple[list[float], list[float]]:
        app = make_app(browse=[run_dir])
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, BrowseScreen) and app.screen.complete, 30, "browse")
            await pilot.pause()
            return plotted(app.screen.query_one("#browse-loss", LinePlot), "train")

    assert run(browse()) == (xs, ys)


def test_resumed_dashboard_shows_the_latest_sample_of_the_history(crashed_then_stopped, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: after a resume the sample panel said "no sample yet" though the run had samples."""
    source, _, _ = crashed_then_stopped
    run_dir = copied(source, tmp_path)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    samples = [r for r in rows if r["event"] == "SampleGenerated"]
    assert [s["step"] for s in samples] == [10, 20]
    latest = samples[-1]
    checkpoint = run_dir / "snapshots" / "step_0000020.pt"
    # This session trains nothing: what the panel shows can only come from the history.
    monkeypatch.setattr(dashboard_module, "TrainingRunner", ScriptedRunner)
    monkeypatch.setattr(ScriptedRunner, "SCRIPT", [
        ev.RunStarted(run_dir=str(run_dir), num_params=1000, total_steps=END, start_step=STOP, steps_per_epoch=50,
                      tokens_per_step=128, device="cpu", precision="fp32", resumed_from=str(checkpoint)),
        ev.Paused(step=STOP, checkpoint=str(checkpoint))])

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.resume_run(run_dir)
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 10, "dashboard")
            view = app.screen.query_one(SampleView)
            await wait_for(pilot, lambda: "sample at step" in str(view.border_title), 10, "the sample of the history")
            assert view.border_title == f"sample at step {STOP}"
            assert view.content.plain == sample_text(latest["prompt"], latest["text"]).plain
            await pilot.press("s")

    run(flow())
