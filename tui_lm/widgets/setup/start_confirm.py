"""Start anyway? The dialog Start opens when the memory estimate says the run does not fit its target.

A yes / no `Confirm` (tui_lm/widgets/common/confirm.py): True starts the run as set, False goes back to the
form. The fixes the memory panel offers are listed beside the question, each
with its key (F6-F10), and pressing one applies it (through the callback the
setup screen passes) and goes back to the form, where the estimate is redone.
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from tui_lm.widgets.common.confirm import Confirm
from tui_lm.widgets.setup.memory_panel import FIX_KEYS, Fix


class StartConfirm(Confirm):
    DEFAULT_CSS = """
    StartConfirm { align: center middle; }
    #start-dialog { width: 76; max-width: 100%; height: auto; max-height: 100%; }
    #start-verdict { margin-top: 1; color: $error; }
    #start-fixes { margin-top: 1; }
    """
    PREFIX, QUESTION = "start", "[b]The run does not fit: start anyway?[/b]"
    YES, NO = "Start anyway (y)", "Back (n)"
    BINDINGS = [
        Binding("y", "answer(True)", "Start anyway"),
        Binding("n,escape", "answer(False)", "Back"),
        *[Binding(key, f"apply({i})", f"fix {i + 1}", show=False) for i, key in enumerate(FIX_KEYS)],
    ]

    def __init__(self, verdict: str, fixes: list[Fix], apply_fix: Callable[[int], None]) -> None:
        """`verdict`: "5.3 GiB of 4.0 GiB on RTX 3050: does not fit"; `apply_fix(i)` applies fix number i."""
        super().__init__()
        self.verdict, self.fixes, self.apply_fix = verdict, fixes, apply_fix

    def body(self) -> ComposeResult:
        yield Static(Text(self.verdict), id="start-verdict")
        if self.fixes:
            lines = Text("or apply a fix and go back to the form:", style="dim")
            for fix in self.fixes:
                lines.append("\n")
                lines.append(f" {fix.key.upper()} ", style="reverse bold")
                lines.append(f" {fix.what} → {fix.verdict}")
            yield Static(lines, id="start-fixes")
        else:
            yield Static(Text("no fix the estimate can vouch for: a smaller model or another target",
                              style="dim"), id="start-fixes")

    def action_apply(self, index: int) -> None:
        if index < len(self.fixes):
            self.apply_fix(index)
            self.dismiss(False)
