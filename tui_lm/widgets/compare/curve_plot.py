"""A line plot of whole curves (engine.runs.history arrays), downsampled to its own width.

The dashboard's LinePlot draws the points it is given; this one keeps every
curve at full resolution and hands LinePlot only each plot column's minimum and
maximum (engine.runs.reader.downsample), again on every resize, so a curve of a
million steps draws as fast as one of a hundred and no spike is lost.
"""

from __future__ import annotations

from engine.runs.history import Curve
from engine.runs.reader import downsample
from tui_lm.widgets.dashboard.line_plot import LABEL_WIDTH, LinePlot

# Distinct, readable on dark and light themes; runs beyond eight reuse them.
PALETTE = ("#1e90ff", "#ffaf00", "#00d787", "#ff5f87", "#af87ff", "#5fd7ff", "#d7d75f", "#ff8700")


class CurvePlot(LinePlot):
    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(title, id=id)
        self.curves: dict[str, Curve] = {}
        self.by_tokens = False  # x axis: tokens seen instead of steps

    def show_curve(self, key: str, label: str, color: str, curve: Curve) -> None:
        if key not in self.series:
            self.add_series(key, label, color)
        self.curves[key] = curve
        self.resample()

    def set_x_axis(self, by_tokens: bool) -> None:
        self.by_tokens = by_tokens
        self.x_label = "tokens" if by_tokens else "step"
        self.resample()

    def on_resize(self) -> None:
        self.resample()

    def resample(self) -> None:
        # One bucket per braille dot column: its minimum and maximum are all the column can show.
        buckets = max(8, 2 * (self.size.width - LABEL_WIDTH))
        for key, curve in self.curves.items():
            xs, ys = downsample(curve.tokens if self.by_tokens else curve.x, curve.y, buckets)
            self.set_points(key, xs, ys)
        self.flush(force=True)
