"""Is the trainer of a run folder still there? Read from `state.json`'s heartbeat, without torch.

The recorder refreshes `state.json` (time `updated`, `pid`, `host`) at
logging steps and, from the memory monitor's thread, while the trainer is
paused, evaluating or checkpointing; `heartbeat_s` is the time it expects
between logging steps. On this host a dead pid settles it; on another host
(a shared filesystem) only the heartbeat's age can, so the limit is generous.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from engine.files import pid_alive
from engine.runs.layout import STATE

ACTIVE = ("running", "paused")  # statuses that claim a trainer process is there
STALE_AFTER_S = 120.0  # no heartbeat for this long (and 5 expected intervals): the trainer is gone


def read_state(run_dir: Path) -> dict[str, Any]:
    """state.json as a dict; {} when missing or unreadable (a run still starting, a damaged file)."""
    try:
        state = json.loads((Path(run_dir) / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _age(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def stale_limit(state: dict[str, Any]) -> float:
    expected = state.get("heartbeat_s")
    expected = float(expected) if isinstance(expected, (int, float)) and not isinstance(expected, bool) else 0.0
    return max(STALE_AFTER_S, 5 * expected)


def trainer_gone(state: dict[str, Any], now: float | None = None) -> str:
    """Why the trainer that `state` names is not alive; "" when it is, or when the run claims none."""
    if state.get("status") not in ACTIVE:
        return ""
    now = time.time() if now is None else now
    pid, host = state.get("pid"), state.get("host")
    updated = state.get("updated")
    age = now - float(updated) if isinstance(updated, (int, float)) and not isinstance(updated, bool) else None
    if host == socket.gethostname():
        if not pid_alive(pid):
            return f"trainer process {pid} is gone"
        if age is not None and age > stale_limit(state):
            return f"trainer process {pid} is not responding (no heartbeat for {_age(age)})"
        return ""
    where = host or "an unknown host"
    if age is None:
        return f"no heartbeat from the trainer on {where}"
    if age > stale_limit(state):
        return f"no heartbeat from the trainer on {where} for {_age(age)}"
    return ""
