"""The quit dialog: a yes / no Confirm that says what quitting does to the run, if one is active."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from tui_lm.widgets.common.confirm import Confirm


class QuitConfirm(Confirm):
    HELP_TITLE = "quit dialog"
    PREFIX, QUESTION, YES, NO = "quit", "[b]Quit tui-lm?[/b]", "Quit (y)", "Cancel (n)"
    BINDINGS = [
        Binding("y", "answer(True)", "Quit", tooltip="quit tui-lm"),
        Binding("n,escape", "answer(False)", "Cancel", tooltip="stay"),
    ]

    def __init__(self, warning: str = "") -> None:
        """`warning`: what happens to the active run (DashboardScreen.quit_warning); "" when none is."""
        super().__init__()
        self.warning = warning

    def body(self) -> ComposeResult:
        if self.warning:
            yield Static(self.warning, id="quit-warning", markup=False)
