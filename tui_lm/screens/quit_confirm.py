"""The quit dialog: a ModalScreen[bool] that says what quitting does to the run, if one is active."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitConfirm(ModalScreen[bool]):
    HELP_TITLE = "quit dialog"
    BINDINGS = [
        Binding("y", "answer(True)", "Quit", tooltip="quit tui-lm"),
        Binding("n,escape", "answer(False)", "Cancel", tooltip="stay"),
    ]

    def __init__(self, warning: str = "") -> None:
        """`warning`: what happens to the active run (DashboardScreen.quit_warning); "" when none is."""
        super().__init__()
        self.warning = warning

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog", classes="dialog"):
            yield Static("[b]Quit tui-lm?[/b]", classes="dialog-title")
            if self.warning:
                yield Static(self.warning, id="quit-warning", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Quit (y)", id="quit-yes", variant="error")
                yield Button("Cancel (n)", id="quit-no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#quit-no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "quit-yes")

    def action_answer(self, quit_: bool) -> None:
        self.dismiss(quit_)
