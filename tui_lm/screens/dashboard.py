"""Training dashboard: runs the trainer in a thread worker and shows it live.

Discrete events (evaluations, checkpoints, pause, end) arrive as
`TrainingEvent` messages; step metrics and memory samples are drained from the
runner's buffer every `DRAIN_S`, so widget updates happen at a bounded rate
however fast the loop steps. The worker never touches a widget.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine import events as ev
from engine.config.model_label import config_model, model_label
from engine.config.run_config import RunConfig
from engine.runs.liveness import read_state
from engine.runs.reader import read_history, to_event
from tui_lm.messages import TrainingEvent
from tui_lm.runners.folder import Curves, curves_of
from tui_lm.runners.training import TrainingRunner
from tui_lm.widgets.common.format import display_path, duration
from tui_lm.widgets.dashboard.event_log import EventLog
from tui_lm.widgets.dashboard.line_plot import LinePlot
from tui_lm.widgets.dashboard.memory_gauge import MemoryGauge
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel
from tui_lm.widgets.dashboard.run_header import RunHeader
from tui_lm.widgets.dashboard.sample_view import SampleView
from tui_lm.widgets.dashboard.step_progress import StepProgress

DRAIN_S = 0.5  # metric widgets update twice a second; keys and events are handled at once
LR_CURVE_POINTS = 240
ENDED = ("finished", "stopped", "failed")
COMPACT = (100, 30)  # columns, rows under which the dashboard collapses its secondary panels
SMOOTHING = 0.9  # EMA weight of the `e` key's smoothed training loss
# (plot, series, Curves attribute) of the history read from a run folder.
HISTORY_SERIES = (("#loss-plot", "train", "train"), ("#loss-plot", "valid", "valid"), ("#lr-plot", "done", "lr"))


class DashboardScreen(Screen):
    HELP_TITLE = "training dashboard"
    BINDINGS = [
        Binding("p", "pause", "Pause", tooltip="pause: the step finishes and a checkpoint is written"),
        Binding("r", "resume", "Resume", tooltip="resume a paused run"),
        Binding("s", "stop", "Stop", tooltip="stop: checkpoint, then back to setup"),
        Binding("e", "smooth", "Smooth", tooltip="smooth the training loss (moving average) or show it raw"),
        Binding("l", "log_scale", "Log loss", tooltip="the loss plot on a log scale or a linear one"),
        Binding("escape", "back", "Back to setup", tooltip="back to setup once the run has ended"),
    ]

    state: reactive[str] = reactive("starting")

    def __init__(self, cfg: RunConfig, *, run_dir: Path | None = None, resume: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.runner = TrainingRunner(cfg, self, run_dir=run_dir, resume=resume)
        self.run_dir: Path | None = run_dir
        self.result: ev.Event | None = None
        self.exit_when_done = False  # set by the quit dialog while a run is active
        self.started: ev.RunStarted | None = None
        self.last_checkpoint = ""  # newest checkpoint of this run (this session's or the one resumed from)
        self.trained_step = False  # a step of this session has been logged

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield StepProgress(id="progress")
        yield Static("", id="error-panel")
        with Horizontal(id="dash-top"):
            yield LinePlot("loss", id="loss-plot")
            yield MetricsPanel(id="metrics")
        with Horizontal(id="dash-mid"):
            yield LinePlot("learning rate", id="lr-plot")
            yield MemoryGauge(id="memory-gauge")
        with Vertical(id="dash-bottom"):
            yield SampleView(id="sample")
            yield EventLog(id="event-log")
        yield Footer()

    def on_mount(self) -> None:
        loss = self.query_one("#loss-plot", LinePlot)
        # Line against markers, solid against dotted: told apart without colour too.
        loss.add_series("train", "train", "#1e90ff")
        loss.add_series("valid", "valid", "#ffaf00", marker="◆")
        lr = self.query_one("#lr-plot", LinePlot)
        lr.add_series("schedule", "schedule", "#808080", dotted=True)
        lr.add_series("done", "so far", "#00d700")
        self.query_one("#error-panel").display = False
        header = self.query_one(RunHeader)
        header.run_name = self.run_dir.name if self.run_dir else self.cfg.run.run_name
        header.model = model_label(*config_model(self.cfg))
        self.set_interval(DRAIN_S, self.drain)
        self._train()

    def on_resize(self, event) -> None:  # type: ignore[no-untyped-def]
        # Below COMPACT the event log and memory details collapse (app.tcss).
        self.set_class(event.size.width < COMPACT[0] or event.size.height < COMPACT[1], "-compact")

    def on_unmount(self) -> None:
        # However the app ends (its screens are closed before the app's own
        # unmount runs), never leave a training thread running behind it.
        self.runner.stop()

    @work(thread=True, group="training", exclusive=True, exit_on_error=False)
    def _train(self) -> ev.Event:
        return self.runner.run()

    # ------------------------------------------------------------------ state and keys

    def watch_state(self, state: str) -> None:
        self.query_one(RunHeader).state = state
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # True = offered; None = shown greyed out in the footer; False = hidden.
        if action in ("pause", "resume", "stop"):
            if self.state in ENDED:
                return False  # nothing left to pause, resume or stop
            if action == "pause":
                return self.state in ("starting", "running") or None
            if action == "resume":
                return self.state in ("paused", "pausing") or None
            return self.state != "stopping" or None
        if action == "back":
            return self.state in ENDED
        return True

    def action_pause(self) -> None:
        if self.runner.active and self.state in ("starting", "running"):
            self.runner.pause()
            self.state = "pausing"

    def action_resume(self) -> None:
        if self.runner.active and self.state in ("paused", "pausing"):
            self.runner.resume_training()
            # From "pausing": either the trainer never saw the flag, or it is already
            # checkpointing and Paused then Resumed follow; both end in "running".
            self.state = "running" if self.state == "pausing" else "paused"

    def action_stop(self) -> None:
        if self.runner.active:
            self.runner.stop()
            self.state = "stopping"

    def action_smooth(self) -> None:
        """Toggle an EMA (weight SMOOTHING) over the training loss: noisy small-batch losses read better."""
        plot = self.query_one("#loss-plot", LinePlot)
        plot.set_view(smoothing=0.0 if plot.smoothing else SMOOTHING)

    def action_log_scale(self) -> None:
        plot = self.query_one("#loss-plot", LinePlot)
        plot.set_view(log_y=not plot.log_y)

    def action_back(self) -> None:
        if self.state in ENDED:
            self.dismiss(self.result)

    def quit_warning(self) -> str:
        """What quitting now does to this run, for the quit dialog: only what will really happen."""
        e = self.started
        if e is None:
            return ("Training has not started yet (the data and the model are being prepared): quitting "
                    "cancels it; nothing is saved" + (" and the run is left as it was." if self.runner.resume else "."))
        if not self.trained_step and not e.resumed_from:
            return "No step has been trained yet: quitting cancels the run; there is nothing to checkpoint."
        if not self.trained_step:
            return (f"No step has been trained since resuming: quitting stops the run; its checkpoint at "
                    f"step {e.start_step:,} is kept.")
        return ("A run is active: it will be stopped after the current step and a checkpoint written first, "
                "so it can be resumed later.")

    def stop_and_exit(self) -> None:
        """The quit dialog's path: checkpoint and stop, then leave the app."""
        self.exit_when_done = True
        if self.state in ENDED:
            self.app.exit()
        else:
            self.action_stop()

    # ------------------------------------------------------------------ events

    def drain(self, force: bool = False) -> None:
        """Show the buffered step metrics and memory samples; plots repaint at their own bounded rate."""
        batch = self.runner.drain()
        loss = self.query_one("#loss-plot", LinePlot)
        lr = self.query_one("#lr-plot", LinePlot)
        if not batch:
            loss.flush(force)
            lr.flush(force)
            return
        last_step = last_memory = None
        for e in batch:
            if isinstance(e, ev.StepMetrics):
                loss.add_point("train", e.step, e.loss)
                lr.add_point("done", e.step, e.lr)
                last_step = e
            elif isinstance(e, ev.MemorySample):
                last_memory = e
        if last_step is not None:
            self.trained_step = True
            self.query_one(RunHeader).activity = ""  # training again: any evaluation is over
            self.query_one(StepProgress).show(last_step)
            self.query_one(MetricsPanel).show_step(last_step)
            if self.state == "starting":
                self.state = "running"
        if last_memory is not None:
            self.query_one(MemoryGauge).show(last_memory)
        loss.flush(force)
        lr.flush(force)

    @on(TrainingEvent)
    def _on_training_event(self, message: TrainingEvent) -> None:
        self.drain()  # buffered metrics happened before this event: show them first
        e = message.event
        self.query_one(EventLog).add_event(e)
        handler = getattr(self, f"_on_{type(e).__name__}", None)
        if handler is not None:
            handler(e)
        if isinstance(e, (ev.Paused, ev.Finished, ev.Failed)):
            self.query_one(RunHeader).activity = ""  # an interrupted evaluation is over too
            self.drain(force=True)  # the plots are complete now: show them at once

    def _on_RunStarted(self, e: ev.RunStarted) -> None:
        self.run_dir = Path(e.run_dir)
        self.started = e
        self.last_checkpoint = e.resumed_from or self.last_checkpoint
        remember = getattr(self.app, "remember_run", None)
        if remember is not None:
            remember(self.run_dir)  # the resume picker will look in its folder
        if self.state == "starting":
            self.state = "running"
        header = self.query_one(RunHeader)
        header.run_name, header.device, header.num_params = self.run_dir.name, e.device, e.num_params
        self.query_one(StepProgress).begin(e.start_step, e.total_steps, e.steps_per_epoch)
        lr_plot = self.query_one("#lr-plot", LinePlot)
        if e.schedule is not None:  # the trainer's own schedule, not a copy worked out here
            lr_plot.set_points("schedule", *e.schedule.curve(LR_CURVE_POINTS))
        lr_plot.x_max = self.query_one("#loss-plot", LinePlot).x_max = e.total_steps
        self.query_one(MemoryGauge).set_estimate(e.estimated_bytes or None)
        if e.resumed_from:
            self._load_history(self.run_dir, e.start_step)

    def _on_EvalProgress(self, e: ev.EvalProgress) -> None:
        eta = f" · ETA {duration(e.eta_s)}" if e.done < e.total else ""
        scope = " (partial)" if e.partial else ""
        self.query_one(RunHeader).activity = f"{e.split}{scope} {e.done:,}/{e.total:,}{eta}"

    def _on_CheckpointSaved(self, e: ev.CheckpointSaved) -> None:
        self.last_checkpoint = e.path

    def _on_EvalResult(self, e: ev.EvalResult) -> None:
        self.query_one(RunHeader).activity = ""
        self.query_one(MetricsPanel).show_eval(e)
        if e.split == "valid":
            self.query_one("#loss-plot", LinePlot).add_point("valid", e.step, e.loss)

    def _on_SampleGenerated(self, e: ev.SampleGenerated) -> None:
        self.query_one(SampleView).show(e)

    def _on_Paused(self, e: ev.Paused) -> None:
        # The header, the progress line and the event log say it: no toast over the log.
        if self.state != "stopping":
            self.state = "paused"
        self.query_one(StepProgress).show_paused(e.step)

    def _on_Resumed(self, e: ev.Resumed) -> None:
        if self.state != "stopping":
            self.state = "running"

    def _on_Finished(self, e: ev.Finished) -> None:
        self.result = e
        self.state = "stopped" if e.stopped else "finished"
        if self.exit_when_done:
            self.app.exit()
        elif e.stopped:
            # Shown on the setup screen this returns to, where nothing else says it.
            if not e.run_dir:
                self.app.notify("stopped before training began: nothing was saved or changed", title="run stopped")
            elif not self.last_checkpoint:
                self.app.notify(f"stopped before its first step: nothing to resume ({display_path(e.run_dir)})",
                                title="run stopped")
            else:
                self.app.notify(f"stopped at step {e.step:,}; resume it with ctrl+r ({display_path(e.run_dir)})",
                                title="run stopped")
            self.dismiss(e)
        # Finished: the header, the event log and the footer (escape) say it; no toast over the log.

    def _on_Failed(self, e: ev.Failed) -> None:
        self.result = e
        self.state = "failed"
        panel = self.query_one("#error-panel", Static)
        kept = f"\nThe last good checkpoint is kept: {escape(display_path(e.checkpoint))}" if e.checkpoint else ""
        panel.update(f"[b]Training failed ({e.kind}) at step {e.step:,}[/b]\n{escape(e.message)}{kept}\n"
                     "[dim]Press escape to return to the setup screen.[/dim]")
        panel.display = True  # the banner says it all: no toast repeating it
        if self.exit_when_done:
            self.app.exit()

    # ------------------------------------------------------------------ resumed runs

    @work(thread=True, group="history", exit_on_error=False)
    def _load_history(self, run_dir: Path, upto: int) -> None:
        """Earlier sessions' history up to the resumed step, so a resumed run's plots and panels are whole."""
        history = read_history(run_dir)
        history.cut_from(upto + 1)  # this session logs those steps again
        valid = [r for r in history.evals if r.get("split") == "valid"]
        last_valid = to_event(valid[-1]) if valid else valid_from_state(run_dir, upto)
        best = min(history.valid.y, default=math.inf)
        best_partial = any(r.get("partial") and r.get("loss") == best for r in valid)
        if not valid and last_valid is not None:
            best, best_partial = last_valid.loss, last_valid.partial
        last_train = to_event(history.last_step) if history.last_step else None
        sample = to_event(history.samples[-1]) if history.samples else None
        self.app.call_from_thread(self._restore, curves_of(history), last_train, last_valid, (best, best_partial),
                                  sample)

    def _restore(self, curves: Curves, train: ev.StepMetrics | None, valid: ev.EvalResult | None,
                 best: tuple[float, bool], sample: ev.SampleGenerated | None) -> None:
        self.show_history(curves)
        self.query_one(MetricsPanel).restore(train, valid, *best)
        if sample is not None:
            self.query_one(SampleView).restore(sample)

    def show_history(self, curves: Curves) -> None:
        """Plot a run's history read from its folder; points that arrived live after it stay."""
        for selector, key, name in HISTORY_SERIES:
            plot = self.query_one(selector, LinePlot)
            xs, ys = getattr(curves, name)
            series = plot.series[key]
            end = xs[-1] if xs else -math.inf
            live = [(x, y) for x, y in zip(series.xs, series.ys) if x > end]
            plot.set_points(key, xs + [x for x, _ in live], ys + [y for _, y in live])
            plot.flush(force=True)


def valid_from_state(run_dir: Path, step: int) -> ev.EvalResult | None:
    """The last validation figures state.json keeps, when metrics.jsonl has none."""
    state = read_state(run_dir)
    try:
        loss = float(state["last_val_loss"])
        return ev.EvalResult(step=step, split="valid", loss=loss,
                             perplexity=float(state.get("last_val_ppl", math.exp(loss))),
                             word_perplexity=float(state.get("last_word_ppl", math.nan)), bits_per_byte=math.nan,
                             tokens=0, partial=bool(state.get("last_val_partial", True)))
    except (KeyError, TypeError, ValueError):
        return None
