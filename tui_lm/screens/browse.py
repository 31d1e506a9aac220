"""Browse one run read-only: its whole history, whatever state it is in (finished, stopped, crashed, running).

Curves (train and validation loss, learning rate), every evaluation, every
sample, the checkpoints on disk, the final test numbers and the resolved
config, all from the run folder's files. Nothing is written. A large
metrics.jsonl shows at once from its tail and a sampled overview; the exact
history replaces it when the worker has read the beginning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from engine.runs.history import RunHistory
from engine.runs.layout import RUN_CONFIG
from engine.runs.reader import MetricsReader, backfill, open_history
from engine.runs.summary import METRIC_ROWS, RunSummary, summarize
from tui_lm.widgets.common.format import PARTIAL_LEGEND, clock, figure, marked
from tui_lm.widgets.compare.curve_plot import PALETTE, CurvePlot

# The evaluations tab's figures: (column, EvalResult field, format), each marked when the evaluation was partial.
EVAL_FIGURES = (("loss", "loss", ".4f"), ("ppl", "perplexity", ",.2f"), ("word ppl", "word_perplexity", ",.2f"),
                ("bits/byte", "bits_per_byte", ".3f"))
HEADER_METRICS = ("best valid loss", "test ppl", "test word ppl")  # of METRIC_ROWS, shown in the header
STATUS_STYLE = {"running": "bold green", "paused": "bold yellow", "stopped": "bold cyan", "finished": "bold cyan",
                "crashed": "bold red", "gone": "bold red"}


def load_checkpoints(run_dir: Path) -> list[dict[str, Any]]:
    """Sidecars of the checkpoints on disk, oldest first (a damaged one is listed with its problem)."""
    from engine.errors import UserError
    from engine.runs.checkpoints import list_checkpoints, read_sidecar

    rows = []
    for path in list_checkpoints(run_dir):
        try:
            rows.append({"file": path.name, **read_sidecar(path)})
        except UserError as e:
            rows.append({"file": path.name, "problem": str(e)})
    return rows


def header_text(s: RunSummary, history: RunHistory) -> Text:
    text = Text()
    text.append(f" {s.status.upper()} ", style=f"reverse {STATUS_STYLE.get(s.status, 'bold')}")
    text.append(f"  {s.name}", style="bold")
    total = f" / {s.total_steps:,}" if s.total_steps else ""
    text.append(f"  ·  model {s.model_detail}  ·  step {s.step:,}{total}  ·  {s.tokens_seen:,} tokens")
    for label, attribute, fmt, partial in METRIC_ROWS:
        if label in HEADER_METRICS and getattr(s, attribute) is not None:
            text.append(f"  ·  {label} {marked(s.formatted(attribute, fmt), s.partial(partial))}")
    if s.problem:
        text.append(f"\n{s.problem}", style="red")
    text.append(f"\n{history.records:,} records" + ("" if history.complete else " · reading the full history…"),
                style="dim")
    if any(r.get("partial") is True for r in history.evals) or s.test_partial:
        text.append(f"  ·  {PARTIAL_LEGEND}", style="dim")  # the header's figures and the evaluations tab
    return text


class BrowseScreen(Screen):
    DEFAULT_CSS = """
    BrowseScreen #browse-header { height: auto; padding: 0 1; }
    BrowseScreen #browse-tabs { height: 1fr; }
    BrowseScreen TabPane { height: 1fr; padding: 0; }
    BrowseScreen #browse-loss { height: 2fr; border: round $primary; }
    BrowseScreen #browse-lr { height: 1fr; border: round $primary; }
    BrowseScreen DataTable { height: 1fr; }
    """
    HELP_TITLE = "browse a run"
    BINDINGS = [
        Binding("t", "toggle_x", "Steps / tokens", tooltip="the curves by step or by tokens seen"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.history: RunHistory | None = None
        self.summary: RunSummary | None = None
        self.loaded = False  # tests wait for it
        self.complete = False  # the exact history is shown

    def compose(self) -> ComposeResult:
        yield Static("reading the run…", id="browse-header")
        with TabbedContent(id="browse-tabs"):
            with TabPane("Curves", id="tab-curves"), Vertical():
                yield CurvePlot("loss", id="browse-loss")
                yield CurvePlot("learning rate", id="browse-lr")
            with TabPane("Evaluations", id="tab-evals"):
                yield DataTable(id="browse-evals", zebra_stripes=True, cursor_type="row")
            with TabPane("Samples", id="tab-samples"), VerticalScroll():
                yield Static("", id="browse-samples")
            with TabPane("Checkpoints", id="tab-checkpoints"):
                yield DataTable(id="browse-checkpoints", zebra_stripes=True, cursor_type="row")
            with TabPane("Config", id="tab-config"), VerticalScroll():
                yield Static("", id="browse-config")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#browse-evals", DataTable).add_columns(
            "step", "split", *(label for label, _, _ in EVAL_FIGURES), "tokens scored", "")
        self.query_one("#browse-checkpoints", DataTable).add_columns(
            "file", "step", "reason", "best", "saved", "size", "ranks")
        self._load()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_x(self) -> None:
        for plot in self.query(CurvePlot):
            plot.set_x_axis(not plot.by_tokens)

    # ------------------------------------------------------------------ loading (worker thread)

    @work(thread=True, group="browse", exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        import numpy  # noqa: F401  (for downsampling; importing it takes a while: not on the UI thread)

        history = open_history(MetricsReader.of_run(self.run_dir))
        summary = summarize(self.run_dir, history)
        checkpoints = load_checkpoints(self.run_dir)
        try:
            config = (self.run_dir / RUN_CONFIG).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            config = f"{RUN_CONFIG} cannot be read: {e}"
        self.app.call_from_thread(self._show, history, summary, checkpoints, config)

    @work(thread=True, group="browse-backfill", exclusive=True, exit_on_error=False)
    def _backfill(self, path: Path, start: int, end: int) -> None:
        self.app.call_from_thread(self._complete, backfill(path, start, end))

    # ------------------------------------------------------------------ showing (UI thread)

    def _show(self, history: RunHistory, summary: RunSummary, checkpoints: list[dict[str, Any]], config: str) -> None:
        self.history, self.summary = history, summary
        self._plot()
        evals = self.query_one("#browse-evals", DataTable)
        for r in history.evals:
            part = r.get("partial") is True
            evals.add_row(f"{r.get('step', 0):,}", r.get("split", ""),
                          *(figure(r.get(key), spec, part) for _, key, spec in EVAL_FIGURES),
                          f"{r.get('tokens', 0):,}", "★ best" if r.get("best") else "")
        samples = Text()
        for r in history.samples:
            samples.append(f"step {r.get('step', 0):,}", style="bold")
            samples.append(f"  {r.get('prompt', '')!r}\n", style="dim")
            samples.append(f"{r.get('text', '')}\n\n")
        self.query_one("#browse-samples", Static).update(samples if history.samples else Text("no samples", "dim"))
        table = self.query_one("#browse-checkpoints", DataTable)
        for c in checkpoints:
            if "problem" in c:
                table.add_row(c["file"], "", Text(c["problem"], style="red"), "", "", "", "")
                continue
            table.add_row(c["file"], f"{c.get('step', 0):,}", c.get("reason", ""), "★" if c.get("best") else "",
                          clock(c.get("time")), f"{c.get('bytes', 0) / 2**20:,.1f} MiB", str(c.get("world_size", "")))
        self.query_one("#browse-config", Static).update(Syntax(config, "toml", theme="ansi_dark"))
        self._header()
        self.loaded = True
        if history.pending is not None:
            # After the first frame: the backfill holds the GIL much of the time it runs.
            self.call_after_refresh(self._backfill, history.path, *history.pending)

    def _complete(self, early: RunHistory) -> None:
        if self.history is None:
            return
        self.history.merge_earlier(early)
        self._plot()
        self._header()
        self.complete = True

    def _plot(self) -> None:
        history = self.history
        assert history is not None
        loss = self.query_one("#browse-loss", CurvePlot)
        loss.show_curve("train", "train", PALETTE[0], history.train_points())
        loss.show_curve("valid", "valid", PALETTE[1], history.valid)
        self.query_one("#browse-lr", CurvePlot).show_curve("lr", "lr", PALETTE[2], history.lr)
        self.complete = history.complete

    def _header(self) -> None:
        if self.summary is not None and self.history is not None:
            self.query_one("#browse-header", Static).update(header_text(self.summary, self.history))
