"""The bridge between one training thread and the UI thread.

`TrainingRunner.run()` is called inside a Textual thread worker. The trainer
calls `emit` from that thread; `emit` must be cheap because it is on the
training loop's critical path, so it never touches a widget and never waits for
the UI: step metrics and memory samples are appended to a buffer the dashboard
drains at a bounded rate, everything else is posted as a `TrainingEvent`
(thread-safe, non-blocking).

Training uses torch's default threads, exactly as headless does: the UI
thread needs under 1% of a core (bench/dashboard.py), and taking a core away
from training on a small machine cost far more than it gave the keys.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from textual.message_pump import MessagePump

from engine import events as ev
from engine.config.run_config import RunConfig
from engine.control import TrainingControl
from tui_lm.messages import TrainingEvent

# Enough history for the plots between two drains even at thousands of steps/s.
MAX_PENDING = 100_000


class TrainingRunner:
    """Owns the control object and the event buffer of one run."""

    def __init__(self, cfg: RunConfig, target: MessagePump, *, run_dir: Path | None = None,
                 resume: bool = False) -> None:
        self.cfg = cfg
        self.target = target
        self.run_dir = run_dir
        self.resume = resume
        self.control = TrainingControl()
        self._pending: deque[ev.Event] = deque(maxlen=MAX_PENDING)
        self._done = threading.Event()
        self.result: ev.Event | None = None

    # ------------------------------------------------------------------ training thread

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, (ev.StepMetrics, ev.MemorySample)):
            self._pending.append(event)  # deque.append is atomic: no lock needed
        else:
            self.target.post_message(TrainingEvent(event))

    def run(self) -> ev.Event:
        """Blocking: train (in the calling thread) and return Finished or Failed."""
        try:
            # Imported here, not at module level: torch takes seconds to import
            # and the setup screen must open instantly.
            from engine.train.trainer import Trainer

            trainer = Trainer(self.cfg, self.emit, self.control, run_dir=self.run_dir, resume=self.resume)
            result = trainer.run()
            if trainer.final is not None:
                # A final evaluation a stop cut short (Finished is out) ends at its next batch. Waited for
                # here, off the UI thread, so quitting the app then exits cleanly: torch threads still
                # running would abort the interpreter's shutdown.
                trainer.final.wait()
        except BaseException as e:  # an import or setup failure must still end the run visibly
            result = ev.Failed(message=f"{type(e).__name__}: {e}", step=0, kind="error")
            self.emit(result)
        finally:
            self._done.set()
        self.result = result
        return result

    # ------------------------------------------------------------------ UI thread

    def drain(self) -> list[ev.Event]:
        """Every buffered high-frequency event since the last drain, oldest first."""
        out = []
        pending = self._pending
        while pending:
            out.append(pending.popleft())
        return out

    @property
    def active(self) -> bool:
        """True from start until the training thread has returned."""
        return not self._done.is_set()

    def pause(self) -> None:
        self.control.pause()

    def resume_training(self) -> None:
        self.control.resume()

    def stop(self) -> None:
        self.control.stop()
