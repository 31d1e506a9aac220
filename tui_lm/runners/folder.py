"""The dashboard fed by a run folder instead of a trainer: the adapter behind `tui-lm watch` and the picker's attach.

`FolderRunner` has the interface of `TrainingRunner` (run in a thread worker,
`drain()`, `pause()`, `resume_training()`, `stop()`, `active`), so the same
dashboard shows a run another process trains: headless, under torchrun, on
another machine over a shared filesystem. It turns what that process leaves
in the folder into the engine events the dashboard already consumes:

- records appended to metrics.jsonl (engine.runs.reader, read by byte offset)
  become StepMetrics, EvalResult, SampleGenerated, CheckpointSaved, Finished...;
- state.json's status becomes Paused / Resumed, its heartbeat a `Failed` of
  kind "gone" when the trainer process is gone, its memory figures MemorySample;
- a new trainer process (the run resumed elsewhere) becomes a RunStarted, and
  the view follows it; the steps it logs again after its checkpoint supersede
  the shown ones from there on, as the history (the one replay rule) says.

The history before attaching does not go through events: it is posted once as
a `HistoryLoaded` of downsampled curves (min and max per plot bucket), then
again when a large file's exact backfill is done. The keys write requests
(engine.runs.requests) that the trainer takes at its next logging step.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump

from engine import events as ev
from engine.runs.history import RunHistory
from engine.runs.layout import METRICS, SNAPSHOTS
from engine.runs.liveness import ACTIVE, read_state, trainer_gone
from engine.runs.reader import MetricsReader, backfill, downsample, open_history, to_event
from engine.runs.requests import write_request
from tui_lm.messages import TrainingEvent

POLL_S = 0.5  # how often the folder is looked at
BACKFILL_DELAY_S = 1.0  # a large file's exact backfill waits this long: it holds the GIL much of the time
HISTORY_BUCKETS = 400  # plot buckets of the history (two points each: about a wide plot's dot columns)
RECENT_EVALS = 30  # evaluations of the history shown in the event log (all are on the loss plot)
MAX_PENDING = 100_000


@dataclasses.dataclass
class Curves:
    """Downsampled (x, y) lists, one pair per series, up to step `upto`."""

    train: tuple[list[float], list[float]]
    valid: tuple[list[float], list[float]]
    lr: tuple[list[float], list[float]]
    upto: int
    complete: bool


def curves_of(history: RunHistory, buckets: int = HISTORY_BUCKETS) -> Curves:
    train = history.train_points()
    upto = int(train.x[-1]) if train else 0
    return Curves(downsample(train.x, train.y, buckets), downsample(history.valid.x, history.valid.y, buckets),
                  downsample(history.lr.x, history.lr.y, buckets), upto, history.complete)


@dataclasses.dataclass(frozen=True)
class Replayed:
    """In the step buffer, in order: the history says a resumed trainer logged `step` again."""

    step: int


class HistoryLoaded(Message):
    """The run's curves so far, downsampled; the dashboard replaces its plotted history with them."""

    def __init__(self, curves: Curves) -> None:
        super().__init__()
        self.curves = curves


