"""Number, size and duration formatting shared by the screens (pure functions).

A figure from a partial evaluation (only the split's first batches scored) is
marked the same way on every screen, by `marked` / `figure`; each screen that
can show the mark shows `PARTIAL_LEGEND` with it.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, like GPU memory is quoted."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def human_count(n: float) -> str:
    """19872 -> '19.9K', 124_000_000 -> '124.0M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    """Seconds -> '45s', '3m05s', '2h07m'; '—' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def maybe(value: float | None, spec: str = ".2f") -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return format(value, spec)


PARTIAL_MARK = "*"
PARTIAL_LEGEND = "* partial (first batches)"  # fits the dashboard's narrowest side panel (28 columns)


def marked(text: str, partial: bool) -> str:
    """A figure as shown, with PARTIAL_MARK when it comes from a partial evaluation ('—' stays unmarked)."""
    return f"{text}{PARTIAL_MARK}" if partial and text != "—" else text


def figure(value: float | None, spec: str = ",.2f", partial: bool = False) -> str:
    """A number (`maybe`), marked when it comes from a partial evaluation."""
    return marked(maybe(value, spec), partial)


def clock(timestamp: float | None) -> str:
    """A checkpoint time in local time, to the minute; '—' when unknown."""
    if not timestamp:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def bar(fraction: float, width: int, *, marker: float | None = None) -> str:
    """A text bar `█████░░░░` of `width` cells; `marker` puts a '│' at another fraction."""
    width = max(1, width)
    filled = max(0, min(width, round(fraction * width)))
    cells = ["█"] * filled + ["░"] * (width - filled)
    if marker is not None and math.isfinite(marker):
        cells[max(0, min(width - 1, round(marker * width) - 1))] = "│"
    return "".join(cells)


def display_path(path: str | os.PathLike[str], cwd: Path | None = None) -> str:
    """A path as the user should read it: relative to the working folder when under it, else absolute.

    New runs get relative paths from the trainer and resumed ones absolute
    paths from the picker; shown through here, both read the same.
    """
    if not str(path):
        return ""
    p = Path(path)
    cwd = cwd or Path.cwd()
    try:
        absolute = p if p.is_absolute() else cwd / p
        return str(Path(os.path.normpath(absolute)).relative_to(cwd))
    except ValueError:
        return str(Path(os.path.normpath(p.absolute())))
