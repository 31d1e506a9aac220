"""A run's history as compact arrays: curves, evaluations, samples, checkpoints, replays resolved.

`RunHistory` is fed the records of metrics.jsonl in file order (`add` for a
parsed record, `feed` for raw bytes, with a fast path for step records). The
curves are arrays (step, tokens seen, value, byte offset of the record: 32
bytes a point), so a million logged steps take 32 MB per curve and any full
record can be read back by its offset.

The replay rule, the only one: a resumed run logs again the steps after its
checkpoint, so a step written again supersedes the earlier record of that
step and everything logged after it (steps, evaluations, samples,
checkpoints). engine.runs.reader opens, backfills and downsamples it; every
view of a run (dashboard, watch, browse, compare, summary) reads it there.
Torch-free.
"""

from __future__ import annotations

import json
import mmap
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Any

STEP_TAG = b'"event": "StepMetrics"'
# The recorder writes every record with json.dumps' default separators; for the
# million-line case a step record's four plotted fields are cut out of the line
# directly (about 4x faster than json.loads). Anything unexpected falls back to json.
_T_STEP, _T_LOSS, _T_LR, _T_TOKENS = b'"step": ', b'"loss": ', b'"lr": ', b'"tokens_seen": '


def _value(line: bytes, tag: bytes) -> bytes:
    i = line.index(tag) + len(tag)
    j = line.find(b",", i)
    return line[i:j if j >= 0 else line.index(b"}", i)]


def fast_step(line: bytes) -> tuple[int, float, float, int] | None:
    """(step, loss, lr, tokens_seen) of a StepMetrics line; None when it is not in the expected layout."""
    try:
        return (int(_value(line, _T_STEP)), float(_value(line, _T_LOSS)), float(_value(line, _T_LR)),
                int(_value(line, _T_TOKENS)))
    except ValueError:
        return None


def loads_record(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None  # a damaged line: skipped, as the recorder's own reader does
    return row if isinstance(row, dict) else None


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

    def _cut(self, step: int) -> None:
        for curve in (self.train, self.lr, self.valid):
            curve.cut(step)
        for rows in (self.evals, self.samples, self.checkpoints):
            rows[:] = [r for r in rows if r.get("step", 0) < step]
        if self.test is not None and self.test.get("step", 0) >= step:
            self.test = None

    def cut_from(self, step: int) -> None:
        """Forget every record at `step` and after: what a session resumed at step - 1 is about to log again."""
        self._cut(step)
        self.last_step = self.record_at(self.train.offset[-1]) if self.train else None
        self.end = None

    def add_step(self, step: int, loss: float, lr: float, tokens: int, offset: int) -> int | None:
        """A step record; returns `step` when it replays a logged step (the records from it on are superseded)."""
        replayed = step if self.train and step <= self.train.x[-1] else None
        if replayed is not None:
            self._cut(step)
        self.train.add(step, tokens, loss, offset)
        self.lr.add(step, tokens, lr, offset)
        self.end = None
        return replayed

    def add(self, row: dict[str, Any], offset: int) -> int | None:
        """One record of metrics.jsonl, in file order; the step a replay starts at, else None."""
        self.records += 1
        kind = row.get("event")
        try:
            if kind == "StepMetrics":
                replayed = self.add_step(int(row["step"]), float(row["loss"]), float(row["lr"]),
                                         int(row["tokens_seen"]), offset)
                self.last_step = row
                return replayed
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
        return None

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
            if STEP_TAG in line:
                try:  # fast_step, inlined: this runs a million times
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
            row = loads_record(line)
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
                return loads_record(f.readline())
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
