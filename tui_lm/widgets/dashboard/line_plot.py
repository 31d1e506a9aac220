"""A small braille line plot: several series, y labels, x range, bounded redraw rate.

Each terminal cell holds a 2x4 grid of braille dots, so a 60x12 cell plot has
120x48 points of resolution. A series is either a braille line or a row of
marker glyphs (`marker="◆"`), so two series read apart without colour. The
view can smooth line series with an exponential moving average (`smoothing`)
and put the y axis on a log scale (`log_y`); both only change the drawing.

Points are appended cheaply at any rate; the widget only marks itself dirty,
and `flush()` (called by the dashboard's drain tick, so every widget repaints
in the same frame) redraws at most every `REDRAW_S` seconds: a fast training
loop cannot make the UI spend its time drawing.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

from rich.text import Text
from textual.widget import Widget

REDRAW_S = 1.0
LABEL_WIDTH = 9
# Bit of each dot in a braille character, indexed [row][column] within the cell.
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


@dataclass
class Series:
    label: str
    color: str
    marker: str = ""  # a glyph drawn at each point instead of a braille line
    dotted: bool = False  # a braille line of every other dot (a reference curve, e.g. the LR schedule)
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    @property
    def legend(self) -> str:
        return self.marker or ("┄" if self.dotted else "━")


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, TensorBoard's way: debiased, so the first points are not pulled to 0."""
    out, acc = [], 0.0
    for i, v in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** i))
    return out


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-2 or abs(value) >= 1e5:
        return f"{value:.1e}"
    return f"{value:.4g}"


