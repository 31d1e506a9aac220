"""The latest text generated at an evaluation, prompt highlighted."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.events import SampleGenerated


class SampleView(Static):
    def on_mount(self) -> None:
        self.border_title = "latest sample"
        self.update(Text("no sample yet: one is generated at each evaluation", style="dim"))

    def show(self, s: SampleGenerated) -> None:
        self.border_title = f"sample at step {s.step:,}"
        text = Text(s.prompt, style="bold")
        # Samples may start with the prompt or not, depending on the engine's decoding.
        rest = s.text[len(s.prompt):] if s.text.startswith(s.prompt) else s.text
        text.append(rest)
        self.update(text)
