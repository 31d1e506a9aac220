"""The numbers beside the plots: losses, perplexities, learning rate, gradient norm."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.events import EvalResult, StepMetrics, shown_fields
from tui_lm.widgets.common.fit import fit_lines
from tui_lm.widgets.common.format import maybe

FOOTNOTE = "* partial (first batches)"


class MetricsPanel(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train: StepMetrics | None = None
        self.valid: EvalResult | None = None
        self.best_valid = math.inf
        self.test: EvalResult | None = None

    def on_mount(self) -> None:
        self._redraw()

    def show_step(self, m: StepMetrics) -> None:
        self.train = m
        self._redraw()

    def restore(self, train: StepMetrics | None, valid: EvalResult | None, best_valid: float) -> None:
        """Figures of earlier sessions of a resumed run; anything newer already shown wins."""
        if train is not None and (self.train is None or self.train.step < train.step):
            self.train = train
        if valid is not None and (self.valid is None or self.valid.step < valid.step):
            self.valid = valid
        self.best_valid = min(self.best_valid, best_valid)
        self._redraw()

    def show_eval(self, e: EvalResult) -> None:
        if e.split == "test":
            self.test = e
        else:
            self.valid = e
            self.best_valid = min(self.best_valid, e.loss)
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()  # the rows that fit depend on the height

    def _redraw(self) -> None:
        t, v, test = self.train, self.valid, self.test
        star = "*" if v is not None and v.partial else ""
        # (priority: 0 = always shown, label, value). The step metrics are declared
        # on StepMetrics: the headline ones (priority 0) lead, the rest follow the evaluation.
        train = [(how.priority, how.label, maybe(getattr(t, name) if t else None, how.spec))
                 for name, how, optional in shown_fields(StepMetrics)
                 if how.label and (getattr(t, name) is not None if t else not optional)]
        rows: list[tuple[int, str, str]] = [row for row in train if row[0] == 0] + [
            (0, "valid loss", maybe(v.loss if v else None, ".4f")),
            (1, "best valid", maybe(self.best_valid, ".4f")),
            (0, "perplexity", maybe(v.perplexity if v else None, ",.2f")),
            (1, "word ppl", maybe(v.word_perplexity if v else None, ",.2f") + star),
            (4, "bits/byte", maybe(v.bits_per_byte if v else None, ".3f")),
        ] + [row for row in train if row[0] != 0]
        if test is not None:
            tstar = "*" if test.partial else ""
            rows += [(0, "test ppl", maybe(test.perplexity, ",.2f") + tstar),
                     (1, "test word ppl", maybe(test.word_perplexity, ",.2f") + tstar)]
        if star or (test is not None and test.partial):
            # What the star means: only the split's first batches were scored.
            rows.append((2, FOOTNOTE, ""))
        height = max(1, self.content_size.height) if self.is_mounted else len(rows)
        kept = fit_lines([(p, f"{i}") for i, (p, _, _) in enumerate(rows)], height)
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        footnote = None
        for index in kept:
            _, label, value = rows[int(index.plain)]
            if label == FOOTNOTE:
                footnote = Text(FOOTNOTE, style="dim italic")  # a line of its own, not a table row
            else:
                table.add_row(label, value)
        self.update(Group(table, footnote) if footnote else table, layout=False)  # fixed size: no relayout
