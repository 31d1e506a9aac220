"""The resume picker on a run another process is training: refused with who holds it, no dashboard at step 0."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from engine.runs.folder import lock_run
from tests.ui.conftest import run, wait_for
from tests.ui.test_resume_picker import SIZE, fake_run
from tui_lm.app import make_app
from tui_lm.screens.resume import ResumeScreen


def test_picker_refuses_a_run_being_trained_and_says_by_whom(tmp_path: Path, corpus: Path) -> None:
    run_dir = fake_run(tmp_path / "runs", "busy", corpus, step=300, total=1000, status="running")
    lock = lock_run(run_dir)  # as a trainer holds it (another open file: the probe conflicts with it)

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[tmp_path / "runs"])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "runs")
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ResumeScreen)
            messages = [str(n.message) for n in app._notifications]
            assert any(f"run folder {run_dir} is in use by process {os.getpid()} on {socket.gethostname()}" in m
                       for m in messages), messages

    try:
        run(flow())
    finally:
        lock.release()
