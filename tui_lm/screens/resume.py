"""Resume picker: every run under the given folders; enter resumes the selected one.

The folders are asked for anew at each open and reload (F5): a run created
after the app started must show up. Runs are read in a thread worker:
`engine.runs.listing` imports the checkpoint module, which imports torch, and that
must not freeze the screen while it loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from engine.runs.layout import RUN_CONFIG, is_run_folder
from tui_lm.messages import BrowseRuns, ResumeRun, WatchRun
from tui_lm.widgets.common.format import PARTIAL_LEGEND, display_path
from tui_lm.widgets.resume.run_table import RunTable


def collect_runs(roots: list[Path]) -> list[Any]:
    """Runs under every root, newest first; a root that is itself a run folder is listed as one run."""
    from engine.runs.listing import find_runs, read_run

    runs = find_runs([r for r in roots if not is_run_folder(r)])
    runs += [read_run(r) for r in roots if is_run_folder(r)]
    unique: dict[Path, Any] = {}
    for info in runs:
        unique.setdefault(info.path.resolve(), info)
    # find_runs' order (newest first), across all the roots together.
    return sorted(unique.values(), reverse=True,
                  key=lambda r: r.last_checkpoint_time or (r.path / RUN_CONFIG).stat().st_mtime)


class ResumeScreen(Screen):
    HELP_TITLE = "resume picker"
    BINDINGS = [
        Binding("escape", "back", "Back to setup"),
        Binding("enter", "choose", "Resume", show=True, tooltip="resume the selected run"),
        Binding("f5", "reload", "Reload", tooltip="look for runs again"),
        Binding("a", "attach", "Attach", tooltip="watch the selected run live while another process trains it"),
        Binding("b", "browse", "Browse",
                tooltip="browse the selected run: curves, evaluations, samples, checkpoints, config"),
        Binding("space", "mark", "Mark", tooltip="mark or unmark the selected run for comparison"),
        Binding("c", "compare", "Compare marked", tooltip="compare the marked runs (two or more)"),
    ]

    def __init__(self, roots: Callable[[], list[Path]] | list[Path], named: Path | None = None) -> None:
        """`roots`: the folders to list, or a function giving them (called at each scan).

        `named`: a run folder the user asked for (`--resume RUN`): preselected.
        """
        super().__init__()
        self._roots = roots if callable(roots) else (lambda: list(roots))
        self.roots: list[Path] = []  # the folders of the last scan
        self.named = named
        self.loaded = False  # set once the rows are laid out: tests and snapshots wait for it
        self.marked: list[Path] = []  # runs picked for comparison, in the order picked

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="resume-where")
        yield RunTable(id="run-table")
        yield Static("loading runs…", id="run-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self.loaded = False
        self.query_one("#run-detail", Static).update("loading runs…")
        self._load()

    @work(thread=True, group="resume-scan", exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        try:
            roots = self._roots()
            runs = collect_runs(roots)
        except Exception as e:  # an unreadable folder must not take the picker down
            self.app.call_from_thread(self._show_error, f"cannot list runs: {e}")
            return
        self.app.call_from_thread(self._show, roots, runs)

    def _show_error(self, message: str) -> None:
        self.query_one("#run-detail", Static).update(f"[red]{message}[/red]")
        self.loaded = True

    def _show(self, roots: list[Path], runs: list[Any]) -> None:
        self.roots = roots
        where = ", ".join(display_path(r) for r in roots) or "no folders yet: ./lm_* is empty (or pass --resume PATH)"
        legend = f"\n[dim]{escape(PARTIAL_LEGEND)}[/dim]" if any(r.last_val_partial for r in runs) else ""
        self.query_one("#resume-where", Static).update(
            f"Runs in {escape(where)}  ·  enter resumes the selected run, f5 looks again, escape returns to setup"
            + legend)
        table = self.query_one(RunTable)
        named = self.named.resolve() if self.named is not None else None
        selected = next((i for i, r in enumerate(runs) if named is not None and r.path.resolve() == named), 0)
        # `loaded` waits for the table's own layout pass (column widths follow
        # the rows only then), so a picture taken at `loaded` is complete.
        table.show_runs(runs, cursor=selected, on_ready=self._ready)
        self._show_marks()
        table.focus()
        if not runs:
            self.query_one("#run-detail", Static).update("no runs found in " + (where if roots else "./lm_*"))
        else:
            self._describe(table.highlighted)

    def _ready(self) -> None:
        self.loaded = True

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._describe(self.query_one(RunTable).highlighted)

    def _describe(self, info: Any | None) -> None:
        if info is None:
            return
        lines = [f"[b]{escape(display_path(info.path))}[/b]  ·  last checkpoint {info.last_checkpoint or '—'}"
                 f"  ·  {info.world_size} process{'es' if info.world_size != 1 else ''}",
                 f"model {escape(info.model_detail)}"]
        if info.problem:
            lines.append(f"[red]cannot be resumed: {escape(info.problem)}[/red]")
        elif self.named is not None and info.path.resolve() == self.named.resolve() and info.resumable:
            lines.append(f"[green]the run named on the command line: enter resumes it at step {info.step:,}[/green]")
        self.query_one("#run-detail", Static).update("\n".join(lines))

    def action_choose(self) -> None:
        info = self.query_one(RunTable).highlighted
        if info is not None:
            self._choose(info)

    @on(RunTable.Chosen)
    def _chosen(self, event: RunTable.Chosen) -> None:
        self._choose(event.info)

    def _choose(self, info: Any) -> None:
        if not info.resumable:
            reason = info.problem or f"the run is {info.status}"
            self.notify(reason, title=f"cannot resume {info.name}", severity="warning")
            return
        self.post_message(ResumeRun(info.path, self))

    def action_attach(self) -> None:
        """Watch the highlighted run live, when another process is training it."""
        from engine.runs.liveness import ACTIVE, read_state, trainer_gone

        info = self.query_one(RunTable).highlighted
        if info is None:
            return
        state = read_state(info.path)
        if state.get("status") not in ACTIVE or trainer_gone(state):
            why = trainer_gone(state) or f"the run is {state.get('status', info.status)}"
            self.notify(f"{why}; nothing to attach to", title=f"cannot attach to {info.name}", severity="warning")
            return
        self.post_message(WatchRun(info.path))

    def action_browse(self) -> None:
        info = self.query_one(RunTable).highlighted
        if info is not None:
            self.post_message(BrowseRuns([info.path]))

    def action_mark(self) -> None:
        """Mark or unmark the highlighted run for comparison (✓ before its name)."""
        table = self.query_one(RunTable)
        info = table.highlighted
        if info is None:
            return
        if info.path in self.marked:
            self.marked.remove(info.path)
        else:
            self.marked.append(info.path)
        self._show_marks()

    def _show_marks(self) -> None:
        from textual.coordinate import Coordinate

        table = self.query_one(RunTable)
        for row, info in enumerate(table.runs):
            cell = table.get_cell_at(Coordinate(row, 0))
            name = cell.plain.removeprefix("✓ ") if hasattr(cell, "plain") else str(cell).removeprefix("✓ ")
            mark = "✓ " if info.path in self.marked else ""
            style = cell.style if hasattr(cell, "style") else ""
            table.update_cell_at(Coordinate(row, 0), Text(mark + name, style=style))

    def action_compare(self) -> None:
        runs = [p for p in self.marked if any(r.path == p for r in self.query_one(RunTable).runs)]
        if len(runs) < 2:
            self.notify("mark two runs or more with space, then press c", title="compare", severity="warning")
            return
        self.post_message(BrowseRuns(runs))

    def action_back(self) -> None:
        self.app.pop_screen()
