"""The small control object a UI uses to pause, resume and stop a running trainer.

Thread-safe: the UI thread (or a signal handler) calls the methods, the
training thread polls `should_pause` / `should_stop` at step boundaries and,
while paused, waits in `wait_for_change`. Requests from other processes
(engine.requests) are applied to this object by the trainer, so they take
the same path as the dashboard's keys.
"""

from __future__ import annotations

import threading


class TrainingControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._wake = threading.Condition()

    def pause(self) -> None:
        """Finish the current step, write a checkpoint, then wait for resume() or stop()."""
        self._pause.set()

    def resume(self) -> None:
        with self._wake:
            self._pause.clear()
            self._wake.notify_all()

    def stop(self) -> None:
        """Finish the current step, write a checkpoint and return."""
        with self._wake:
            self._stop.set()
            self._wake.notify_all()

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set()

    @property
    def should_pause(self) -> bool:
        return self._pause.is_set()

    def wait_for_change(self, timeout: float) -> None:
        """Block up to `timeout` seconds, returning early on resume() or stop()."""
        with self._wake:
            self._wake.wait_for(lambda: not self._pause.is_set() or self._stop.is_set(), timeout)

    def wait_while_paused(self) -> None:
        with self._wake:
            while self._pause.is_set() and not self._stop.is_set():
                self._wake.wait(timeout=0.5)
