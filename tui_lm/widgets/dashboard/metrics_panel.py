"""The numbers beside the plots: losses, perplexities, learning rate, gradient norm."""

from __future__ import annotations

import math

from rich.table import Table
from textual.widgets import Static

from engine.events import EvalResult, StepMetrics
from tui_lm.widgets.common.format import maybe


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

    def _redraw(self) -> None:
        t, v = self.train, self.valid
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim")
        table.add_column(justify="right")
        table.add_row("train loss", maybe(t.loss if t else None, ".4f"))
        table.add_row("valid loss", maybe(v.loss if v else None, ".4f"))
        table.add_row("best valid", maybe(self.best_valid, ".4f"))
        table.add_row("perplexity", maybe(v.perplexity if v else None, ",.2f"))
        table.add_row("word ppl", (maybe(v.word_perplexity, ",.2f") + ("*" if v.partial else "")) if v else "—")
        table.add_row("bits/byte", maybe(v.bits_per_byte if v else None, ".3f"))
        table.add_row("learning rate", maybe(t.lr if t else None, ".2e"))
        table.add_row("grad norm", maybe(t.grad_norm if t else None, ".3f"))
        if self.test:
            table.add_row("test ppl", maybe(self.test.perplexity, ",.2f"))
            table.add_row("test word ppl", maybe(self.test.word_perplexity, ",.2f"))
        self.update(table, layout=False)  # fixed size: no relayout per update