class FolderRunner:
    """Watches one run folder; the stand-in for TrainingRunner in an attached dashboard."""

    def __init__(self, run_dir: Path, target: MessagePump, cfg: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.target = target
        self.cfg = cfg
        self._pending: deque[ev.Event | Replayed] = deque(maxlen=MAX_PENDING)
        self._closed = threading.Event()
        self.result: ev.Event | None = None
        self.state: dict[str, Any] = {}
        self.alive = False  # a live trainer process is writing the folder
        self.trainer = ""  # who that is, for the view's header ("watching pid 123 on node7")
        self.history: RunHistory | None = None
        self._backfilled: RunHistory | None = None
        self._pid: Any = None
        self._status: Any = None
        self._gone_pid: Any = None
        self._session_record = False  # a RunStarted record announced the current process already
        # Called on the UI thread with the first replayed step, when a resumed trainer
        # logs again the steps after its checkpoint: the view drops its points from there.
        self.on_replay: Any = None

    # ------------------------------------------------------------------ dashboard side

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, (ev.StepMetrics, ev.MemorySample)):
            self._pending.append(event)
        else:
            self.target.post_message(TrainingEvent(event))

    def drain(self) -> list[ev.Event]:
        out: list[ev.Event] = []
        while self._pending:
            e = self._pending.popleft()
            if isinstance(e, Replayed):
                # Buffered steps it supersedes are dropped before they are shown; shown ones by the view.
                out = [x for x in out if not (isinstance(x, ev.StepMetrics) and x.step >= e.step)]
                if self.on_replay is not None:
                    self.on_replay(e.step)
            else:
                out.append(e)
        return out

    @property
    def active(self) -> bool:
        """True while a live trainer can take a request (the dashboard's keys)."""
        return self.alive and not self._closed.is_set()

    def pause(self) -> None:
        write_request(self.run_dir, "pause")

    def resume_training(self) -> None:
        write_request(self.run_dir, "resume")

    def stop(self) -> None:
        write_request(self.run_dir, "stop")

    def close(self) -> None:
        """Stop watching (the trainer goes on)."""
        self._closed.set()

    # ------------------------------------------------------------------ watching thread

    def run(self) -> ev.Event | None:
        try:
            self._watch()
        except Exception as e:  # a bug here must show, not kill the view silently
            self.emit(ev.Failed(message=f"cannot watch {self.run_dir}: {type(e).__name__}: {e}", step=0, kind="error"))
        return self.result

    def _watch(self) -> None:
        import numpy  # noqa: F401  (for downsampling: imported here, off the UI thread)

        reader = MetricsReader.of_run(self.run_dir)
        self.history = history = open_history(reader)
        self.state = state = read_state(self.run_dir)
        self._pid, self._status = state.get("pid"), state.get("status")
        self._announce(history, state)
        self._start_backfill(history)
        self._follow(state, first=True)
        while not self._closed.wait(POLL_S):
            rows, restarted = reader.read()
            if restarted:  # a new metrics.jsonl: everything is read again
                reader = MetricsReader.of_run(self.run_dir)
                self.history = history = open_history(reader)
                self._start_backfill(history)
                self.emit(ev.Log(f"{METRICS} was replaced; its history was read again", "warning"))
                self.target.post_message(HistoryLoaded(curves_of(history)))
                rows = []
            for offset, row in rows:
                replayed = history.add(row, offset)
                if replayed is not None:
                    self._pending.append(Replayed(replayed))
                event = to_event(row)
                if event is not None:
                    self._record(event)
            if self._backfilled is not None:
                history.merge_earlier(self._backfilled)
                self._backfilled = None
                self.target.post_message(HistoryLoaded(curves_of(history)))
            self.state = state = read_state(self.run_dir)
            self._follow(state)

    def _start_backfill(self, history: RunHistory) -> None:
        if history.pending is None:
            return
        start, end = history.pending

        def work() -> None:
            if not self._closed.wait(BACKFILL_DELAY_S):  # the attached view draws its first frame meanwhile
                self._backfilled = backfill(history.path, start, end)

        threading.Thread(target=work, name="tui-lm-backfill", daemon=True).start()

    def _announce(self, history: RunHistory, state: dict[str, Any]) -> None:
        """What a dashboard shows at attach time: the run, its curves, its recent events, the newest numbers."""
        last = to_event(history.last_step) if history.last_step else None
        self.emit(self._run_started(history.sessions[-1] if history.sessions else None, state, last))
        self.target.post_message(HistoryLoaded(curves_of(history)))
        valid = [r for r in history.evals if r.get("split") == "valid"]
        shown = valid[-RECENT_EVALS:]
        if valid and len(valid) > len(shown):
            best = min(valid, key=lambda r: r["loss"])  # the panel's "best valid" sees it too
            shown = sorted({id(r): r for r in [best, *shown]}.values(), key=lambda r: r["step"])
            self.emit(ev.Log(f"{len(valid) - len(shown)} earlier evaluations are on the plot "
                             "(browse the run for the full list)"))
        recent = shown + history.samples[-1:] + history.checkpoints[-3:]
        if history.test is not None:
            recent.append(history.test)
        for row in sorted(recent, key=lambda r: r.get("step", 0)):
            event = to_event({**row, "event": row.get("event", "EvalResult")})
            if event is not None:
                self.emit(event)
        if last is not None:
            self.emit(last)
        if history.end is not None:
            self._record(to_event(history.end))

    def _run_started(self, record: dict[str, Any] | None, state: dict[str, Any],
                     last: ev.Event | None) -> ev.RunStarted:
        step = getattr(last, "step", 0) or int(state.get("step", 0) or 0)
        total = int(state.get("total_steps", 0) or getattr(last, "total_steps", 0) or 0)
        if record is not None and (started := to_event(record)) is not None:
            assert isinstance(started, ev.RunStarted)
            # The trainer's own paths may be relative to its working folder; the view shows this one.
            return dataclasses.replace(started, run_dir=str(self.run_dir), resumed_from="", start_step=step)
        tokens = 0
        if self.cfg is not None:
            tokens = self.cfg.train.batch_size * self.cfg.model.max_seq_len
        return ev.RunStarted(run_dir=str(self.run_dir), num_params=int(state.get("num_params", 0) or 0),
                             total_steps=total, start_step=step, steps_per_epoch=0, tokens_per_step=tokens,
                             device="", precision="", world_size=int(state.get("world_size", 1) or 1))

    def _record(self, event: ev.Event | None) -> None:
        """A record appended to metrics.jsonl, as the event it was written from."""
        if event is None:
            return
        if isinstance(event, ev.RunStarted):  # a new trainer process on this run
            self._session_record = True
            event = dataclasses.replace(event, run_dir=str(self.run_dir), resumed_from="")
        if isinstance(event, (ev.Finished, ev.Failed)):
            self.result = event
        self.emit(event)

    def _follow(self, state: dict[str, Any], first: bool = False) -> None:
        """state.json's changes: a new trainer, pause and resume, memory, a trainer that is gone."""
        status, pid = state.get("status"), state.get("pid")
        gone = trainer_gone(state)
        self.alive = status in ACTIVE and not gone
        self.trainer = (f"watching pid {pid} on {state.get('host', '?')}" if self.alive
                        else "no trainer: read from its folder")
        step = int(state.get("step", 0) or 0)
        if pid != self._pid and self.alive:
            if not self._session_record:
                last = to_event(self.history.last_step) if self.history and self.history.last_step else None
                self.emit(self._run_started(None, state, last))
            self._session_record = False
            self._pid, self._gone_pid = pid, None
        if status != self._status or first:
            checkpoint = str(self.run_dir / SNAPSHOTS / state.get("last_checkpoint", ""))
            if status == "paused" and self.alive:
                self.emit(ev.Paused(step=step, checkpoint=checkpoint))
            elif status == "running" and self._status == "paused" and self.alive:
                self.emit(ev.Resumed(step=step))
            self._status = status
        memory = state.get("memory")
        if isinstance(memory, dict) and self.alive:
            try:
                self.emit(ev.MemorySample(**memory))
            except TypeError:
                pass
        if gone and pid != self._gone_pid:
            self._gone_pid = pid
            checkpoint = state.get("last_checkpoint", "")
            self.emit(ev.Failed(
                message=f"{gone}; it was {status} at step {step:,}. Resume it with: tui-lm --no-ui --resume "
                        f"{self.run_dir} (this view follows when it starts again)",
                step=step, kind="gone", checkpoint=str(self.run_dir / SNAPSHOTS / checkpoint) if checkpoint else ""))
