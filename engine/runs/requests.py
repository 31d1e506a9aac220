"""Requests to a running trainer from another process: pause, resume or stop, through a file in its run folder.

`tui-lm pause|resume|stop RUN` and an attached dashboard write `request.json`
into the run folder; the trainer (rank 0 under torchrun) takes it at its next
logging step and applies it to its own `TrainingControl`, so a request from
outside and a key in the dashboard that started the run go through the same
path. Taking is atomic (a rename), so a request written while the trainer is
reading is kept for the next look, never lost. A trainer clears a leftover
request when it starts: it was meant for an earlier process.

Torch-free: the steering commands and the dashboard import it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from engine.files import write_json
from engine.runs.layout import REQUEST

ACTIONS = ("pause", "resume", "stop")


def write_request(run_dir: Path, action: str) -> dict[str, Any]:
    """Ask the trainer of `run_dir` to `action`; a newer request replaces an unread one."""
    if action not in ACTIONS:
        raise ValueError(f"request must be one of {', '.join(ACTIONS)}, got {action!r}")
    request = {"action": action, "time": time.time(), "pid": os.getpid()}
    # Atomic, through an exclusive temp file: the trainer never sees half a request,
    # and a symlink planted in the run folder is never written through.
    write_json(Path(run_dir) / REQUEST, request)
    return request


def _parse(path: Path) -> str | None:
    try:
        action = json.loads(path.read_text()).get("action")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: ignored, like no request
    return action if action in ACTIONS else None


def pending_request(run_dir: Path) -> str | None:
    """The action waiting in `run_dir`, without taking it."""
    return _parse(Path(run_dir) / REQUEST)


def take_request(run_dir: Path) -> str | None:
    """The waiting action, removed from the folder; None when there is none.

    Cheap when there is no request (one failed rename), so the trainer can
    look at every logging step.
    """
    path = Path(run_dir) / REQUEST
    taken = path.with_name(f".{REQUEST}.taken.{os.getpid()}")
    try:
        os.rename(path, taken)
    except OSError:
        return None
    try:
        return _parse(taken)
    finally:
        taken.unlink(missing_ok=True)


def clear_request(run_dir: Path) -> None:
    (Path(run_dir) / REQUEST).unlink(missing_ok=True)
