"""Live memory: used against the estimate and the device's capacity (from MemoryMonitor).

On a machine without a GPU the monitor reports the training process's resident
memory against system RAM; the label says so, so nobody reads it as GPU memory.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.events import MemorySample
from tui_lm.widgets.common.format import bar, human_bytes


class MemoryGauge(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample: MemorySample | None = None
        self.estimate_bytes: int | None = None  # the setup screen's estimate for this config

    def on_mount(self) -> None:
        self.border_title = "memory"
        self._redraw()

    def show(self, sample: MemorySample) -> None:
        self.sample = sample
        self._redraw()

    def set_estimate(self, total_bytes: int | None) -> None:
        self.estimate_bytes = total_bytes
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        s, est = self.sample, self.estimate_bytes
        text = Text()
        if s is None:
            text.append("no memory sample yet", style="dim")
            if est:
                text.append(f"\nestimate {human_bytes(est)}", style="dim")
            self.update(text, layout=False)
            return
        label = s.label or ("GPU" if s.kind == "cuda" else "process memory (no GPU)")
        text.append(label + "\n", style="bold" if s.kind == "cuda" else "bold yellow")
        total = max(1, s.total_bytes)
        width = max(10, self.size.width - 4)
        marker = est / total if est else None
        style = "red" if s.used_bytes > 0.95 * total else "yellow" if s.used_bytes > 0.8 * total else "green"
        text.append(bar(s.used_bytes / total, width, marker=marker) + "\n", style=style)
        text.append(f"used {human_bytes(s.used_bytes)} of {human_bytes(s.total_bytes)}"
                    f" ({100 * s.used_bytes / total:.1f}%)\n")
        if est:
            text.append(f"estimate {human_bytes(est)} (│)\n", style="dim")
        if s.kind == "cuda":
            text.append(f"allocated {human_bytes(s.allocated_bytes)} · reserved {human_bytes(s.reserved_bytes)}\n",
                        style="dim")
        if s.peak_bytes:
            text.append(f"peak {human_bytes(s.peak_bytes)}", style="dim")
        if s.utilization >= 0:
            text.append(f" · utilisation {s.utilization:.0f}%", style="dim")
        self.update(text, layout=False)  # fixed size: no relayout per sample
