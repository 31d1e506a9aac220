"""A training runner that replays a fixed list of events instead of training.

The dashboard's reactions to events (numbers, log lines, keys offered,
toasts) are tested with it in milliseconds and the same way every time.
"""

from __future__ import annotations

import time

from engine import events as ev
from tui_lm.runners.training import TrainingRunner
from tui_lm.widgets.dashboard.step_progress import StepProgress


def progress(screen) -> StepProgress:  # type: ignore[no-untyped-def]
    return screen.query_one(StepProgress)


class ScriptedRunner(TrainingRunner):
    """Emits `SCRIPT` (set by the test, a list of events) then waits for a stop.

    It waits for the screen to take RunStarted before sending the rest, as a
    real trainer's first step comes long after it. The run ends with the
    script's last event when that is a Finished or Failed, else when the
    dashboard stops it (a stop then ends it like the trainer does).
    """

    SCRIPT: list[ev.Event] = []

    def run(self) -> ev.Event:
        screen = self.target
        for e in self.SCRIPT:
            self.emit(e)
            if isinstance(e, ev.RunStarted):
                deadline = time.monotonic() + 30
                while progress(screen).total_steps != e.total_steps and time.monotonic() < deadline:
                    time.sleep(0.01)
        last = self.SCRIPT[-1] if self.SCRIPT else None
        if isinstance(last, (ev.Finished, ev.Failed)):
            result = last
        else:
            deadline = time.monotonic() + 120  # a test that forgot to stop must not hang the suite
            while not self.control.should_stop and time.monotonic() < deadline:
                time.sleep(0.01)
            result = ev.Finished(step=0, run_dir="", stopped=True)
            self.emit(result)
        self._done.set()
        self.result = result
        return result
