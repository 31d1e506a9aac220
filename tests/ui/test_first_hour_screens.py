"""What the screens say in a new user's first hour (issue 24, items 9, 10, 11, 15): partial figures marked
alike with a legend, a custom shape not labelled as its preset, help generated from each screen's bindings,
and small first impressions (the pause line once, one precision per plot axis, checkboxes readable without
colour)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Checkbox

from tests.ui.conftest import run, screen_text, wait_for
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
