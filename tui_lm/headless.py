"""Headless training (`tui-lm --no-ui`): the trainer's events as readable lines.

Prints one line per event (with a rich progress bar when stdout is a
terminal), and turns Ctrl-C / SIGTERM into a graceful stop: the step
finishes and a checkpoint is written. A second Ctrl-C exits at once.
Exit status: 0 finished or stopped, 2 bad input (config, data), 1 crash.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from engine import events as ev
from engine.control import TrainingControl
from engine.train.launch import resolve


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_event(e: ev.Event) -> str | None:
    """One readable line per event; None for events headless mode does not print."""
    if isinstance(e, ev.Log):
        return ("warning: " if e.level == "warning" else "") + e.message
    if isinstance(e, ev.RunStarted):
        presets = ", ".join(f"{k} {_millions(v)}" for k, v in e.preset_params.items())
        what = f"resuming {e.resumed_from} at step {e.start_step}" if e.resumed_from else "new run"
        return (f"run {e.run_dir} ({what})\n"
                f"  model {_millions(e.num_params)} parameters (presets at this vocabulary: {presets})\n"
                f"  device {e.device}, {e.precision}, {e.world_size} rank(s); {e.total_steps:,} steps, "
                f"{e.steps_per_epoch:,} per epoch, {e.tokens_per_step:,} tokens per step; vocabulary {e.vocab_size:,}")
    if isinstance(e, ev.StepMetrics):
        remaining = (e.total_steps - e.step) * e.step_time_s
        shown = [how.line.format(getattr(e, name)) for name, how, _ in ev.shown_fields(ev.StepMetrics)
                 if how.line and getattr(e, name) is not None]
        return " | ".join([f"step {e.step:>6}/{e.total_steps}", f"epoch {e.epoch + 1}", *shown,
                           f"ETA {_duration(remaining)}"])
    if isinstance(e, ev.EvalResult):
        scope = f" (first {e.tokens:,} tokens)" if e.partial else ""
        best = " *best*" if e.best else ""
        return (f"eval step {e.step} {e.split}{scope}: loss {e.loss:.4f} | ppl {e.perplexity:.2f} | "
                f"word ppl {e.word_perplexity:.2f} | bpb {e.bits_per_byte:.3f}{best}")
    if isinstance(e, ev.SampleGenerated):
        return f"sample step {e.step}: {e.text!r}"
    if isinstance(e, ev.CheckpointSaved):
        return f"checkpoint step {e.step} ({e.reason}): {e.path}"
    if isinstance(e, ev.Paused):
        return f"paused at step {e.step}"
    if isinstance(e, ev.Resumed):
        return f"resumed at step {e.step}"
    if isinstance(e, ev.SettingsChanged):
        return None  # the trainer's log line says it in words
    if isinstance(e, ev.Finished):
        if e.stopped and not e.run_dir:
            return "stopped before training began; nothing was saved"
        if e.stopped and e.step == 0:
            return f"stopped before the first step; nothing to resume in {e.run_dir}"
        if e.stopped:
            return f"stopped at step {e.step}; resume with: tui-lm --no-ui --resume {e.run_dir}"
        test = f"; test word ppl {e.test.word_perplexity:.2f}{' (partial)' if e.test.partial else ''}" if e.test else ""
        return f"finished at step {e.step}; final model in {e.model_dir}{test}"
    if isinstance(e, ev.Failed) and e.kind == "busy":  # nothing ran: no step, no checkpoint to name
        return f"error: {e.message}"
    if isinstance(e, ev.Failed):
        where = f"; last checkpoint {e.checkpoint} is intact" if e.checkpoint else ""
        return f"error ({e.kind}) at step {e.step}: {e.message}{where}"
    return None


def eval_progress_text(e: ev.EvalProgress) -> str:
    scope = " (bounded: partial)" if e.partial else ""
    if e.done == 0:
        return f"evaluating {e.split} at step {e.step}{scope}: {e.total:,} batches"
    eta = f", ETA {_duration(e.eta_s)}" if e.done < e.total and e.eta_s == e.eta_s else ""
    return f"  {e.split} {e.done:,}/{e.total:,} batches ({100 * e.done / max(1, e.total):.0f}%){eta}"


def memory_text(m: ev.MemorySample) -> str:
    gib = 1024**3
    if m.kind == "cuda":
        return f"GPU mem {m.allocated_bytes / gib:.2f} GiB alloc, {m.used_bytes / gib:.1f}/{m.total_bytes / gib:.0f} GiB used"
    return f"RAM {m.used_bytes / gib:.2f} GiB (process, no GPU)"


class Printer:
    """Event sink for headless mode."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.memory: ev.MemorySample | None = None
        self.progress: Progress | None = None
        self.task: Any = None
        self.eval_task: Any = None
        self.eval_quarter = 0  # the last quarter of an evaluation printed (no terminal)
        if self.console.is_terminal:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=True)

    def _eval_progress(self, e: ev.EvalProgress) -> None:
        """A bar of its own on a terminal; otherwise its start and each quarter, one line each."""
        if self.progress is not None:
            if self.eval_task is None:
                self.progress.start()
                self.eval_task = self.progress.add_task(f"evaluating {e.split}", total=e.total)
            self.progress.update(self.eval_task, completed=e.done, total=e.total)
            if e.done >= e.total:
                self.progress.remove_task(self.eval_task)
                self.eval_task = None
            return
        quarter = 4 * e.done // max(1, e.total)
        if e.done == 0 or (quarter > self.eval_quarter and e.done < e.total):
            self.console.print(eval_progress_text(e), markup=False)
        self.eval_quarter = quarter

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.MemorySample):
            self.memory = e  # shown on the next step line; the monitor runs on its own thread
            return
        if isinstance(e, ev.EvalProgress):
            self._eval_progress(e)
            return
        line = format_event(e)
        if isinstance(e, ev.StepMetrics) and self.memory is not None:
            line += f" | {memory_text(self.memory)}"
        if isinstance(e, ev.Failed) and e.kind == "error" and e.traceback:
            print(e.traceback, file=sys.stderr)
        if isinstance(e, ev.Failed):
            print(f"tui-lm: {line}", file=sys.stderr)
        elif line is not None:
            self.console.print(line, markup=False)
        if self.progress is None:
            return
        if isinstance(e, ev.RunStarted):
            self.progress.start()
            self.task = self.progress.add_task("training", total=e.total_steps, completed=e.start_step)
        elif isinstance(e, ev.StepMetrics) and self.task is not None:
            self.progress.update(self.task, completed=e.step)
        elif isinstance(e, (ev.Finished, ev.Failed)):
            self.progress.stop()


