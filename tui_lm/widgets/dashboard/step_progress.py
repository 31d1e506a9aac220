"""Step / epoch progress bar with ETA and throughput, from the latest StepMetrics.

Two fixed lines drawn as text and updated without a layout pass: this widget
changes at every drain, and a relayout of the whole screen each time would
cost the training thread more GIL time than the bar is worth.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.events import StepMetrics
from tui_lm.widgets.common.fit import fit_parts
from tui_lm.widgets.common.format import bar, duration


class StepProgress(Static):
    DEFAULT_CSS = """
    StepProgress { height: 2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.start_step = 0
        self.steps_per_epoch = 0
        self.total_steps = 0
        self.step = 0
        self.parts: list[tuple[int, str]] = [(0, "waiting for the data and the model…")]

    def on_mount(self) -> None:
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def begin(self, start_step: int, total_steps: int, steps_per_epoch: int) -> None:
        self.start_step, self.step = start_step, start_step
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        epochs = -(-total_steps // steps_per_epoch) if steps_per_epoch else 0
        self.parts = [(0, f"step {start_step:,} / {total_steps:,}"), (1, f"{epochs} epoch{'s' if epochs != 1 else ''} planned")]
        self._redraw()

    def show(self, m: StepMetrics) -> None:
        self.step, self.total_steps = m.step, m.total_steps
        # ETA from this session's own pace (elapsed_s includes earlier sessions when resumed).
        eta = m.step_time_s * (m.total_steps - m.step) if m.step > self.start_step else float("nan")
        epochs = f"epoch {m.epoch + 1}"
        if self.steps_per_epoch:
            epochs += f" / {-(-m.total_steps // self.steps_per_epoch)}"
        # Priorities: on a narrow terminal the least needed parts go whole, never cut mid-word.
        self.parts = [(0, f"step {m.step:,} / {m.total_steps:,}"), (3, epochs),
                      (1, f"{100 * m.step / max(1, m.total_steps):.1f}%"), (0, f"ETA {duration(eta)}"),
                      (2, f"{m.tokens_per_s:,.0f} tokens/s"), (4, f"elapsed {duration(m.elapsed_s)}")]
        self._redraw()

    def show_paused(self, step: int) -> None:
        """Paused at `step` (a step the last log line may not have reached): no ETA while it waits."""
        self.step = step
        self.parts = [(0, f"step {step:,} / {self.total_steps:,}"),
                      (1, f"{100 * step / max(1, self.total_steps):.1f}%"), (0, "paused: r resumes")]
        self._redraw()

    def _redraw(self) -> None:
        width = max(10, self.content_size.width - 7)
        fraction = self.step / self.total_steps if self.total_steps else 0.0
        text = Text(bar(fraction, width), style="green" if fraction >= 1 else "#1e90ff")
        text.append(f" {100 * fraction:4.0f}%\n", style="bold")
        text.append_text(fit_parts(self.parts, max(10, self.content_size.width)))
        self.update(text, layout=False)
