"""One line at the top of the dashboard: run name, state, device, parameter count."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from tui_lm.widgets.common.format import human_count

STATES = ("starting", "running", "pausing", "paused", "stopping", "stopped", "finished", "failed")
_STATE_STYLE = {
    "starting": "bold yellow", "running": "bold green", "pausing": "bold yellow", "paused": "bold yellow",
    "stopping": "bold yellow", "stopped": "bold cyan", "finished": "bold cyan", "failed": "bold red",
}


class RunHeader(Static):
    state: reactive[str] = reactive("starting")
    run_name: reactive[str] = reactive("")
    device: reactive[str] = reactive("")
    num_params: reactive[int] = reactive(0)

    def watch_state(self, old: str, new: str) -> None:
        # The class lets app.tcss colour the border by state.
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")

    def render(self) -> Text:
        text = Text()
        text.append(f" {self.state.upper()} ", style=f"reverse {_STATE_STYLE.get(self.state, 'bold')}")
        text.append(f"  {self.run_name or 'new run'}", style="bold")
        if self.device:
            text.append(f"  ·  {self.device}", style="dim")
        if self.num_params:
            text.append(f"  ·  {human_count(self.num_params)} parameters", style="dim")
        return text
