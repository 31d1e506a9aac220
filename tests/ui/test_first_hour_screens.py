"""What the screens say in a new user's first hour (issue 24, items 9, 10, 11, 15): partial figures marked
alike with a legend, a custom shape not labelled as its preset, help generated from each screen's bindings,
and small first impressions (the pause line once, one precision per plot axis, checkboxes readable without
colour)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Checkbox

from engine import events as ev
from tests.ui.conftest import run, screen_text, wait_for
from tests.ui.test_dashboard import log_text, open_dashboard, scripted, started, step  # noqa: F401  (a fixture)
from tui_lm.app import make_app

SIZE = (100, 30)


def plain(widget) -> str:
    """A widget as a terminal without colour shows it."""
    return str(widget.render()).strip()


def test_checkboxes_read_on_and_off_without_colour() -> None:
    """On and off both rendered ▐X▌, told apart by colour only: a plain terminal showed every boolean as on."""

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            tie = app.screen.query_one("#f-model-tie_embeddings", Checkbox)
            checkpointing = app.screen.query_one("#f-train-grad_checkpointing", Checkbox)
            assert tie.value and not checkpointing.value
            assert plain(tie) == "▐X▌ on" and plain(checkpointing) == "▐ ▌ off"
            tie.scroll_visible(animate=False)
            await pilot.pause()
            assert "▐X▌ on" in screen_text(app)  # the screen as a colourless terminal shows it
            checkpointing.toggle()
            await pilot.pause()
            assert plain(checkpointing) == "▐X▌ on"
            assert app.screen.query_one("#config-form").config.train.grad_checkpointing is True

    run(flow())


def test_the_pause_line_is_shown_once(tmp_path: Path, scripted) -> None:
    """The trainer reports a pause's checkpoint and then the pause; the log said both, naming the same file."""
    run_dir = tmp_path / "runs" / "demo"
    checkpoint = str(run_dir / "snapshots" / "step_0000012.pt")
    scripted(started(run_dir), step(10), ev.CheckpointSaved(step=12, path=checkpoint, reason="pause"),
             ev.Paused(step=12, checkpoint=checkpoint),
             ev.CheckpointSaved(step=20, path=str(run_dir / "snapshots" / "step_0000020.pt"), reason="interval"))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot)
            await wait_for(pilot, lambda: "step_0000020.pt" in log_text(dash), 10, "the last checkpoint")
            lines = [line for line in log_text(dash).splitlines() if "step_0000012.pt" in line]
            assert lines == ["step 12: paused, checkpoint runs/demo/snapshots/step_0000012.pt"]
            assert "step 20: checkpoint (interval) saved to runs/demo/snapshots/step_0000020.pt" in log_text(dash)

    run(flow())
