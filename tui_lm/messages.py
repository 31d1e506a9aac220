"""Messages that cross from the training thread into the Textual app.

Widget-specific messages live on the widget that sends them (for example
`ConfigForm.Changed`); this module only holds the ones the training runner
posts, since the runner is not a widget.
"""

from __future__ import annotations

from textual.message import Message

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
