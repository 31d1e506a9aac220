"""Resume picker: every run under the given folders; enter resumes the selected one.

Runs are read in a thread worker: `engine.runs` imports the checkpoint module,
which imports torch, and that must not freeze the screen while it loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui_lm.messages import ResumeRun, WatchRun
from tui_lm.widgets.resume.run_table import RunTable


def collect_runs(roots: list[Path]) -> list[Any]:
    """Runs under each root; a root that is itself a run folder is listed as one run."""
    from engine.runs import find_runs, read_run

    runs, seen = [], set()
    for root in roots:
        found = [read_run(root)] if (root / "run.toml").is_file() else find_runs([root])
        for info in found:
            key = info.path.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(info)
    return runs


class ResumeScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back to setup"),
        Binding("enter", "choose", "Resume", show=True),
        Binding("f5", "reload", "Reload"),
        Binding("a", "attach", "Attach"),
    ]

    def __init__(self, roots: list[Path]) -> None:
        super().__init__()
        self.roots = roots
        self.loaded = False  # tests and snapshots wait for the scan

    def compose(self) -> ComposeResult:
        yield Header()
        where = ", ".join(str(r) for r in self.roots) or "(no folders: pass one with --resume PATH)"
        yield Static(f"Runs in {where}  ·  enter resumes the selected run, escape returns to setup",
                     id="resume-where")
        yield RunTable(id="run-table")
        yield Static("loading runs…", id="run-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self.query_one("#run-detail", Static).update("loading runs…")
        self._load()

    @work(thread=True, group="resume-scan", exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        try:
            runs = collect_runs(self.roots)
        except Exception as e:  # an unreadable folder must not take the picker down
            self.app.call_from_thread(self._show_error, f"cannot list runs: {e}")
            return
        self.app.call_from_thread(self._show, runs)

    def _show_error(self, message: str) -> None:
        self.query_one("#run-detail", Static).update(f"[red]{message}[/red]")

    def _show(self, runs: list[Any]) -> None:
        table = self.query_one(RunTable)
        table.show_runs(runs)
        table.focus()
        if not runs:
            self.query_one("#run-detail", Static).update("no runs found")
        else:
            self._describe(table.highlighted)
        self.loaded = True

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._describe(self.query_one(RunTable).highlighted)

    def _describe(self, info: Any | None) -> None:
        if info is None:
            return
        lines = [f"[b]{info.path}[/b]  ·  last checkpoint {info.last_checkpoint or '—'}"
                 f"  ·  {info.world_size} process{'es' if info.world_size != 1 else ''}"]
        if info.problem:
            lines.append(f"[red]cannot be resumed: {info.problem}[/red]")
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
        from engine.liveness import ACTIVE, read_state, trainer_gone

        info = self.query_one(RunTable).highlighted
        if info is None:
            return
        state = read_state(info.path)
        if state.get("status") not in ACTIVE or trainer_gone(state):
            why = trainer_gone(state) or f"the run is {state.get('status', info.status)}"
            self.notify(f"{why}; nothing to attach to", title=f"cannot attach to {info.name}", severity="warning")
            return
        self.post_message(WatchRun(info.path))

    def action_back(self) -> None:
        self.app.pop_screen()
