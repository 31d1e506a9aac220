"""Snapshots (pytest-textual-snapshot) of every screen: setup, resume picker, help, dashboard, quit.

Content is made deterministic: GPU detection is off (conftest), paths on
screen are relative to a tmp working directory, checkpoint times are fixed and
shown in UTC. Update with `pytest tests/ui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from engine import events as ev
from engine.config.loading import build_config
from engine.config.schedule import LRSchedule
from engine.memory.estimate import estimate_memory
from tests.ui.test_resume_picker import make_runs
from tui_lm.app import make_app
from tui_lm.runners.training import TrainingRunner
from tui_lm.screens import dashboard as dashboard_module

SIZE = (120, 40)


@pytest.fixture
def fixed_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUI_LM_PROFILES", "profiles")
    monkeypatch.setenv("TZ", "UTC")
    # Whether wikitext-2 is on this machine shows on the setup screen: not here, on every machine.
    monkeypatch.delenv("TUI_LM_DATA", raising=False)
    time.tzset()
    yield tmp_path
    monkeypatch.undo()
    time.tzset()


def test_setup_screen(snap_compare, fixed_cwd: Path) -> None:
    assert snap_compare(make_app(out_dir="runs"), terminal_size=SIZE)


def test_setup_screen_80x24(snap_compare, fixed_cwd: Path) -> None:
    """The smallest terminal: messages under their fields, the side column narrow."""
    async def edit(pilot) -> None:
        await pilot.pause()
        pilot.app.screen.query_one("#f-model-num_heads").value = "3"
        await pilot.pause()

    assert snap_compare(make_app(out_dir="runs"), terminal_size=(80, 24), run_before=edit)


def test_setup_screen_invalid(snap_compare, fixed_cwd: Path) -> None:
    async def edit(pilot) -> None:
        await pilot.pause()
        pilot.app.screen.query_one("#f-model-num_heads").value = "3"
        pilot.app.screen.query_one("#f-train-lr").value = "fast"
        await pilot.pause()

    assert snap_compare(make_app(out_dir="runs"), terminal_size=SIZE, run_before=edit)


def test_help(snap_compare, fixed_cwd: Path) -> None:
    assert snap_compare(make_app(out_dir="runs"), press=["f1"], terminal_size=SIZE)


def test_resume_picker(snap_compare, fixed_cwd: Path, corpus: Path) -> None:
    make_runs(Path("runs"), corpus)

    async def loaded(pilot) -> None:
        while not getattr(pilot.app.screen, "loaded", False):
            await asyncio.sleep(0.05)
        # Let the table's focus and first row highlight settle before the picture.
        for _ in range(3):
            await pilot.pause()

    app = make_app(resume_picker=True, roots=[Path("runs")])
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)


class ScriptedRunner(TrainingRunner):
    """Replays a fixed, paused run instead of training: the dashboard's picture is the same every time.

    It waits for the screen to take RunStarted before sending the rest, as a
    real trainer's first step comes long after it; otherwise the step metrics
    could be drained before the progress bar knows the total.
    """

    def run(self) -> ev.Event:
        screen = self.target
        # What the trainer publishes for the tiny preset on the CPU: its LR schedule and memory estimate.
        estimate = estimate_memory(build_config("tiny"), device="cpu").total_bytes
        self.emit(ev.RunStarted(run_dir="runs/demo", num_params=15_431_424, total_steps=1000, start_step=0,
                                steps_per_epoch=250, tokens_per_step=8192, device="cpu", precision="fp32",
                                schedule=LRSchedule(3e-4, 1000, 1000, 0.1), estimated_bytes=estimate))
        deadline = time.monotonic() + 30
        while screen.run_dir is None and time.monotonic() < deadline:
            time.sleep(0.01)
        for step in range(10, 310, 10):
            self.emit(ev.StepMetrics(step=step, total_steps=1000, epoch=step // 250, loss=9.0 * 0.993 ** step + 2.0,
                                     lr=3e-4 * min(1.0, step / 100), grad_norm=1.25, tokens_per_s=20_480.0,
                                     step_time_s=0.4, elapsed_s=step * 0.4, tokens_seen=step * 8192))
            if step % 100 == 0:
                loss = 9.0 * 0.993 ** step + 2.3
                self.emit(ev.EvalResult(step=step, split="valid", loss=loss, perplexity=math.exp(loss),
                                        word_perplexity=math.exp(loss * 1.3), bits_per_byte=loss / 3.2,
                                        tokens=40_960, partial=True, best=True))
        self.emit(ev.SampleGenerated(step=300, prompt="The history of",
                                     text="The history of the city was the first season of the album ."))
        self.emit(ev.MemorySample(kind="cpu", used_bytes=3 * 2**30, total_bytes=24 * 2**30,
                                  peak_bytes=int(3.5 * 2**30), label="process memory (no GPU)"))
        self.emit(ev.CheckpointSaved(step=300, path="runs/demo/snapshots/step_0000300.pt", reason="pause"))
        self.emit(ev.Paused(step=300, checkpoint="runs/demo/snapshots/step_0000300.pt"))
        return ev.Paused(step=300, checkpoint="runs/demo/snapshots/step_0000300.pt")


def scripted_dashboard(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], Awaitable[None]]:
    monkeypatch.setattr(dashboard_module, "TrainingRunner", ScriptedRunner)

    async def start(pilot) -> None:
        await pilot.press("ctrl+t")
        # Start is a message to the app: wait for the dashboard to be mounted before reading its state.
        while not (isinstance(pilot.app.screen, dashboard_module.DashboardScreen) and pilot.app.screen.is_mounted
                   and pilot.app.screen.state == "paused"):
            await asyncio.sleep(0.05)
        for _ in range(3):
            await pilot.pause()

    return start


def test_dashboard_paused(snap_compare, fixed_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = scripted_dashboard(monkeypatch)
    assert snap_compare(make_app(out_dir="runs"), terminal_size=SIZE, run_before=start)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_dashboard_paused_at_size(snap_compare, fixed_cwd: Path, monkeypatch: pytest.MonkeyPatch,
                                  size: tuple[int, int]) -> None:
    """The smallest terminal (the event log and memory details collapsed) and a large one."""
    start = scripted_dashboard(monkeypatch)
    assert snap_compare(make_app(out_dir="runs"), terminal_size=size, run_before=start)


def test_quit_dialog_during_a_run(snap_compare, fixed_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = scripted_dashboard(monkeypatch)

    async def start_then_quit(pilot) -> None:
        await start(pilot)
        pilot.app.clear_notifications()
        await pilot.press("q")
        await pilot.pause()

    assert snap_compare(make_app(out_dir="runs"), terminal_size=SIZE, run_before=start_then_quit)