def axis_labels(values: list[float], width: int = LABEL_WIDTH - 1, *, log: bool = False) -> list[str]:
    """The tick labels of one axis, all with the same number of decimals: 2.00 / 2.15 / 2.30, not 2.3 / 2.15 / 2.

    The fewest decimals that put each label within a twentieth of the gap
    between ticks (of the value itself on a log axis), so the ticks read
    apart; fixed point, or scientific for very small or large values or when
    fixed point would not fit in `width` characters. Zero reads "0" in
    scientific notation.
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [fmt(v) for v in values]
    gaps = [abs(a - b) for a, b in itertools.pairwise(finite) if a != b]
    gap = min(gaps) if gaps else (max(abs(v) for v in finite) or 1.0)
    tolerance = [0.05 * (abs(v) if log else gap) for v in values]

    def attempt(scientific: bool) -> tuple[list[str] | None, bool]:
        """(the most precise labels that fit, whether they are precise enough)."""
        fitting = None
        for decimals in range(7):
            spec = f".{decimals}{'e' if scientific else 'f'}"
            labels = ["0" if scientific and v == 0 else format(v, spec) for v in values]
            if any(len(label) > width for label in labels):
                break
            fitting = labels
            close = all(abs(float(label) - v) <= t for label, v, t in zip(labels, values, tolerance)
                        if math.isfinite(v))
            if close and len(set(labels)) == len(set(values)):
                return labels, True
        return fitting, False

    biggest = max(abs(v) for v in finite)
    labels, good = attempt(scientific=0 < biggest < 1e-2 or biggest >= 1e5)
    if not good:
        labels = attempt(scientific=True)[0] or labels
    return labels or [fmt(v) for v in values]


class LinePlot(Widget):
    """`add_point("train", step, loss)`; series are drawn in the order they were declared."""

    DEFAULT_CSS = """
    LinePlot { height: 1fr; min-height: 6; }
    """

    def __init__(self, title: str, *, x_label: str = "step", name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.title = title
        self.x_label = x_label
        self.series: dict[str, Series] = {}
        self.x_max: float | None = None  # fixed right edge (e.g. total steps) so progress shows
        self.smoothing = 0.0  # EMA weight for line series (0 = raw points)
        self.log_y = False
        self._dirty = False
        self._drawn_at = 0.0

    def flush(self, force: bool = False) -> None:
        """Repaint if points arrived and the last repaint is old enough (or `force`)."""
        now = time.monotonic()
        if self._dirty and (force or now - self._drawn_at >= REDRAW_S):
            self._dirty = False
            self._drawn_at = now
            self.refresh()

    # ------------------------------------------------------------------ data

    def add_series(self, key: str, label: str, color: str, *, marker: str = "", dotted: bool = False) -> None:
        self.series[key] = Series(label, color, marker, dotted)

    def set_view(self, *, smoothing: float | None = None, log_y: bool | None = None) -> None:
        """Change how the points are drawn (not the points); repaints at once."""
        if smoothing is not None:
            self.smoothing = smoothing
        if log_y is not None:
            self.log_y = log_y
        self._dirty = True
        self.flush(force=True)

    def add_point(self, key: str, x: float, y: float) -> None:
        if not math.isfinite(y):
            return
        s = self.series[key]
        s.xs.append(x)
        s.ys.append(y)
        self._dirty = True

    def set_points(self, key: str, xs: list[float], ys: list[float]) -> None:
        s = self.series[key]
        s.xs, s.ys = list(xs), list(ys)
        self._dirty = True

    def clear(self) -> None:
        for s in self.series.values():
            s.xs.clear()
            s.ys.clear()
        self._dirty = True

    def point_count(self, key: str) -> int:
        return len(self.series[key].xs)

    # ------------------------------------------------------------------ drawing

    def _drawn(self) -> list[Series]:
        """The series as drawn: smoothed lines, log10 values; points a log axis cannot show are left out."""
        out = []
        for s in self.series.values():
            xs, ys = s.xs, s.ys
            if self.smoothing and not s.marker and not s.dotted:
                ys = ema(ys, self.smoothing)
            if self.log_y:
                kept = [(x, math.log10(y)) for x, y in zip(xs, ys) if y > 0]
                xs, ys = [x for x, _ in kept], [y for _, y in kept]
            if xs:
                out.append(Series(s.label, s.color, s.marker, s.dotted, xs, ys))
        return out

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        header = Text(self.title, style="bold")
        view = [("EMA", self.smoothing), ("log", self.log_y)]
        tags = [name for name, on in view if on]
        if tags:
            header.append(f" ({', '.join(tags)})", style="bold")
        for s in self.series.values():
            header.append(f"  {s.legend} ", style=s.color).append(s.label, style="dim")
        visible = self._drawn()
        plot_w, plot_h = max(1, width - LABEL_WIDTH), max(1, height - 2)
        if not visible:
            lines = [header] + [Text("")] * max(0, plot_h // 2) + [Text("  waiting for data…", style="dim")]
            return Text("\n").join(lines)
        xs = [x for s in visible for x in s.xs]
        ys = [y for s in visible for y in s.ys]
        x0, x1 = min(xs), max(max(xs), self.x_max or -math.inf)
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-12:
            pad = 0.5 if self.log_y else 0.5 * (abs(y0) or 1)
            y0, y1 = y0 - pad, y1 + pad
        cells = self._rasterize(visible, plot_w, plot_h, (x0, x1), (y0, y1))
        # Three ticks (top, middle, bottom), labelled alike; a log axis's middle is the geometric mean.
        ticks = [y1, (y0 + y1) / 2, y0]
        top, middle, bottom = axis_labels([10 ** v for v in ticks] if self.log_y else ticks, log=self.log_y)
        lines = [header]
        for r in range(plot_h):
            label = top if r == 0 else bottom if r == plot_h - 1 else middle if r == plot_h // 2 else ""
            line = Text(f"{label:>{LABEL_WIDTH - 1}}┤", style="dim")
            for c in range(plot_w):
                bits, color = cells.get((r, c), (0, ""))
                if isinstance(bits, str):
                    line.append(bits, style=f"bold {color}")  # a marker glyph
                else:
                    line.append(chr(0x2800 + bits) if bits else " ", style=color)
            lines.append(line)
        left, right = axis_labels([x0, x1], width=12)
        right = f"{right} {self.x_label}"
        axis = " " * LABEL_WIDTH + left + " " * max(1, plot_w - len(left) - len(right)) + right
        lines.append(Text(axis, style="dim"))
        return Text("\n").join(lines)

    @staticmethod
    def _rasterize(series: list[Series], w: int, h: int, xr: tuple[float, float],
                   yr: tuple[float, float]) -> dict[tuple[int, int], tuple[int | str, str]]:
        """Every series as {(cell_row, cell_col): (braille bits or a marker glyph, color)}; markers on top."""
        dots_w, dots_h = w * 2, h * 4
        (x0, x1), (y0, y1) = xr, yr
        sx = (dots_w - 1) / (x1 - x0) if x1 > x0 else 0.0
        sy = (dots_h - 1) / (y1 - y0)
        cells: dict[tuple[int, int], tuple[int, str]] = {}

        def dot(px: int, py: int, color: str) -> None:
            key = (py // 4, px // 2)
            old = cells.get(key, (0, ""))[0]
            if isinstance(old, str):
                return  # a marker stays visible over any line
            cells[key] = (old | _DOTS[py % 4][px % 2], color)

        for s in sorted(series, key=lambda s: bool(s.marker)):  # lines first, markers over them
            if s.marker:
                for x, y in zip(s.xs, s.ys):
                    cells[(round((y1 - y) * sy) // 4, round((x - x0) * sx) // 2)] = (s.marker, s.color)
                continue
            # More points than dot columns add nothing visible; keep every k-th.
            stride = max(1, len(s.xs) // (dots_w * 2))
            pts = [(round((x - x0) * sx), round((y1 - y) * sy)) for x, y in zip(s.xs[::stride], s.ys[::stride])]
            if stride > 1:
                pts.append((round((s.xs[-1] - x0) * sx), round((y1 - s.ys[-1]) * sy)))
            prev = pts[0]
            dot(*prev, s.color)
            for px, py in pts[1:]:
                n = max(abs(px - prev[0]), abs(py - prev[1]), 1)
                for i in range(1, n + 1):
                    qx, qy = prev[0] + round((px - prev[0]) * i / n), prev[1] + round((py - prev[1]) * i / n)
                    if not s.dotted or qx % 3 == 0:  # dotted: one dot column in three
                        dot(qx, qy, s.color)
                prev = (px, py)
        return cells
