"""The numbers beside the plots: losses, perplexities, learning rate, gradient norm.

Every figure of a partial evaluation is marked (format.figure), and the
legend shows under the table once any evaluation this screen showed was
partial: the event log beside it marks them too.
"""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.events import EvalResult, StepMetrics, shown_fields
from tui_lm.widgets.common.fit import fit_lines
from tui_lm.widgets.common.format import PARTIAL_LEGEND, figure, maybe

FOOTNOTE = PARTIAL_LEGEND


class MetricsPanel(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train: StepMetrics | None = None
        self.valid: EvalResult | None = None
        self.best_valid = math.inf
        self.best_partial = False  # the best valid loss came from a partial evaluation
        self.test: EvalResult | None = None
        self.shown_partial = False  # an evaluation shown here (or in the event log) was partial: the legend shows

    def on_mount(self) -> None:
        self._redraw()

    def show_step(self, m: StepMetrics) -> None:
        self.train = m
        self._redraw()

    def restore(self, train: StepMetrics | None, valid: EvalResult | None, best_valid: float,
                best_partial: bool = False) -> None:
        """Figures of earlier sessions of a resumed run; anything newer already shown wins."""
        if train is not None and (self.train is None or self.train.step < train.step):
            self.train = train
        if valid is not None and (self.valid is None or self.valid.step < valid.step):
            self.valid = valid
            self.shown_partial |= valid.partial
        self._best(best_valid, best_partial)
        self._redraw()

    def _best(self, loss: float, partial: bool) -> None:
        if loss < self.best_valid:
            self.best_valid, self.best_partial = loss, partial

    def show_eval(self, e: EvalResult) -> None:
        if e.split == "test":
            self.test = e
        else:
            self.valid = e
            self._best(e.loss, e.partial)
        self.shown_partial |= e.partial
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()  # the rows that fit depend on the height

    def _redraw(self) -> None:
        t, v, test = self.train, self.valid, self.test
        part = v is not None and v.partial
        # (priority: 0 = always shown, label, value). The step metrics are declared
        # on StepMetrics: the headline ones (priority 0) lead, the rest follow the evaluation.
        train = [(how.priority, how.label, maybe(getattr(t, name) if t else None, how.spec))
                 for name, how, optional in shown_fields(StepMetrics)
                 if how.label and (getattr(t, name) is not None if t else not optional)]
        rows: list[tuple[int, str, str]] = [row for row in train if row[0] == 0] + [
            (0, "valid loss", figure(v.loss if v else None, ".4f", part)),
            (1, "best valid", figure(self.best_valid, ".4f", self.best_partial)),
            (0, "perplexity", figure(v.perplexity if v else None, ",.2f", part)),
            (1, "word ppl", figure(v.word_perplexity if v else None, ",.2f", part)),
            (4, "bits/byte", figure(v.bits_per_byte if v else None, ".3f", part)),
        ] + [row for row in train if row[0] != 0]
        if test is not None:
            rows += [(0, "test ppl", figure(test.perplexity, ",.2f", test.partial)),
                     (1, "test word ppl", figure(test.word_perplexity, ",.2f", test.partial))]
        if self.shown_partial or self.best_partial:
            rows.append((2, FOOTNOTE, ""))  # what the mark means
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
