"""A run's history from its folder: metrics.jsonl read incrementally by byte offset, curves downsampled for a plot.

`MetricsReader` remembers how far it has read and parses only what was
appended since (complete lines only; a line still being written waits for the
next read). A file replaced or cut shorter (a new run in the same folder) is
read again from the start, and the caller is told.

`RunHistory` keeps the curves as compact arrays (step, tokens seen, value, byte
offset of the record: 32 bytes a point), so a million logged steps take 32 MB
per curve and any full record can be read back by its offset. A resumed run
replays the steps after its checkpoint: a step written again supersedes the
earlier record and everything after it.

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

import json
import mmap
import os
from array import array
from bisect import bisect_left
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

from engine import events as ev
from engine.schedule import LRSchedule

METRICS = "metrics.jsonl"
FULL_READ_BYTES = 8 << 20  # files up to this size are parsed whole when opened (~35k steps)
TAIL_BYTES = 4 << 20  # larger ones: this much of the end exactly at once...
OVERVIEW_SAMPLES = 4096  # ...and this many step records sampled before it, until the backfill is done
CHUNK_BYTES = 4 << 20  # backfill reads this much at a time

_STEP_TAG = b'"event": "StepMetrics"'
# The recorder writes every record with json.dumps' default separators; for the
# million-line case a step record's four plotted fields are cut out of the line
# directly (about 4x faster than json.loads). Anything unexpected falls back to json.
_T_STEP, _T_LOSS, _T_LR, _T_TOKENS = b'"step": ', b'"loss": ', b'"lr": ', b'"tokens_seen": '


def _value(line: bytes, tag: bytes) -> bytes:
    i = line.index(tag) + len(tag)
    j = line.find(b",", i)
    return line[i:j if j >= 0 else line.index(b"}", i)]


def _fast_step(line: bytes) -> tuple[int, float, float, int] | None:
    """(step, loss, lr, tokens_seen) of a StepMetrics line; None when it is not in the expected layout."""
    try:
        return (int(_value(line, _T_STEP)), float(_value(line, _T_LOSS)), float(_value(line, _T_LR)),
                int(_value(line, _T_TOKENS)))
    except ValueError:
        return None


def iter_lines(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each complete line in data[start:end] (end at a line boundary)."""
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            return
        yield pos, data[pos:nl]
        pos = nl + 1


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None  # a damaged line: skipped, as the recorder's own reader does
    return row if isinstance(row, dict) else None


class MetricsReader:
    """Reads the lines appended to a metrics.jsonl since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0  # end of the last complete line read
        self._identity: tuple[int, int] | None = None

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
                if (row := _loads(line)) is not None]
        self.offset += end
        return rows, restarted


# ----------------------------------------------------------------------------- history


class Curve:
    """Points in step order: x (step), tokens seen at that step, y, and the record's byte offset."""

    __slots__ = ("x", "tokens", "y", "offset")

    def __init__(self) -> None:
        self.x, self.tokens, self.y, self.offset = array("q"), array("q"), array("d"), array("q")

    def __len__(self) -> int:
        return len(self.x)

    def add(self, x: int, tokens: int, y: float, offset: int) -> None:
        if self.x and x <= self.x[-1]:
            self.cut(x)  # a replayed step: the later record wins
        self.x.append(x)
        self.tokens.append(tokens)
        self.y.append(y)
        self.offset.append(offset)

    def cut(self, x: int) -> None:
        """Drop the points at step `x` and after."""
        i = bisect_left(self.x, x)
        for a in (self.x, self.tokens, self.y, self.offset):
            del a[i:]

    def before(self, x: float) -> Curve:
        """A copy of the points before step `x`."""
        out, i = Curve(), bisect_left(self.x, x)
        out.x, out.tokens, out.y, out.offset = self.x[:i], self.tokens[:i], self.y[:i], self.offset[:i]
        return out

    def joined(self, later: Curve) -> Curve:
        out = Curve()
        out.x, out.tokens, out.y, out.offset = (self.x + later.x, self.tokens + later.tokens,
                                                self.y + later.y, self.offset + later.offset)
        return out


