"""A yes / no dialog: the one shape of the quit dialog and Start's "start anyway?".

`Confirm` is a `ModalScreen[bool]`: `y` or the yes button dismisses it with
True; `n`, Esc or the no button (focused first, so Enter is the safe answer)
with False. A subclass names its ids' prefix, its title and its buttons, and
yields what it says between the title and the buttons from `body()`; its
BINDINGS carry `answer(True)` / `answer(False)` with its own words.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class Confirm(ModalScreen[bool]):
    PREFIX = "confirm"  # ids: #PREFIX-dialog, #PREFIX-yes, #PREFIX-no
    QUESTION = ""  # the dialog's title (markup)
    YES, NO = "Yes (y)", "No (n)"

    def body(self) -> ComposeResult:
        """What the dialog says between its title and its buttons."""
        yield from ()

    def compose(self) -> ComposeResult:
        with Vertical(id=f"{self.PREFIX}-dialog", classes="dialog"):
            yield Static(self.QUESTION, classes="dialog-title")
            yield from self.body()
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.YES, id=f"{self.PREFIX}-yes", variant="error")
                yield Button(self.NO, id=f"{self.PREFIX}-no", variant="primary")

    def on_mount(self) -> None:
        self.query_one(f"#{self.PREFIX}-no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == f"{self.PREFIX}-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
