"""Steering a running trainer: pause, resume and stop, agreed by every rank, and what a stop does now.

Requests come from this process's control (engine.control: dashboard keys,
signals) and, at logging steps, from the run folder's request file
(`tui-lm pause RUN` from another shell, engine.runs.requests), which rank 0
reads and applies to the control, so both take the same path. Ranks must
agree, or the others would hang in the next all-reduce: under DDP the vote
is a collective, so it runs on logging steps only (one small sync per log
interval).

`stop_notice(phase)` is the one line a face shows when a stop is asked for:
what the trainer will do, which depends on what it is doing (a stop during
the final evaluation skips it at once; the model is already saved, and the
evaluation, left behind in its thread, speaks no more: `Gate`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from engine import events as ev
from engine.control import Interrupted, TrainingControl
from engine.runs.requests import take_request
from engine.train.runtime import Runtime, all_reduce_sum

PAUSE_POLL_S = 0.5  # while paused: how often rank 0 looks for a request and the ranks vote
STOP_POLL_S = 0.1  # while a Detached job runs: how often the caller looks for a stop
T = TypeVar("T")

# What the trainer is doing, for stop_notice; Trainer.phase holds one of them.
PREPARING, TRAINING, EVALUATING, FINAL_EVALUATION = "preparing", "training", "evaluating", "final evaluation"

_STOP_NOTICES = {
    PREPARING: "stopping: the run is still being prepared, nothing is saved",
    TRAINING: "stopping after this step and writing a checkpoint",
    EVALUATING: "stopping the evaluation, then writing a checkpoint",
    FINAL_EVALUATION: "stopping the evaluation: the model is saved, the evaluation is skipped",
}


def stop_notice(phase: str) -> str:
    """What a stop asked for now does, in the trainer's `phase`."""
    return _STOP_NOTICES.get(phase, _STOP_NOTICES[TRAINING])


class Gate:
    """An event sink that a stop closes: work left behind by a stop (Detached) runs on until its next
    check, and none of its events may follow the run's Finished."""

    def __init__(self, target: ev.EventSink) -> None:
        self.target, self.open, self.lock = target, True, threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            if self.open:
                self.target(event)

    def close(self) -> None:
        with self.lock:
            self.open = False


class Detached:
    """`run(fn)`: fn(emit) in a daemon thread, so a stop returns at once (Interrupted) instead of after the
    batch being scored; the job is left behind, ends at its own next stop check, and its events (through
    the Gate it is given) are dropped from the stop on. `left_behind` while it still runs: its torch
    threads make the interpreter's shutdown abort, so headless ends the process with os._exit then.
    No `should_stop` (under DDP, where every rank must reach the collectives): fn runs in the caller."""

    def __init__(self, emit: ev.EventSink, should_stop: Callable[[], bool] | None) -> None:
        self.gate, self.should_stop = Gate(emit), should_stop
        self.thread: threading.Thread | None = None

    def run(self, fn: Callable[[ev.EventSink], T]) -> T:
        if self.should_stop is None:
            return fn(self.gate)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn(self.gate)
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e

        self.thread = threading.Thread(target=target, name="detached", daemon=True)
        self.thread.start()
        while self.thread.is_alive():
            self.thread.join(STOP_POLL_S)
            if self.thread.is_alive() and self.should_stop():
                self.gate.close()
                raise Interrupted("stopped; the job is left behind")
        if "error" in box:
            raise box["error"]
        return box["value"]

    @property
    def left_behind(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self) -> None:
        """Until a job left behind has ended (at once when none was)."""
        if self.thread is not None:
            self.thread.join()


class Steering:
    """The requests of one trainer's loop: `agreed(step)` each step, `wait_paused(step)` while paused."""

    def __init__(self, control: TrainingControl, rt: Runtime, run_dir: Path, log_interval: int,
                 emit: ev.EventSink) -> None:
        self.control, self.rt, self.run_dir = control, rt, run_dir
        self.log_interval, self.emit = log_interval, emit

    def agreed(self, step: int) -> str | None:
        """"stop", "pause" or None, the same on every rank (module docstring)."""
        at_log_step = step % self.log_interval == 0
        if self.rt.distributed and not at_log_step:
            return None
        if at_log_step:
            self._take_request(step)
        return self._vote()

    def wait_paused(self, step: int) -> str | None:
        """Wait, on every rank, until resumed (returns None) or stopped (returns "stop")."""
        while True:
            self._take_request(step)
            request = self._vote()
            if request != "pause":
                return request
            if self.rt.distributed:
                time.sleep(PAUSE_POLL_S)  # every rank, so they meet in the vote rather than spin in it
            else:
                self.control.wait_for_change(PAUSE_POLL_S)  # a dashboard key wakes it at once

    def _take_request(self, step: int) -> None:
        """Rank 0 applies a request file from another process to its control."""
        if not self.rt.is_main:
            return
        action = take_request(self.run_dir)
        if action is not None:
            self.emit(ev.Log(f"{action} requested from outside at step {step}"))
            apply: dict[str, Callable[[], None]] = {"pause": self.control.pause, "resume": self.control.resume,
                                                    "stop": self.control.stop}
            apply[action]()

    def _vote(self) -> str | None:
        stop, pause = float(self.control.should_stop), float(self.control.should_pause)
        if self.rt.distributed:
            stop, pause = all_reduce_sum([stop, pause], self.rt)
        return "stop" if stop else "pause" if pause else None
