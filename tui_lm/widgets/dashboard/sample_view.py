"""The latest text generated at an evaluation, prompt highlighted, shown whole.

Generated text often holds newlines (WikiText's headings and paragraphs);
each is shown as a dim `⏎` in the flow of the text, so a short box shows
every line of the sample instead of the first few, and the box scrolls when
the sample is longer than the room it has.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.events import SampleGenerated

NEWLINE = "⏎ "


def sample_text(prompt: str, generated: str) -> Text:
    """The prompt in bold, then the continuation, newlines as a visible mark."""
    # Samples may start with the prompt or not, depending on the engine's decoding.
    rest = generated[len(prompt):] if generated.startswith(prompt) else generated
    text = Text(prompt, style="bold")
    for i, line in enumerate(rest.split("\n")):
        if i:
            text.append(NEWLINE, style="dim")
        text.append(line)
    return text


class SampleView(VerticalScroll, can_focus=False):  # the keys stay the dashboard's
    DEFAULT_CSS = """
    SampleView > Static { width: 1fr; height: auto; }
    """

    step: int | None = None  # the step of the sample shown

    def compose(self) -> ComposeResult:
        yield Static(Text("no sample yet: one is generated at each evaluation", style="dim"))

    def on_mount(self) -> None:
        self.border_title = "latest sample"

    @property
    def content(self) -> Text:
        return self.query_one(Static).content  # type: ignore[return-value]

    def show(self, s: SampleGenerated) -> None:
        self.step = s.step
        self.border_title = f"sample at step {s.step:,}"
        self.query_one(Static).update(sample_text(s.prompt, s.text))

    def restore(self, s: SampleGenerated) -> None:
        """The latest sample of a resumed run's earlier sessions, unless this session's is shown already."""
        if self.step is None or self.step < s.step:
            self.show(s)
