"""One line at the top of the dashboard: run name, state, model (its preset, or "custom (from tiny)"), device,
parameter count.

While an evaluation runs, `activity` replaces the state badge with
EVALUATING and says which split, how far and how long to go: evaluations of a
large split take minutes, and the step counter stands still meanwhile.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from tui_lm.widgets.common.fit import fit_parts
from tui_lm.widgets.common.format import human_count

STATES = ("starting", "running", "pausing", "paused", "stopping", "stopped", "finished", "failed")
_STATE_STYLE = {
    "starting": "bold yellow", "running": "bold green", "pausing": "bold yellow", "paused": "bold yellow",
    "stopping": "bold yellow", "stopped": "bold cyan", "finished": "bold cyan", "failed": "bold red",
}


class RunHeader(Static):
    state: reactive[str] = reactive("starting")
    run_name: reactive[str] = reactive("")
    model: reactive[str] = reactive("")  # engine.config.model_label: "tiny", "custom (from tiny)"
    device: reactive[str] = reactive("")
    num_params: reactive[int] = reactive(0)
    activity: reactive[str] = reactive("")  # "valid 120/960 · ETA 1m05s" while evaluating

    def watch_state(self, old: str, new: str) -> None:
        # The class lets app.tcss colour the border by state.
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")

    def render(self) -> Text:
        text = Text()
        parts: list[tuple[int, Text]] = []
        if self.activity and self.state in ("running", "pausing", "stopping"):
            text.append(" EVALUATING ", style="reverse bold magenta")
            parts.append((0, Text(self.activity, style="bold magenta")))
        else:
            text.append(f" {self.state.upper()} ", style=f"reverse {_STATE_STYLE.get(self.state, 'bold')}")
        text.append("  ")
        parts.append((0, Text(self.run_name or "new run", style="bold")))
        if self.model:
            parts.append((1, Text(self.model, style="dim")))
        if self.device:
            parts.append((2, Text(self.device, style="dim")))
        if self.num_params:
            parts.append((1, Text(f"{human_count(self.num_params)} parameters", style="dim")))
        # A narrow terminal drops the device, then the size and the model: whole, never cut mid-word.
        text.append_text(fit_parts(parts, self.size.width - text.cell_len, sep="  ·  "))
        return text
