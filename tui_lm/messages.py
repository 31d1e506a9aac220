"""Messages that cross into the Textual app: from the training thread, and from screens to the app.

Widget-specific messages live on the widget that sends them (for example
`ConfigForm.Changed`); this module holds the ones the training runner posts
(the runner is not a widget) and the navigation requests screens send the
app (screens never call the app's methods directly).
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message
from textual.screen import Screen

from engine.config.run_config import RunConfig
from engine.events import Event


class TrainingEvent(Message):
    """One low-frequency trainer event (log line, evaluation, checkpoint, pause, end).

    High-frequency events (StepMetrics, MemorySample) never travel as messages:
    the runner buffers them and the dashboard drains the buffer on a timer, so
    a fast training loop cannot flood the message queue.
    """

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


# Requests from a screen to the app, which owns navigation between screens.

class StartTraining(Message):
    """The setup screen's Start: train `config` on the dashboard."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config


class OpenResumePicker(Message):
    """Open the resume picker, also listing runs under `out_dir` (the output folder typed on setup)."""

    def __init__(self, out_dir: str = "") -> None:
        super().__init__()
        self.out_dir = out_dir


class ResumeRun(Message):
    """Resume the run in `run_dir`; `picker` is the screen it was chosen on (replaced by the dashboard)."""

    def __init__(self, run_dir: Path, picker: Screen | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.picker = picker


class WatchRun(Message):
    """Open the dashboard attached to the run in `run_dir`, which another process trains."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir


class BrowseRuns(Message):
    """Open runs read-only: one is browsed, several are compared."""

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = list(run_dirs)
