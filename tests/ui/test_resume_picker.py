"""Resume picker: listing runs from their small files, refusing runs with a problem."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from engine.config.loading import write_toml
from tests.ui.conftest import run, text, tiny_config, wait_for
from tui_lm.app import make_app
from tui_lm.screens.resume import ResumeScreen
from tui_lm.widgets.resume.run_table import RunTable

SIZE = (120, 40)
FIXED_TIME = 1_767_225_600.0  # 2026-01-01 00:00 UTC, so snapshots do not depend on the clock


def fake_run(root: Path, name: str, corpus: Path, *, step: int, total: int, status: str,
             checkpoint: bool = True, ppl: float | None = 123.45, when: float = FIXED_TIME) -> Path:
    """A run folder as the trainer leaves it, without training (tensor file is a placeholder)."""
    run_dir = root / name
    (run_dir / "snapshots").mkdir(parents=True)
    cfg = tiny_config(corpus, root)
    cfg.run.run_name, cfg.run.preset, cfg.data.dataset = name, "tiny", "wikitext-2"
    write_toml(cfg, run_dir / "run.toml")
    # A run with no checkpoint is ordered by its run.toml's time: pin it too, not the clock.
    os.utime(run_dir / "run.toml", (when, when))
    state = {"status": status, "step": step, "total_steps": total, "world_size": 1}
    if ppl is not None:
        state.update(last_val_ppl=ppl, last_word_ppl=ppl * 3)
    (run_dir / "state.json").write_text(json.dumps(state))
    if checkpoint:
        pt = run_dir / "snapshots" / f"step_{step:07d}.pt"
        pt.write_bytes(b"0" * 64)
        (pt.with_suffix(".json")).write_text(json.dumps(
            {"format_version": 1, "file": pt.name, "bytes": 64, "time": when, "step": step,
             "total_steps": total, "world_size": 1}))
    return run_dir


def make_runs(root: Path, corpus: Path) -> None:
    fake_run(root, "paused-run", corpus, step=300, total=1000, status="paused")
    fake_run(root, "finished-run", corpus, step=1000, total=1000, status="finished", ppl=88.8,
             when=FIXED_TIME - 86400)
    fake_run(root, "broken-run", corpus, step=0, total=1000, status="crashed", checkpoint=False, ppl=None,
             when=FIXED_TIME + 3600)


def test_picker_lists_runs_and_refuses_problems(tmp_path: Path, corpus: Path) -> None:
    make_runs(tmp_path / "runs", corpus)

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[tmp_path / "runs"])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "runs")
            table = app.screen.query_one(RunTable)
            by_name = {r.name: r for r in table.runs}
            assert set(by_name) == {"paused-run", "finished-run", "broken-run"}
            assert by_name["broken-run"].problem == "no checkpoint to resume from"
            # Move to the broken run and press enter: refused, the picker stays.
            table.move_cursor(row=table.runs.index(by_name["broken-run"]))
            await pilot.pause()
            assert "no checkpoint to resume from" in text(app.screen.query_one("#run-detail"))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ResumeScreen)
            # Escape goes back to the setup screen underneath.
            await pilot.press("escape")
            await pilot.pause()
            assert type(app.screen).__name__ == "SetupScreen"

    run(flow())


def test_resume_root_may_be_a_run_folder(tmp_path: Path, corpus: Path) -> None:
    run_dir = fake_run(tmp_path / "runs", "only", corpus, step=10, total=40, status="stopped")

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[run_dir])  # `tui-lm --resume path/to/run`
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "runs")
            assert [r.name for r in app.screen.query_one(RunTable).runs] == ["only"]

    run(flow())


def picker_ready(app) -> bool:
    return isinstance(app.screen, ResumeScreen) and app.screen.loaded


def test_picker_sees_runs_created_after_the_app_started(tmp_path: Path, corpus: Path) -> None:
    """Bug: the folders were listed once in make_app, so a first run's lm_<dataset> never showed."""

    async def flow() -> None:
        app = make_app()  # an empty working folder: no lm_* yet
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: picker_ready(app), 30, "picker")
            assert app.screen.query_one(RunTable).runs == []
            assert "no runs found" in text(app.screen.query_one("#run-detail"))
            # A run appears while the picker is open: F5 finds it.
            fake_run(tmp_path / "lm_tinytext", "first", corpus, step=10, total=40, status="stopped")
            await pilot.press("f5")
            await wait_for(pilot, lambda: picker_ready(app), 30, "reload")
            assert [r.name for r in app.screen.query_one(RunTable).runs] == ["first"]
            await pilot.press("escape")
            # Another one while the picker is closed: opening it again finds it.
            fake_run(tmp_path / "lm_tinytext", "second", corpus, step=20, total=40, status="paused",
                     when=FIXED_TIME + 60)
            # And one in the output folder typed on the setup screen.
            fake_run(tmp_path / "elsewhere", "typed", corpus, step=5, total=40, status="paused",
                     when=FIXED_TIME - 60)
            app.screen.query_one("#f-run-out_dir").value = "elsewhere"
            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: picker_ready(app), 30, "picker again")
            assert [r.name for r in app.screen.query_one(RunTable).runs] == ["second", "first", "typed"]
            assert "lm_tinytext" in text(app.screen.query_one("#resume-where"), width=200)

    run(flow())


def test_resume_named_run_is_preselected(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    """Bug: `tui-lm --resume lm_x/<run>` highlighted the newest run, and enter resumed that one."""
    make_runs(tmp_path / "runs", corpus)  # broken-run is the newest, paused-run is named
    chosen: list[Path] = []
    monkeypatch.setattr(type(make_app()), "resume_run", lambda self, run_dir, screen=None: chosen.append(run_dir))

    async def flow() -> None:
        app = make_app(resume=tmp_path / "runs" / "paused-run")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: picker_ready(app), 30, "picker")
            table = app.screen.query_one(RunTable)
            assert {r.name for r in table.runs} == {"paused-run", "finished-run", "broken-run"}
            assert table.highlighted.name == "paused-run"
            assert "enter resumes it at step 300" in text(app.screen.query_one("#run-detail"))
            await pilot.press("enter")
            await pilot.pause()
            assert chosen == [tmp_path / "runs" / "paused-run"]

    run(flow())


def test_loaded_means_the_rows_are_laid_out(tmp_path: Path, corpus: Path) -> None:
    """The snapshot flake: `loaded` was set before the table had sized its columns to the rows.

    On a busy machine the pilot's idle wait returned before the table's idle
    pass, and the picture showed every column cut to its header's width.
    """
    make_runs(tmp_path / "runs", corpus)
    widths: list[int] = []

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[tmp_path / "runs"])
        async with app.run_test(size=SIZE) as pilot:
            while not picker_ready(app):
                await asyncio.sleep(0)  # no pilot pause: look at the very moment `loaded` turns true
            table = app.screen.query_one(RunTable)
            widths.append(table.ordered_columns[0].get_render_width(table))

    run(flow())
    assert widths[0] >= len("finished-run") + 2
