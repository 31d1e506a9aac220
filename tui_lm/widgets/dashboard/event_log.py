"""The dashboard's log: evaluations, checkpoints, warnings and errors, one line each.

Long lines wrap; in a log one row high (a small terminal, where the
dashboard collapses it) each shows on one row, cut after a whole word, so
the row never shows the tail of a wrapped line.

Paths read the same in a new run (the trainer's relative paths) and a
resumed one (the picker's absolute paths): relative to the working folder
when under it (`display_path`).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from rich.text import Text
from textual.widgets import RichLog

from engine import events as ev
from tui_lm.widgets.common.fit import clip_words
from tui_lm.widgets.common.format import display_path as p
from tui_lm.widgets.common.format import figure


def describe(e: ev.Event) -> Text | None:
    """A log line for an event, or None for events the log does not show."""
    if isinstance(e, ev.Log):
        return Text(e.message, style="yellow" if e.level == "warning" else "")
    if isinstance(e, ev.RunStarted):
        what = f"resumed at step {e.start_step:,} from {Path(e.resumed_from).name}" if e.resumed_from else "started"
        return Text(f"run {what} in {p(e.run_dir)} on {e.device} ({e.precision}), "
                    f"{e.total_steps:,} steps of {e.tokens_per_step:,} tokens", style="green")
    if isinstance(e, ev.EvalResult):
        # Partial figures marked as everywhere (format.figure); the metrics panel beside the log shows the legend.
        loss, ppl, word = (figure(value, spec, e.partial) for value, spec in
                           ((e.loss, ".4f"), (e.perplexity, ",.2f"), (e.word_perplexity, ",.2f")))
        best = "  ★ best" if e.best else ""
        return Text(f"step {e.step:,}: {e.split} loss {loss} · ppl {ppl} · word ppl {word}{best}", style="cyan")
    if isinstance(e, ev.CheckpointSaved):
        if e.reason == "pause":
            return None  # the Paused line that follows names this checkpoint: one line, not two
        return Text(f"step {e.step:,}: checkpoint ({e.reason}) saved to {p(e.path)}")
    if isinstance(e, ev.Paused):
        return Text(f"step {e.step:,}: paused, checkpoint {p(e.checkpoint)}", style="bold yellow")
    if isinstance(e, ev.Resumed):
        return Text(f"step {e.step:,}: resumed", style="bold green")
    if isinstance(e, ev.Finished):
        if e.stopped and not e.run_dir:
            return Text("stopped before training began; nothing was saved", style="bold cyan")
        if e.stopped and e.step == 0:
            return Text(f"stopped before the first step; nothing to resume in {p(e.run_dir)}", style="bold cyan")
        if e.stopped:
            return Text(f"step {e.step:,}: stopped by the user; checkpoint kept in {p(e.run_dir)}", style="bold cyan")
        return Text(f"step {e.step:,}: finished; model saved to {p(e.model_dir)}", style="bold cyan")
    if isinstance(e, ev.Failed):
        kept = f"; last checkpoint {p(e.checkpoint)}" if e.checkpoint else ""
        return Text(f"step {e.step:,}: FAILED ({e.kind}): {e.message}{kept}", style="bold red")
    return None


class EventLog(RichLog):
    MAX_LINES = 2000

    def __init__(self, **kwargs) -> None:
        super().__init__(wrap=True, markup=False, max_lines=self.MAX_LINES, **kwargs)
        self.lines_shown: deque[Text] = deque(maxlen=self.MAX_LINES)  # to lay them out again on a resize
        self.one_row = False

    def add_event(self, e: ev.Event) -> None:
        line = describe(e)
        if line is not None:
            self.lines_shown.append(line)
            self._show(line)

    def _show(self, line: Text) -> None:
        self.write(clip_words(line, self.scrollable_content_region.width) if self.one_row else line)

    def on_resize(self, event) -> None:  # type: ignore[no-untyped-def]
        one_row = self.scrollable_content_region.height <= 1  # (the event's size includes the border)
        if one_row or self.one_row:  # wrapped lines and clipped ones are laid out for one width and height
            self.one_row = one_row
            self.clear()
            for line in self.lines_shown:
                self._show(line)
