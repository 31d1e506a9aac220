"""The dashboard's reactions, with a scripted runner: resumed numbers, paused step, keys offered,
paths, samples, toasts, and stopping while the data is still being prepared (a real trainer)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from textual.widgets import Static

from engine import events as ev
from engine.config.loading import write_toml
from tests.ui.conftest import run, screen_text, text, tiny_config, wait_for
from tests.ui.scripted import ScriptedRunner
from tui_lm.app import make_app
from tui_lm.messages import TrainingEvent
from tui_lm.screens import dashboard as dashboard_module
from tui_lm.screens.dashboard import DashboardScreen
from tui_lm.screens.quit_confirm import QuitConfirm
from tui_lm.screens.setup import SetupScreen
from tui_lm.widgets.dashboard.event_log import EventLog
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel
from tui_lm.widgets.dashboard.sample_view import SampleView
from tui_lm.widgets.dashboard.step_progress import StepProgress

SIZE = (120, 40)


def started(run_dir: Path, **kw) -> ev.RunStarted:
    values = dict(run_dir=str(run_dir), num_params=1000, total_steps=100, start_step=0, steps_per_epoch=50,
                  tokens_per_step=128, device="cpu", precision="fp32")
    return ev.RunStarted(**{**values, **kw})


def step(n: int, loss: float = 3.0) -> ev.StepMetrics:
    return ev.StepMetrics(step=n, total_steps=100, epoch=0, loss=loss, lr=1e-3, grad_norm=1.0, tokens_per_s=1000.0,
                          step_time_s=0.1, elapsed_s=n * 0.1, tokens_seen=n * 128)


def valid(n: int, loss: float, partial: bool = True) -> ev.EvalResult:
    return ev.EvalResult(step=n, split="valid", loss=loss, perplexity=math.exp(loss), word_perplexity=math.exp(1.5 * loss),
                         bits_per_byte=loss / 3, tokens=512, partial=partial)


def log_text(screen: DashboardScreen) -> str:
    return "\n".join(strip.text for strip in screen.query_one(EventLog).lines)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dashboard_module, "TrainingRunner", ScriptedRunner)

    def use(*events: ev.Event) -> None:
        monkeypatch.setattr(ScriptedRunner, "SCRIPT", list(events))

    return use


async def open_dashboard(app, pilot, until: str = "") -> DashboardScreen:
    """Start the run from setup (ctrl+t); with `until`, wait for the dashboard to reach that state."""
    await pilot.pause()
    await pilot.press("ctrl+t")
    await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5, "dashboard")
    dash = app.screen
    if until:
        await wait_for(pilot, lambda: dash.state == until, 10, until)
        await pilot.pause()
    return dash


def test_resumed_run_shows_its_metrics_and_the_paused_step(tmp_path: Path, scripted, corpus: Path) -> None:
    """Bugs: valid loss, best valid and perplexity showed "—" after resuming; the progress line kept the
    last logged step (50) while paused at 55; the log showed absolute paths for a resumed run."""
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    write_toml(tiny_config(corpus, tmp_path / "runs"), run_dir / "run.toml")
    rows = [step(10, 5.0), valid(20, 4.0), step(20, 4.5), valid(40, 3.5), step(50, 3.9), valid(60, 9.9)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"time": 0, **e.to_dict()}) + "\n" for e in rows))
    (run_dir / "state.json").write_text(json.dumps({"status": "paused", "step": 55, "last_val_loss": 3.5}))
    ckpt = run_dir / "snapshots" / "step_0000050.pt"
    scripted(started(run_dir, start_step=50, resumed_from=str(ckpt)),
             ev.CheckpointSaved(step=55, path=str(run_dir / "snapshots" / "step_0000055.pt"), reason="pause"),
             ev.Paused(step=55, checkpoint=str(run_dir / "snapshots" / "step_0000055.pt")))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.resume_run(run_dir)
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), 5, "dashboard")
            dash = app.screen
            await wait_for(pilot, lambda: dash.state == "paused", 10, "paused")
            panel = dash.query_one(MetricsPanel)
            await wait_for(pilot, lambda: panel.valid is not None, 10, "history")
            shown = " ".join(text(panel).split())
            assert "valid loss 3.5000" in shown  # the last evaluation up to step 50, not step 60's
            assert "best valid 3.5000" in shown
            assert f"perplexity {math.exp(3.5):,.2f}" in shown
            assert "train loss 3.9000" in shown
            progress = text(dash.query_one(StepProgress))
            assert "step 55 / 100" in progress and "paused" in progress
            log = log_text(dash)
            assert "in runs/demo on cpu" in log and str(tmp_path) not in log
            assert "checkpoint runs/demo/snapshots/step_0000055.pt" in log

    run(flow())


def test_keys_offered_follow_the_state_and_failure_is_not_toasted(tmp_path: Path, scripted) -> None:
    """Bugs: p/r/s stayed in the footer (greyed) after FAILED; a toast repeated the failure banner."""
    run_dir = tmp_path / "runs" / "demo"
    scripted(started(run_dir), step(10),
             ev.Failed(message="CUDA out of memory. Try a smaller batch", step=12, kind="oom"))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot, until="failed")
            keys = {a.binding.key for a in dash.active_bindings.values() if a.binding.action in ("pause", "resume", "stop")}
            assert keys == set(), f"keys still offered after the run failed: {keys}"
            assert dash.active_bindings["escape"].enabled  # back to setup is offered
            assert "Training failed (oom)" in text(dash.query_one("#error-panel", Static))
            assert not list(app.screen.query("Toast")), "a toast repeats the failure banner over the log"

    run(flow())


def test_paused_and_finished_do_not_cover_the_log_with_toasts(tmp_path: Path, scripted) -> None:
    run_dir = tmp_path / "runs" / "demo"
    scripted(started(run_dir), step(10), ev.Paused(step=12, checkpoint=str(run_dir / "x.pt")),
             ev.Resumed(step=12), step(100),
             ev.Finished(step=100, run_dir=str(run_dir), stopped=False, model_dir=str(run_dir / "models")))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot, until="finished")
            assert not list(app.screen.query("Toast"))
            assert "finished; model saved to runs/demo/models" in log_text(dash)
            assert "p" not in dash.active_bindings

    run(flow())


def test_a_sample_with_newlines_is_shown_whole(tmp_path: Path, scripted) -> None:
    lines = ["The history of the city", "", " = = Early years = = ", "", "It was founded in 1820 ."]
    scripted(started(tmp_path / "runs" / "demo"), ev.SampleGenerated(step=10, prompt="The history of",
                                                                      text="\n".join(lines)))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot)
            view = dash.query_one(SampleView)
            await wait_for(pilot, lambda: "sample at step" in str(view.border_title), 10, "sample")
            await pilot.pause()
            shown = " ".join(screen_text(app).split())
            for line in ("The history of the city", "= = Early years = =", "It was founded in 1820 ."):
                assert line in shown, f"{line!r} not on screen: {shown!r}"

    run(flow())


def test_stop_and_quit_interrupt_data_preparation(tmp_path: Path, monkeypatch, tiny_profile) -> None:
    """Bug: with no data and no network, `s` waited out the hub's retries (23 s) and `q` took 20 s;
    the quit dialog promised a checkpoint at step 0."""
    import datasets

    def offline_retries(*args, **kwargs):
        time.sleep(20)  # what the hub's connection retries take offline
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline_retries)
    monkeypatch.delenv("TUI_LM_DATA", raising=False)
    profile = tiny_profile()
    profile.write_text(profile.read_text().replace(f'dataset = "{tmp_path.parent}', 'dataset = "wikitext-2" # '))

    async def flow() -> None:
        app = make_app(profile=profile)
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot)
            await wait_for(pilot, lambda: "downloading wikitext-2" in log_text(dash), 30, "download started")
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirm), 5, "quit dialog")
            warning = text(app.screen.query_one("#quit-warning", Static))
            assert "has not started yet" in warning and "checkpoint" not in warning
            await pilot.press("n")
            await wait_for(pilot, lambda: app.screen is dash, 5, "dialog closed")
            t0 = time.monotonic()
            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen), 5, "stopped during the download")
            assert time.monotonic() - t0 < 5

    run(flow())


def test_evaluation_is_visible_in_the_header(tmp_path: Path, scripted) -> None:
    """Bug: during an evaluation the header stayed RUNNING and nothing moved (a final evaluation ran
    ~15 minutes with the bar frozen at 60/60)."""
    scripted(started(tmp_path / "runs" / "demo"), step(10),
             ev.EvalProgress(step=10, split="valid", done=120, total=960, elapsed_s=10.0, eta_s=70.0))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot)
            header = dash.query_one("#run-header")
            await wait_for(pilot, lambda: "EVALUATING" in str(header.render()), 10, "evaluating")
            assert "valid 120/960 · ETA 1m10s" in str(header.render())
            dash.post_message(TrainingEvent(valid(10, 3.0)))  # the result ends the phase
            await wait_for(pilot, lambda: "RUNNING" in str(header.render()), 10, "running again")
            await pilot.press("s")

    run(flow())


def test_headless_prints_evaluation_progress() -> None:
    import io

    from rich.console import Console

    from tui_lm.headless import Printer

    out = io.StringIO()
    printer = Printer(Console(file=out, width=200))  # not a terminal: lines, no bar
    for done in range(0, 11):
        printer(ev.EvalProgress(step=60, split="valid", done=done, total=10, elapsed_s=done, eta_s=10 - done))
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluating valid at step 60: 10 batches"
    assert [line.split()[1] for line in lines[1:]] == ["3/10", "5/10", "8/10"]
    assert "ETA 0m07s" in lines[1]


def test_one_row_event_log_shows_the_start_of_the_latest_line(tmp_path: Path, scripted) -> None:
    """At 80x24 the log is one row: a long line shows its first words and an ellipsis, not a wrapped tail."""
    message = ("data: tokenized train split with the BPE tokenizer trained on this corpus, 2,088,628 tokens "
               "in 3.2 s; validation split 217,646 tokens; test split 245,569 tokens")
    scripted(started(tmp_path / "runs" / "r"), step(10), ev.Log(message), step(20))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            dash = await open_dashboard(app, pilot)
            await wait_for(pilot, lambda: dash.query_one(MetricsPanel).train is not None
                           and dash.query_one(MetricsPanel).train.step == 20, 10, "metrics")
            await pilot.pause(0.3)
            rows = [line.strip() for line in screen_text(app).splitlines()]
            shown = next(r for r in rows if r.startswith("data: tokenized"))
            assert shown.endswith("…") and message.startswith(shown[:-1].rstrip())
            assert shown[:-1].rstrip().split()[-1] in message.split()  # cut after a whole word
            assert not any("test split 245,569 tokens" in r for r in rows)  # no wrapped tail
            await pilot.press("s")

    run(flow())


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
def test_small_terminals_keep_what_is_needed_whole(tmp_path: Path, scripted, size: tuple[int, int]) -> None:
    """At 100x30 and 80x24 the needed figures stay on screen, whole; the event log and memory details collapse."""
    name = "a-rather-long-run-name-20261126-101500"
    scripted(started(tmp_path / "runs" / name, device="cuda:0 (NVIDIA H100 80GB HBM3)", num_params=124_439_808),
             step(30), valid(30, 3.5),
             ev.MemorySample(kind="cuda", used_bytes=30 * 2**30, total_bytes=80 * 2**30, allocated_bytes=20 * 2**30,
                             reserved_bytes=25 * 2**30, peak_bytes=28 * 2**30, utilization=97.0,
                             label="NVIDIA H100 80GB HBM3"),
             step(40))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=size) as pilot:
            dash = await open_dashboard(app, pilot)
            await wait_for(pilot, lambda: dash.query_one(MetricsPanel).train is not None
                           and dash.query_one(MetricsPanel).train.step == 40, 10, "metrics")
            await pilot.pause(0.6)
            screen = screen_text(app)
            lines = screen.splitlines()
            assert name in lines[0]  # the header drops the device before cutting the name
            assert "step 40 / 100" in lines[2] and "ETA 6s" in lines[2]
            for needed in ("train loss", "valid loss", "perplexity", "word ppl", "3.5000", f"{math.exp(3.5):,.2f}",
                           "NVIDIA H100 80GB HBM3", "30.0 of 80.0 GiB (37.5%)", "Pause", "Stop"):
                assert needed in screen, f"{needed!r} missing at {size}"
            assert "…" not in screen  # nothing ellipsised away
            compact = size[0] < 100 or size[1] < 30
            assert dash.has_class("-compact") == compact
            log = dash.query_one(EventLog)
            assert (log.size.height <= 2) == compact  # the event log collapses to its latest line
            await pilot.press("s")

    run(flow())
