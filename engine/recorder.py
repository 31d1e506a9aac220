"""Writes a run's events to disk: metrics.jsonl, TensorBoard scalars and state.json.

The recorder is an event sink placed in front of the UI's sink, so the
headless CLI and the dashboard leave identical run folders. Only rank 0 of a
distributed run gets one.

state.json doubles as the trainer's heartbeat (engine.liveness): refreshed at
logging steps and at memory samples (the monitor's thread, so also while
paused or evaluating), at most every HEARTBEAT_S. Two threads write it, hence
the lock.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from engine import events as ev
from engine.runs import update_state

HEARTBEAT_S = 1.0


class RunRecorder:
    def __init__(self, run_dir: Path, downstream: ev.EventSink, *, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.downstream = downstream
        self._metrics = open(run_dir / "metrics.jsonl", "a", buffering=1)
        self._tb: Any = None
        self._step = 0  # latest training step seen: memory samples carry none of their own
        self._state_lock = threading.Lock()
        self._beat_at = 0.0
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def __call__(self, event: ev.Event) -> None:
        self._record(event)
        self.downstream(event)

    def _line(self, event: ev.Event) -> None:
        self._metrics.write(json.dumps({"time": time.time(), **event.to_dict()}) + "\n")

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
            self._state(status="running", step=e.start_step, total_steps=e.total_steps,
                        world_size=e.world_size, num_params=e.num_params, message="")
        elif isinstance(e, ev.StepMetrics):
            # Seconds between logging steps, so a watcher knows when silence means trouble.
            expected = (e.step - self._step) * e.step_time_s
            self._step = e.step
            self._line(e)
            self._heartbeat(step=e.step, tokens_seen=e.tokens_seen, heartbeat_s=round(expected, 3))
            self._scalars(e.step, "train", {"loss": e.loss, "lr": e.lr, "grad_norm": e.grad_norm,
                                            "tokens_per_s": e.tokens_per_s})
        elif isinstance(e, ev.EvalResult):
            self._line(e)
            self._scalars(e.step, e.split, {"loss": e.loss, "perplexity": e.perplexity,
                                            "word_perplexity": e.word_perplexity,
                                            "bits_per_byte": e.bits_per_byte})
            if e.split == "valid":
                self._state(last_val_loss=e.loss, last_val_ppl=e.perplexity,
                            last_word_ppl=e.word_perplexity)
        elif isinstance(e, ev.CheckpointSaved):
            self._line(e)
            self._state(step=e.step, last_checkpoint=Path(e.path).name,
                        last_checkpoint_time=time.time())
        elif isinstance(e, ev.SampleGenerated):
            self._line(e)
            if self._tb is not None:
                self._tb.add_text("sample", e.text, e.step)
        elif isinstance(e, ev.MemorySample):
            self._heartbeat()
            if self._tb is not None:
                self._tb.add_scalar("memory/used_gib", e.used_bytes / 1024**3, self._step)
        elif isinstance(e, ev.Paused):
            self._state(status="paused", step=e.step)
        elif isinstance(e, ev.Resumed):
            self._state(status="running", step=e.step)
        elif isinstance(e, ev.Finished):
            self._line(e)
            self._state(status="stopped" if e.stopped else "finished", step=e.step)
            self.close()
        elif isinstance(e, ev.Failed):
            self._line(e)
            self._state(status="crashed", message=e.message)
            self.close()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if not self._metrics.closed:
            self._metrics.close()