class RunHistory:
    """Everything metrics.jsonl says about a run, replays resolved."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.train, self.lr, self.valid = Curve(), Curve(), Curve()
        self.evals: list[dict[str, Any]] = []  # every EvalResult record (valid and test)
        self.samples: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []  # RunStarted records (written by newer recorders)
        self.last_step: dict[str, Any] | None = None  # the newest StepMetrics record, whole
        self.end: dict[str, Any] | None = None  # Finished or Failed, cleared when a later session appends
        self.test: dict[str, Any] | None = None
        self.records = 0
        self.overview: Curve | None = None  # sampled train points before the exact part, until backfilled
        self.pending: tuple[int, int] | None = None  # byte range still to read exactly

    # ------------------------------------------------------------------ feeding

    def _replay(self, step: int) -> None:
        if self.train and step <= self.train.x[-1]:
            for curve in (self.train, self.lr, self.valid):
                curve.cut(step)
            for rows in (self.evals, self.samples, self.checkpoints):
                rows[:] = [r for r in rows if r.get("step", 0) < step]

    def add_step(self, step: int, loss: float, lr: float, tokens: int, offset: int) -> None:
        self._replay(step)
        self.train.add(step, tokens, loss, offset)
        self.lr.add(step, tokens, lr, offset)
        self.end = None

    def add(self, row: dict[str, Any], offset: int) -> None:
        """One record of metrics.jsonl, in file order."""
        self.records += 1
        kind = row.get("event")
        try:
            if kind == "StepMetrics":
                self.add_step(int(row["step"]), float(row["loss"]), float(row["lr"]), int(row["tokens_seen"]), offset)
                self.last_step = row
            elif kind == "EvalResult":
                self.evals.append(row)
                if row.get("split") == "valid":
                    self.valid.add(int(row["step"]), self.tokens_at(int(row["step"])), float(row["loss"]), offset)
                elif row.get("split") == "test":
                    self.test = row
            elif kind == "SampleGenerated":
                self.samples.append(row)
            elif kind == "CheckpointSaved":
                self.checkpoints.append(row)
            elif kind == "RunStarted":
                self.sessions.append(row)
                self.end = None
            elif kind in ("Finished", "Failed"):
                self.end = row
                if kind == "Finished" and isinstance(row.get("test"), dict):
                    self.test = row["test"]
        except (KeyError, TypeError, ValueError):
            pass  # a record missing a field is skipped, never fatal

    def feed(self, data: bytes | mmap.mmap, start: int, end: int) -> None:
        """Every complete line of data[start:end] (file offsets: data is the whole file or from 0)."""
        train, lr = self.train, self.lr
        tx, tt, ty, to = train.x.append, train.tokens.append, train.y.append, train.offset.append
        lx, lt, ly, lo = lr.x.append, lr.tokens.append, lr.y.append, lr.offset.append
        last = train.x[-1] if train else -1
        pos = start
        # The hot loop of a million-line file: a step record in the recorder's layout is
        # appended in place; anything else (or a replayed step) takes the general path.
        for line in data[start:end].split(b"\n"):
            here, pos = pos, pos + len(line) + 1
            if not line:
                continue
            if _STEP_TAG in line:
                try:  # _fast_step, inlined: this runs a million times
                    i = line.index(_T_STEP) + 8
                    step = int(line[i:line.index(b",", i)])
                    i = line.index(_T_LOSS) + 8
                    loss = float(line[i:line.index(b",", i)])
                    i = line.index(_T_LR) + 6
                    rate = float(line[i:line.index(b",", i)])
                    i = line.index(_T_TOKENS) + 15
                    j = line.find(b",", i)
                    tokens = int(line[i:j if j >= 0 else line.index(b"}", i)])
                except ValueError:
                    step = -1
                if step > last:
                    tx(step), tt(tokens), ty(loss), to(here)
                    lx(step), lt(tokens), ly(rate), lo(here)
                    last = step
                    self.records += 1
                    self.end = None
                    continue
            row = _loads(line)
            if row is not None:
                self.add(row, here)
                last = train.x[-1] if train else -1
        if train:
            self.last_step = self.record_at(train.offset[-1]) or self.last_step

    def tokens_at(self, step: int) -> int:
        """Tokens seen at `step`, from the train curve (evaluations do not record it)."""
        if not self.train:
            return 0
        i = min(bisect_left(self.train.x, step), len(self.train) - 1)
        x, tokens = self.train.x[i], self.train.tokens[i]
        return round(tokens * step / x) if x else 0

    def record_at(self, offset: int) -> dict[str, Any] | None:
        """The whole record at a byte offset (a plotted point's every field)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return _loads(f.readline())
        except OSError:
            return None

    # ------------------------------------------------------------------ large files

    def merge_earlier(self, early: RunHistory) -> None:
        """Put the exactly read beginning of the file in front of what this history holds."""
        first = self.train.x[0] if self.train else float("inf")
        self.train = early.train.before(first).joined(self.train)
        self.lr = early.lr.before(first).joined(self.lr)
        self.valid = early.valid.before(min(first, self.valid.x[0] if self.valid else first)).joined(self.valid)
        for name in ("evals", "samples", "checkpoints"):
            earlier = [r for r in getattr(early, name) if r.get("step", 0) < first]
            setattr(self, name, earlier + getattr(self, name))
        self.sessions = early.sessions + self.sessions
        self.test = self.test or early.test
        self.records += early.records
        self.overview, self.pending = None, None

    def train_points(self) -> Curve:
        """The train curve as it can be drawn now: sampled overview, then the exact part."""
        if self.overview is None:
            return self.train
        first = self.train.x[0] if self.train else float("inf")
        return self.overview.before(first).joined(self.train)

    @property
    def complete(self) -> bool:
        return self.pending is None


def _map(path: Path) -> tuple[Any, mmap.mmap | None]:
    f = open(path, "rb")
    size = os.fstat(f.fileno()).st_size
    return f, (mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None)


def open_history(reader: MetricsReader, *, full_read_bytes: int = FULL_READ_BYTES, tail_bytes: int = TAIL_BYTES,
                 samples: int = OVERVIEW_SAMPLES) -> RunHistory:
    """The run's history as far as the file goes now; `reader` continues from there.

    A file larger than `full_read_bytes` is read exactly only in its last
    `tail_bytes`; before that the train curve is sampled and `pending` names
    the range `backfill()` still has to read.
    """
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
            fast = _fast_step(line) if _STEP_TAG in line else None
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
