"""The small control object a UI uses to pause, resume and stop a running trainer.

Thread-safe: the UI thread (or a signal handler) calls the methods, the
training thread polls `should_pause` / `should_stop` at step boundaries and,
while paused, waits in `wait_for_change`. Requests from other processes
(engine.runs.requests) are applied to this object by the trainer, so they take
the same path as the dashboard's keys.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """A stop was asked for while the run was still being prepared (data, tokenizer)."""


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise Interrupted when a stop was asked for; called between preparation phases."""
    if should_stop is not None and should_stop():
        raise Interrupted("stopped while preparing the run")


def run_interruptible(fn: Callable[[], T], should_stop: Callable[[], bool] | None, poll_s: float = 0.1) -> T:
    """`fn()`, but return at once (raising Interrupted) when a stop is asked for meanwhile.

    For blocking calls that cannot be cancelled from outside (the hub
    download and its connection retries): `fn` runs in a daemon thread that
    is left behind on a stop; it ends on its own or with the process.
    """
    if should_stop is None:
        return fn()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="interruptible", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        check_stop(should_stop)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


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
