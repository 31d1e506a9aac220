"""Fitting text into small terminals without cutting it: drop whole parts, least needed first.

A dashboard line (the progress line, the header) is built from parts and a
panel from lines, each with a priority (0 = always shown). When the room is
short the least needed parts go, whole, instead of the terminal cutting the
text mid-word at its edge.
"""

from __future__ import annotations

from rich.text import Text


def fit_parts(parts: list[tuple[int, Text | str]], width: int, sep: str = " · ") -> Text:
    """Join `parts` (priority, text) in their order, leaving out the least needed until the line fits."""
    kept = [(p, Text(t) if isinstance(t, str) else t) for p, t in parts if str(t)]

    def length(items: list[tuple[int, Text]]) -> int:
        return sum(t.cell_len for _, t in items) + len(sep) * max(0, len(items) - 1)

    while len(kept) > 1 and length(kept) > width:
        worst = max(p for p, _ in kept)
        if worst == 0:
            break
        drop = max(i for i, (p, _) in enumerate(kept) if p == worst)  # the last of the least needed
        del kept[drop]
    out = Text()
    for i, (_, t) in enumerate(kept):
        if i:
            out.append(sep, style="dim")
        out.append_text(t)
    return out


def fit_lines(lines: list[tuple[int, Text | str]], height: int) -> list[Text]:
    """The lines that fit in `height` rows, least needed left out first, in their order."""
    kept = [(p, Text(t) if isinstance(t, str) else t) for p, t in lines]
    while len(kept) > max(1, height):
        worst = max(p for p, _ in kept)
        del kept[max(i for i, (p, _) in enumerate(kept) if p == worst)]
    return [t for _, t in kept]


def clip_words(text: Text, width: int) -> Text:
    """`text` on one row of `width` cells: whole if it fits, else cut after its last whole word, with "…"."""
    if text.cell_len <= width or width < 2:
        return text
    plain = text.plain
    cut = plain.rfind(" ", 0, width)  # the ellipsis takes a cell: keep what ends before width - 1
    cut = cut if cut > 0 else width - 1
    out = text[:cut]
    out.rstrip()
    out.append("…", style="dim")
    return out
