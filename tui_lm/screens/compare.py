"""Compare several runs: train and validation curves overlaid, final metrics and differing settings side by side.

The curves are aligned by optimizer step or, with `t`, by tokens seen (runs
with different batch sizes or sequence lengths line up by data consumed).
Each run's history is read as in the browse view: at once from the tail of a
large metrics.jsonl, then exactly by a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.runs.history import RunHistory
from engine.runs.reader import MetricsReader, backfill, open_history
from engine.runs.summary import METRIC_ROWS, RunSummary, differing_settings, summarize
from tui_lm.widgets.common.format import PARTIAL_LEGEND, marked
from tui_lm.widgets.compare.curve_plot import PALETTE, CurvePlot


def show_value(value: Any) -> str:
    return "—" if value is None else str(value)


class CompareScreen(Screen):
    DEFAULT_CSS = """
    CompareScreen #compare-header { height: auto; padding: 0 1; }
    CompareScreen #compare-plots { height: 2fr; }
    CompareScreen CurvePlot { border: round $primary; width: 1fr; }
    CompareScreen DataTable { height: 1fr; border: round $primary; }
    """
    HELP_TITLE = "compare runs"
    BINDINGS = [
        Binding("t", "toggle_x", "Steps / tokens", tooltip="line the curves up by step or by tokens seen"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = [Path(p) for p in run_dirs]
        self.histories: list[RunHistory | None] = [None] * len(self.run_dirs)
        self.summaries: list[RunSummary | None] = [None] * len(self.run_dirs)
        self.by_tokens = False
        self.any_partial = False  # a final metric is marked partial: the header shows the legend
        self.loaded = False  # every run's summary is shown (tests wait for it)
        self.complete = False  # every run's exact history is plotted

    def compose(self) -> ComposeResult:
        yield Static(f"comparing {len(self.run_dirs)} runs…", id="compare-header")
        with Horizontal(id="compare-plots"):
            yield CurvePlot("train loss", id="compare-train")
            yield CurvePlot("valid loss", id="compare-valid")
        yield DataTable(id="compare-metrics", zebra_stripes=True, cursor_type="row")
        yield DataTable(id="compare-settings", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        names = [p.name for p in self.run_dirs]
        self.query_one("#compare-metrics", DataTable).add_columns("final", *names)
        self.query_one("#compare-settings", DataTable).add_columns("setting that differs", *names)
        self.query_one("#compare-metrics").border_title = "final metrics"
        self.query_one("#compare-settings").border_title = "settings that differ"
        self._load()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_x(self) -> None:
        self.by_tokens = not self.by_tokens
        for plot in self.query(CurvePlot):
            plot.set_x_axis(self.by_tokens)
        self._header()

    # ------------------------------------------------------------------ loading (worker thread)

    @work(thread=True, group="compare", exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        import numpy  # noqa: F401  (for downsampling; importing it takes a while: not on the UI thread)

        opened = []
        for i, run_dir in enumerate(self.run_dirs):
            history = open_history(MetricsReader.of_run(run_dir))
            opened.append(history)
            self.app.call_from_thread(self._show_run, i, history, summarize(run_dir, history))
        self.app.call_from_thread(self._show_tables)
        self.app.call_from_thread(self.call_after_refresh, self._backfill, opened)

    @work(thread=True, group="compare-backfill", exclusive=True, exit_on_error=False)
    def _backfill(self, opened: list[RunHistory]) -> None:
        """After the first frame: the exact histories of large files, one run at a time."""
        for i, history in enumerate(opened):
            if history.pending is not None:
                self.app.call_from_thread(self._complete_run, i, backfill(history.path, *history.pending))
        self.app.call_from_thread(self._done)

    # ------------------------------------------------------------------ showing (UI thread)

    def _show_run(self, i: int, history: RunHistory, summary: RunSummary) -> None:
        self.histories[i], self.summaries[i] = history, summary
        self._plot(i)

    def _plot(self, i: int) -> None:
        history, name, color = self.histories[i], self.run_dirs[i].name, PALETTE[i % len(PALETTE)]
        assert history is not None
        self.query_one("#compare-train", CurvePlot).show_curve(f"run{i}", name, color, history.train_points())
        self.query_one("#compare-valid", CurvePlot).show_curve(f"run{i}", name, color, history.valid)

    def _complete_run(self, i: int, early: RunHistory) -> None:
        history = self.histories[i]
        if history is not None:
            history.merge_earlier(early)
            self._plot(i)

    def _done(self) -> None:
        self.complete = True
        self._header()

    def _show_tables(self) -> None:
        runs = [s for s in self.summaries if s is not None]
        metrics = self.query_one("#compare-metrics", DataTable)
        for label, attribute, fmt, partial in METRIC_ROWS:
            metrics.add_row(label, *(marked(s.formatted(attribute, fmt), s.partial(partial)) for s in runs))
        self.any_partial = any(s.partial(partial) for s in runs for *_, partial in METRIC_ROWS)
        settings = self.query_one("#compare-settings", DataTable)
        rows = differing_settings(runs)
        for key, values in rows:
            settings.add_row(key, *(show_value(v) for v in values))
        if not rows:
            settings.add_row(Text("(every setting is the same)", style="dim"), *("" for _ in runs))
        self._header()
        self.loaded = True

    def _header(self) -> None:
        text = Text()
        for i, s in enumerate(self.summaries):
            if s is not None:
                text.append("━ ", style=PALETTE[i % len(PALETTE)]).append(f"{s.name} ({s.status})  ")
        text.append(f"\naligned by {'tokens seen' if self.by_tokens else 'step'} (t switches)", style="dim")
        if not self.complete:
            text.append(" · reading the full histories…", style="dim")
        if self.any_partial:
            text.append(f"  ·  {PARTIAL_LEGEND}", style="dim")
        self.query_one("#compare-header", Static).update(text)
