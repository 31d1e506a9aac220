"""The dashboard attached to a run another process trains (`tui-lm watch RUN`, the picker's attach).

The same screen as a training dashboard, with a `FolderRunner` in place of
the training thread: its events come from the run folder. What differs is
ownership: leaving the view (escape, q) leaves the trainer running; p, r and s
send requests to it; a stopped, finished or vanished trainer keeps the view
open, and a trainer that starts again on the run (a resume) is followed.
"""

from __future__ import annotations

import math
from pathlib import Path

from textual import on
from textual.binding import Binding
from textual.widgets import Static

from engine import events as ev
from engine.config.run_config import RunConfig
from tui_lm.runners.folder import FolderRunner, HistoryLoaded
from tui_lm.screens.dashboard import HISTORY_SERIES, DashboardScreen
from tui_lm.widgets.dashboard.line_plot import LinePlot
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel
from tui_lm.widgets.dashboard.run_header import RunHeader
from tui_lm.widgets.dashboard.step_progress import StepProgress


class WatchScreen(DashboardScreen):
    attached = True  # the app's quit and exit paths leave this trainer alone
    HELP_TITLE = "watching a run"
    BINDINGS = [
        Binding("p", "pause", "Pause", tooltip="ask the trainer to pause (it checkpoints first)"),
        Binding("r", "resume", "Resume", tooltip="ask a paused trainer to go on"),
        Binding("s", "stop", "Stop", tooltip="ask the trainer to stop (it checkpoints first)"),
        Binding("escape", "back", "Leave (the run goes on)", tooltip="leave this view; the trainer goes on"),
    ]

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir=run_dir)
        self.runner = FolderRunner(run_dir, self, cfg)  # type: ignore[assignment]
        self.runner.on_replay = self._cut_from
        self.valid_upto = -math.inf  # the last evaluation step of the plotted history
        self.trainer_device = ""  # the device the trainer reported ("cuda:0 (NVIDIA H100)")
        self.history_complete = False

    def on_unmount(self) -> None:
        self.runner.close()

    # ------------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return True
        if action in ("pause", "resume", "stop") and not self.runner.active:
            return None  # no live trainer to ask
        return super().check_action(action, parameters)

    def action_back(self) -> None:
        self.runner.close()
        self.dismiss(self.result)

    def stop_and_exit(self) -> None:
        self.app.exit()  # watching owns no trainer: nothing to stop

    # ------------------------------------------------------------------ the folder's events

    @on(HistoryLoaded)
    def _on_history(self, message: HistoryLoaded) -> None:
        """Replace the plotted history; points that arrived live after it stay."""
        curves = message.curves
        self.show_history(curves)
        valid_steps = curves.valid[0]
        self.valid_upto = valid_steps[-1] if valid_steps else -math.inf
        self.history_complete = curves.complete

    def _cut_from(self, step: int) -> None:
        """A resumed trainer logs again from `step`: the points from there were superseded."""
        for selector, key, _ in HISTORY_SERIES:
            plot = self.query_one(selector, LinePlot)
            series = plot.series[key]
            kept = [(x, y) for x, y in zip(series.xs, series.ys) if x < step]
            plot.set_points(key, [x for x, _ in kept], [y for _, y in kept])
        self.valid_upto = min(self.valid_upto, step - 1)

    def drain(self, force: bool = False) -> None:
        super().drain(force)
        # Which process the view follows (it changes when the run is resumed elsewhere).
        device = ", ".join(part for part in (self.trainer_device, self.runner.trainer) if part)
        header = self.query_one(RunHeader)
        if header.device != device:
            header.device = device

    def _on_RunStarted(self, e: ev.RunStarted) -> None:
        super()._on_RunStarted(e)
        self.trainer_device = e.device
        latest = self.query_one(MetricsPanel).train
        if latest is not None:  # drained before this event: the progress line shows it, not the plan
            self.query_one(StepProgress).show(latest)
        # A trainer (again) on this run: the view follows it.
        self.result = None
        self.state = "running"
        self.query_one("#error-panel").display = False

    def _on_EvalResult(self, e: ev.EvalResult) -> None:
        if e.split == "valid" and e.step <= self.valid_upto:
            self.query_one(MetricsPanel).show_eval(e)  # already on the plot, from the history
            return
        super()._on_EvalResult(e)

    def _on_Finished(self, e: ev.Finished) -> None:
        self.result = e
        self.state = "stopped" if e.stopped else "finished"
        what = "stopped" if e.stopped else "finished"
        self.notify(f"the run {what} at step {e.step:,}; escape leaves this view", title=f"run {what}")

    def _on_Failed(self, e: ev.Failed) -> None:
        if e.kind != "gone":
            super()._on_Failed(e)
            return
        self.result = e
        self.state = "failed"
        panel = self.query_one("#error-panel", Static)
        panel.update(f"[b]The trainer process is gone[/b] (step {e.step:,})\n{e.message}")
        panel.display = True
        self.notify(e.message, title="trainer process gone", severity="error", timeout=15)
