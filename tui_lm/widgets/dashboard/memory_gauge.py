"""Live memory: used against the estimate and the device's capacity (from MemoryMonitor).

On a machine without a GPU the monitor reports the training process's resident
memory against system RAM; the label says so, so nobody reads it as GPU memory.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.events import MemorySample
from tui_lm.widgets.common.fit import fit_lines, fit_parts
from tui_lm.widgets.common.format import bar, human_bytes


def of(part: float, whole: float) -> str:
    """'30.0 of 80.0 GiB': the unit once when both sizes share it (a line that fits a narrow panel)."""
    a, b = human_bytes(part), human_bytes(whole)
    unit = b.split()[-1]
    return f"{a.removesuffix(' ' + unit)} of {b}"


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
        height = max(1, self.content_size.height)
        if s is None:
            lines = [(0, Text("no memory sample yet", style="dim"))]
            if est:
                lines.append((1, Text(f"estimate {human_bytes(est)}", style="dim")))
            self.update(Text("\n").join(fit_lines(lines, height)), layout=False)
            return
        label = s.label or ("GPU" if s.kind == "cuda" else "process memory (no GPU)")
        total = max(1, s.total_bytes)
        width = max(10, self.content_size.width)
        marker = est / total if est else None
        style = "red" if s.used_bytes > 0.95 * total else "yellow" if s.used_bytes > 0.8 * total else "green"
        share = f"{100 * s.used_bytes / total:.1f}%"
        # Details go first when the panel is short (a small terminal): label, bar and use stay.
        amount = f"{of(s.used_bytes, s.total_bytes)} ({share})"
        if height <= 3:  # one line for use and estimate; the estimate goes if it does not fit
            used = fit_parts([(0, amount), (1, f"est {human_bytes(est)}" if est else "")], width)
        else:
            used = f"used {amount}"
        details = []
        if s.peak_bytes:
            # On a GPU the allocator's peak is reset when training starts (after the compile
            # warm-up); the process's peak RSS cannot be reset and covers its whole life.
            details.append(f"{'training peak' if s.kind == 'cuda' else 'peak'} {human_bytes(s.peak_bytes)}")
        if s.utilization >= 0:
            details.append(f"utilisation {s.utilization:.0f}%")
        lines: list[tuple[int, Text | str]] = [
            (0, Text(label, style="bold" if s.kind == "cuda" else "bold yellow")),
            (0, Text(bar(s.used_bytes / total, width, marker=marker), style=style)),
            (0, used),
        ]
        if est and height > 3:
            lines.append((1, Text(f"estimate {human_bytes(est)} (│)", style="dim")))
        if s.kind == "cuda":
            lines.append((3, Text(f"allocated {human_bytes(s.allocated_bytes)} · reserved "
                                  f"{human_bytes(s.reserved_bytes)}", style="dim")))
        if details:
            lines.append((2, Text(" · ".join(details), style="dim")))
        self.update(Text("\n").join(fit_lines(lines, height)), layout=False)  # fixed size: no relayout
