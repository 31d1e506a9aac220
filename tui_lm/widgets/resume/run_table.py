"""The resume picker's table: one row per run folder, problems shown in place.

Rows come from `engine.runs.listing.RunInfo` (read from each run's small JSON/TOML
files only). Enter posts `RunTable.Chosen`; the screen decides whether the run
can be started.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from tui_lm.widgets.common.format import clock, figure

_STATUS_STYLE = {"paused": "yellow", "stopped": "cyan", "finished": "green", "crashed": "red",
                 "running": "bold green"}
COLUMNS = ("run", "model", "dataset", "step / total", "val ppl", "word ppl", "last checkpoint", "state", "note")


def _short(text: str, width: int) -> str:
    """Keep the end of long dataset paths: the folder name is the informative part."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def note_for(info: Any) -> Text:
    if info.problem:
        return Text(info.problem, style="red")  # the reason it cannot be resumed
    if info.status == "finished":
        return Text("nothing to resume", style="dim")
    if info.status == "running":
        return Text("running elsewhere?", style="yellow")
    return Text("resumable", style="green")


class RunTable(DataTable):
    class Chosen(Message):
        def __init__(self, info: Any) -> None:
            super().__init__()
            self.info = info

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.runs: list[Any] = []
        self._on_ready: Callable[[], None] | None = None

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show_runs(self, runs: list[Any], cursor: int = 0, on_ready: Callable[[], None] | None = None) -> None:
        """Replace the rows; `on_ready` runs once the table has measured them.

        DataTable sizes its columns to new rows in its handler of an Idle
        event; `on_idle` below waits for that, repaints, and runs the callback
        after the repaint.
        """
        self.runs = list(runs)
        self.clear()
        for i, r in enumerate(self.runs):
            total = f"{r.total_steps:,}" if r.total_steps else "?"
            self.add_row(
                Text(r.name, style="bold" if not r.problem else "dim"),
                r.model,  # the detail line below the table says what differs from the preset
                _short(str(r.dataset), 20),
                f"{r.step:,} / {total}",
                figure(r.last_val_ppl, ",.2f", r.last_val_partial),
                figure(r.last_word_ppl, ",.2f", r.last_val_partial),
                clock(r.last_checkpoint_time),
                Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
                note_for(r),
                key=str(i),
            )
        if self.runs:
            self.move_cursor(row=max(0, min(cursor, len(self.runs) - 1)), animate=False)
        self._on_ready = on_ready
        self.check_idle()

    def on_idle(self) -> None:
        if self._on_ready is None:
            return
        # DataTable measures new rows in its own idle handler, after this one;
        # until a pass finds nothing left to measure the columns have their
        # headers' widths. Measuring widens the columns without invalidating
        # the rows rendered before it (its render caches are keyed by an update
        # count that measuring does not bump), so the picker could keep names
        # cut to "fin" until the cursor moved: drop those renders, repaint.
        if self._require_update_dimensions or self._updated_cells:
            self.call_after_refresh(self.check_idle)
            return
        callback, self._on_ready = self._on_ready, None
        self._clear_caches()
        self.refresh()
        self.call_after_refresh(callback)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.runs[int(event.row_key.value)]))

    @property
    def highlighted(self) -> Any | None:
        if not self.runs or self.cursor_row < 0 or self.cursor_row >= len(self.runs):
            return None
        return self.runs[self.cursor_row]
