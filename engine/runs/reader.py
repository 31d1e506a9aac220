"""The one reader of metrics.jsonl: a run's history from its folder, incremental, progressive, downsampled.

`read_history(run_dir)` is the whole history, read exactly; `open_history`
shows a large file at once and `backfill` completes it (browse, compare,
watch). `MetricsReader` remembers how far it has read and parses only what
was appended since (complete lines only; a line still being written waits for
the next read). A file replaced or cut shorter (a new run in the same folder)
is read again from the start, and the caller is told.

The records go into an engine.runs.history.RunHistory, which holds the replay
rule (a step written again supersedes what was logged from it on).

Opening a large file does not parse it all: the last `TAIL_BYTES` are read
exactly and `OVERVIEW_SAMPLES` records are sampled at even byte offsets before
that, so the whole history shows at once; `backfill()` (meant for a worker
thread) then reads the beginning exactly and `merge_earlier()` swaps it in.
`downsample()` reduces a curve to at most two points per plot bucket, the
bucket's minimum and maximum, so a spike survives any zoom level.

Torch-free (numpy only, for downsampling); the dashboard's watch and browse
views import it.
"""

from __future__ import annotations

import mmap
import os
from array import array
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

from engine import events as ev
from engine.config.schedule import LRSchedule
from engine.runs.history import STEP_TAG, Curve, RunHistory, fast_step, loads_record
from engine.runs.layout import METRICS

FULL_READ_BYTES = 8 << 20  # files up to this size are parsed whole when opened (~35k steps)
TAIL_BYTES = 2 << 20  # larger ones: this much of the end exactly at once (~8k steps)...
OVERVIEW_SAMPLES = 2048  # ...and this many step records sampled before it (4 per column of a wide plot)
CHUNK_BYTES = 4 << 20  # backfill reads this much at a time


def iter_lines(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each complete line in data[start:end] (end at a line boundary)."""
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            return
        yield pos, data[pos:nl]
        pos = nl + 1


class MetricsReader:
    """Reads the lines appended to a metrics.jsonl since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0  # end of the last complete line read
        self._identity: tuple[int, int] | None = None

    @classmethod
    def of_run(cls, run_dir: Path) -> MetricsReader:
        return cls(Path(run_dir) / METRICS)

    def start_at(self, offset: int) -> None:
        """Continue from `offset` (a line boundary) of the file as it is now."""
        try:
            st = self.path.stat()
            self._identity = (st.st_dev, st.st_ino)
        except OSError:
            self._identity = None
        self.offset = offset

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self, limit: int | None = None) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """(new records with their offsets, restarted); restarted means the file was replaced or cut."""
        try:
            st = self.path.stat()
        except OSError:
            return [], False
        identity = (st.st_dev, st.st_ino)
        restarted = self._identity is not None and (identity != self._identity or st.st_size < self.offset)
        self._identity = identity
        if restarted:
            self.offset = 0
        if st.st_size <= self.offset:
            return [], restarted
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset if limit is None else min(limit, st.st_size - self.offset))
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        rows = [(self.offset + pos, row) for pos, line in iter_lines(data, 0, end)
                if (row := loads_record(line)) is not None]
        self.offset += end
        return rows, restarted


# ----------------------------------------------------------------------------- history


def _map(path: Path) -> tuple[Any, mmap.mmap | None]:
    f = open(path, "rb")
    size = os.fstat(f.fileno()).st_size
    return f, (mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None)


def open_history(reader: MetricsReader, *, full_read_bytes: int | None = None, tail_bytes: int | None = None,
                 samples: int | None = None) -> RunHistory:
    """The run's history as far as the file goes now; `reader` continues from there.

    A file larger than `full_read_bytes` is read exactly only in its last
    `tail_bytes`; before that the train curve is sampled and `pending` names
    the range `backfill()` still has to read. (Defaults: the module's constants.)
    """
    full_read_bytes = FULL_READ_BYTES if full_read_bytes is None else full_read_bytes
    tail_bytes = TAIL_BYTES if tail_bytes is None else tail_bytes
    samples = OVERVIEW_SAMPLES if samples is None else samples
    history = RunHistory(reader.path)
    size = reader.size()
    if size <= full_read_bytes:
        rows, _ = reader.read()
        for offset, row in rows:
            history.add(row, offset)
        return history
    f, mm = _map(reader.path)
    try:
        assert mm is not None
        start = mm.find(b"\n", size - tail_bytes) + 1  # the first whole line of the tail
        end = mm.rfind(b"\n") + 1
        history.feed(mm, start, end)
        history.overview = _sample(mm, 0, start, samples)
        history.pending = (0, start)
        reader.start_at(end)
    finally:
        if mm is not None:
            mm.close()
        f.close()
    return history