def install_signal_handlers(control: TrainingControl, say, notice: Callable[[], str]) -> None:
    """Ctrl-C / SIGTERM stop the run gracefully; `notice()` says what the stop does at this moment."""
    def handler(signum: int, _frame: Any) -> None:
        if control.should_stop:
            say("second interrupt: exiting now without a checkpoint")
            os._exit(130)
        say(f"{notice()} (Ctrl-C again to exit at once)")
        control.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_headless(args: argparse.Namespace, overrides: dict[str, dict[str, Any]]) -> int:
    cfg, request = resolve(args.config, overrides, args.resume)
    from engine.train.steering import stop_notice
    from engine.train.trainer import Trainer  # torch is imported only once the config is known to be valid

    control = TrainingControl()
    printer = Printer()
    if request is None:
        trainer = Trainer(cfg, printer, control)
    else:
        trainer = Trainer(cfg, printer, control, run_dir=request.run_dir, resume=True, changes=request.changes,
                          accept_data_change=bool(getattr(args, "accept_data_change", False)))
    install_signal_handlers(control, lambda m: printer.console.print(m, markup=False),
                            lambda: stop_notice(trainer.phase))
    result = trainer.run()
    if trainer.final is not None and trainer.final.left_behind:
        # A stop cut the final evaluation short: everything is saved and closed, but its thread is still in
        # a torch call, whose threads would abort the interpreter's shutdown ("terminate called ...").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if isinstance(result, ev.Failed):
        return 2 if result.kind in ("config", "data", "io", "busy") else 1
    return 0
