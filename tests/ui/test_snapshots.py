"""Snapshots (pytest-textual-snapshot) of the setup screen, the resume picker and the help.

Content is made deterministic: GPU detection is off (conftest), paths on
screen are relative to a tmp working directory, checkpoint times are fixed and
shown in UTC. Update with `pytest tests/ui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.ui.test_resume_picker import make_runs
from tui_lm.app import make_app

SIZE = (120, 40)


@pytest.fixture
def fixed_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUI_LM_PROFILES", "profiles")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield tmp_path
    monkeypatch.undo()
    time.tzset()


def test_setup_screen(snap_compare, fixed_cwd: Path) -> None:
    assert snap_compare(make_app(out_dir="runs"), terminal_size=SIZE)


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
        import asyncio

        while not getattr(pilot.app.screen, "loaded", False):
            await asyncio.sleep(0.05)
        # Let the table's focus and first row highlight settle before the picture.
        for _ in range(3):
            await pilot.pause()

    app = make_app(resume_picker=True, roots=[Path("runs")])
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)
