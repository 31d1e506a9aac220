"""Writes a run's events to disk: metrics.jsonl, TensorBoard scalars and state.json.

The recorder is an event sink placed in front of the UI's sink, so the
headless CLI and the dashboard leave identical run folders. Only rank 0 of a
distributed run gets one.

state.json doubles as the trainer's heartbeat (engine.runs.liveness): refreshed at
logging steps and at memory samples (the monitor's thread, so also while
paused or evaluating), at most every HEARTBEAT_S. Two threads write it, hence
the lock.

metrics.jsonl is append-only, one JSON object a line, opened without
following a symlink. A crash can leave a torn last line; it is repaired on
open (cut off, or completed when it is a whole record missing its newline).
Each session starts with a `RunStarted` record; a resumed run replays the
steps after its checkpoint, so a step can appear twice: the later record
supersedes the earlier one and everything logged after it (engine.runs.reader
reads the file by that rule). TensorBoard gets `purge_step`, so its curves do
not overlap either.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from engine import events as ev
from engine.errors import FileError
from engine.files import ensure_folder, open_append, os_reason
from engine.runs.folder import update_state
from engine.runs.layout import METRICS, TENSORBOARD

HEARTBEAT_S = 1.0


def repair_tail(path: Path) -> bool:
    """Make `path` end with a complete line; returns True when it had to be repaired."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return False
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return False
            back = min(size, 1 << 20)  # a record is far shorter than 1 MiB
            f.seek(size - back)
            tail = f.read(back)
            cut = tail.rfind(b"\n") + 1  # 0 when the file is one torn line
            try:
                json.loads(tail[cut:])
                f.write(b"\n")  # a whole record that lost only its newline
            except ValueError:
                f.truncate(size - back + cut)
            return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise FileError(f"cannot repair {path}: {os_reason(e)}") from None


class RunRecorder:
    def __init__(self, run_dir: Path, downstream: ev.EventSink, *, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.downstream = downstream
        repair_tail(run_dir / METRICS)
        self._metrics = open_append(run_dir / METRICS)
        self._tensorboard = tensorboard
        self._tb: Any = None  # opened at RunStarted, which knows the step to purge from
        self._step = 0  # latest training step seen: memory samples carry none of their own
        self._state_lock = threading.Lock()
        self._beat_at = 0.0

    def __call__(self, event: ev.Event) -> None:
        self._record(event)
        self.downstream(event)

    def _line(self, event: ev.Event) -> None:
        if self._metrics.closed:
            return
        try:
            self._metrics.write(json.dumps({"time": time.time(), **event.to_dict()}) + "\n")
        except OSError as e:
            raise FileError(f"cannot write {self.run_dir / METRICS}: {os_reason(e)}") from None

    def _open_tensorboard(self, start_step: int) -> None:
        if not self._tensorboard or self._tb is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        # Events logged after the checkpoint by an earlier session are replayed now: drop them.
        purge = start_step + 1 if start_step > 0 else None
        self._tb = SummaryWriter(str(ensure_folder(self.run_dir / TENSORBOARD)), purge_step=purge)

    def _state(self, **values: Any) -> None:
        with self._state_lock:
            update_state(self.run_dir, **values)

    def _heartbeat(self, **values: Any) -> None:
        now = time.monotonic()
        if now - self._beat_at >= HEARTBEAT_S and not self._metrics.closed:
            self._beat_at = now
            self._state(**values)

    def _scalars(self, step: int, prefix: str, values: dict[str, float]) -> None:
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{prefix}/{name}", value, step)

    def _record(self, e: ev.Event) -> None:
        if isinstance(e, ev.RunStarted):
            self._step = e.start_step
            self._line(e)  # marks a session: later records of a step supersede earlier ones
            self._open_tensorboard(e.start_step)
            self._state(status="running", step=e.start_step, total_steps=e.total_steps,
                        world_size=e.world_size, num_params=e.num_params, message="")
        elif isinstance(e, ev.StepMetrics):
            # Seconds between logging steps, so a watcher knows when silence means trouble.
            expected = (e.step - self._step) * e.step_time_s
            self._step = e.step
            self._line(e)
            self._heartbeat(step=e.step, tokens_seen=e.tokens_seen, heartbeat_s=round(expected, 3))
            self._scalars(e.step, "train", {how.tb: getattr(e, name) for name, how, _ in ev.shown_fields(ev.StepMetrics)
                                            if how.tb and getattr(e, name) is not None})
        elif isinstance(e, ev.EvalResult):
            self._line(e)
            self._scalars(e.step, e.split, {"loss": e.loss, "perplexity": e.perplexity,
                                            "word_perplexity": e.word_perplexity,
                                            "bits_per_byte": e.bits_per_byte})
            if e.split == "valid":
                self._state(last_val_loss=e.loss, last_val_ppl=e.perplexity,
                            last_word_ppl=e.word_perplexity, last_val_partial=e.partial)
        elif isinstance(e, ev.CheckpointSaved):
            self._line(e)
            self._state(step=e.step, last_checkpoint=Path(e.path).name,
                        last_checkpoint_time=time.time())
        elif isinstance(e, ev.SampleGenerated):
            self._line(e)
            if self._tb is not None:
                self._tb.add_text("sample", e.text, e.step)
        elif isinstance(e, ev.MemorySample):
            self._heartbeat(memory={k: v for k, v in e.to_dict().items() if k != "event"})  # for a watcher
            if self._tb is not None:
                self._tb.add_scalar("memory/used_gib", e.used_bytes / 1024**3, self._step)
        elif isinstance(e, ev.SettingsChanged):
            self._line(e)  # which settings a resume changed, from which step
        elif isinstance(e, ev.Paused):
            self._state(status="paused", step=e.step)
        elif isinstance(e, ev.Resumed):
            self._state(status="running", step=e.step)
        elif isinstance(e, ev.Finished):
            self._line(e)
            self._state(status="stopped" if e.stopped else "finished", step=e.step)
            self.close()
        elif isinstance(e, ev.Failed):
            # Best effort: the failure may be the disk itself, and the message must still reach the user.
            try:
                self._line(e)
                self._state(status="crashed", message=e.message)
            except FileError:
                pass
            self.close()

    def close(self) -> None:
        if self._tb is not None:
            try:
                self._tb.close()
            except OSError:
                pass
            self._tb = None
        if not self._metrics.closed:
            try:
                self._metrics.close()
            except OSError:
                pass