def read_history(run_dir: Path) -> RunHistory:
    """A run folder's whole history, read exactly (a large file takes a while: a worker thread's call)."""
    history = open_history(MetricsReader.of_run(run_dir))
    if history.pending is not None:
        history.merge_earlier(backfill(history.path, *history.pending))
    return history


def _sample(mm: mmap.mmap, start: int, end: int, count: int) -> Curve:
    """Step records at `count` even byte offsets of mm[start:end] (the first step record at or after each)."""
    curve = Curve()
    last = -1
    for i in range(count):
        pos = start + (end - start) * i // count
        if pos > start:
            pos = mm.find(b"\n", pos - 1, end) + 1
        for _ in range(8):  # a few lines on, past evaluations and checkpoints
            if pos <= last or pos == 0 and i:  # pos 0 after start: no newline found
                break
            nl = mm.find(b"\n", pos, end)
            if nl < 0:
                break
            line = mm[pos:nl]
            fast = fast_step(line) if STEP_TAG in line else None
            if fast is not None:
                step, loss, _, tokens = fast
                curve.add(step, tokens, loss, pos)
                last = pos
                break
            pos = nl + 1
    return curve


def backfill(path: Path, start: int, end: int, progress: Callable[[float], None] | None = None) -> RunHistory:
    """The exact history of path[start:end] (a worker thread's job; touches nothing shared)."""
    early = RunHistory(path)
    f, mm = _map(path)
    try:
        if mm is None:
            return early
        pos = start
        while pos < end:
            stop = min(end, pos + CHUNK_BYTES)
            if stop < end:
                stop = mm.rfind(b"\n", pos, stop) + 1 or end
            early.feed(mm, pos, stop)
            pos = stop
            if progress is not None:
                progress((pos - start) / max(1, end - start))
    finally:
        if mm is not None:
            mm.close()
        f.close()
    return early


# ----------------------------------------------------------------------------- plotting and events


def downsample(x: array, y: array, buckets: int) -> tuple[list[float], list[float]]:
    """At most about 2 x `buckets` points of the curve (x, y): each bucket's minimum and maximum, in order.

    Buckets hold equal numbers of consecutive points (steps are logged at a
    fixed interval, so that is equal widths of the x axis too). The first and
    last points are always kept, so the curve spans its whole range.
    """
    n = len(x)
    if n <= 2 * buckets:
        return list(x), list(y)
    import numpy as np

    xs = np.frombuffer(x, dtype=np.int64 if x.typecode == "q" else np.float64)
    ys = np.frombuffer(y, dtype=np.float64)
    k = -(-n // buckets)
    m = n // k
    body = ys[: m * k].reshape(m, k)
    base = np.arange(m) * k
    keep = [body.argmin(axis=1) + base, body.argmax(axis=1) + base, np.array([0, n - 1])]
    if m * k < n:
        rest = ys[m * k:]
        keep.append(np.array([m * k + int(rest.argmin()), m * k + int(rest.argmax())]))
    idx = np.unique(np.concatenate(keep))
    out = xs[idx].tolist(), ys[idx].tolist()
    del xs, ys, body  # release the views: the arrays must stay appendable
    return out


def to_event(row: dict[str, Any]) -> ev.Event | None:
    """The engine event a metrics.jsonl record was written from; None for an unknown or damaged one."""
    cls = getattr(ev, str(row.get("event")), None)
    if not (isinstance(cls, type) and issubclass(cls, ev.Event)) or cls is ev.Event:
        return None
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in row.items() if k in names}
    if cls is ev.Finished and isinstance(values.get("test"), dict):
        values["test"] = to_event({**values["test"], "event": "EvalResult"})
    if cls is ev.RunStarted and isinstance(values.get("schedule"), dict):
        try:
            values["schedule"] = LRSchedule(**values["schedule"])
        except TypeError:
            values["schedule"] = None
    try:
        return cls(**values)
    except TypeError:
        return None
