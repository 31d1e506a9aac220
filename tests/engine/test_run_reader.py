"""Reading a run's history from its folder: incremental, replay-aware, progressive for big files, downsampled."""

from __future__ import annotations

import json
import math
import random
from array import array
from pathlib import Path

from engine import events as ev
from engine.runs.history import RunHistory
from engine.runs.reader import MetricsReader, backfill, downsample, open_history, read_history, to_event
from engine.train.trainer import Trainer
from tests.conftest import tiny_config  # by package: with tests/ui in the session, "conftest" may be that one


def step_line(step: int, loss: float, t: float = 0.0) -> str:
    return json.dumps(ev.StepMetrics(step=step, total_steps=10_000, epoch=0, loss=loss, lr=1e-3 * step,
                                     grad_norm=1.0, tokens_per_s=1.0, step_time_s=0.1, elapsed_s=step,
                                     tokens_seen=64 * step).to_dict() | {"time": t}) + "\n"


def eval_line(step: int, loss: float) -> str:
    return json.dumps(ev.EvalResult(step=step, split="valid", loss=loss, perplexity=math.exp(loss),
                                    word_perplexity=1.0, bits_per_byte=1.0, tokens=10, partial=True).to_dict()) + "\n"


def test_real_run_folder_reads_back_as_the_events_the_trainer_emitted(corpus: Path, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    Trainer(tiny_config(corpus, tmp_path, save_interval=4), seen.append).run()
    run_dir = tmp_path / "r"
    history = open_history(MetricsReader(run_dir / "metrics.jsonl"))
    steps = [e for e in seen if isinstance(e, ev.StepMetrics)]
    assert list(history.train.x) == [e.step for e in steps] == list(range(1, 13))
    assert list(history.train.y) == [e.loss for e in steps]
    assert list(history.train.tokens) == [e.tokens_seen for e in steps]
    valid = [e for e in seen if isinstance(e, ev.EvalResult) and e.split == "valid"]
    assert list(history.valid.x) == [e.step for e in valid] and list(history.valid.y) == [e.loss for e in valid]
    assert history.test is not None and history.end is not None and history.end["event"] == "Finished"
    assert [c["step"] for c in history.checkpoints] == [e.step for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert history.complete and history.last_step is not None and history.last_step["step"] == 12
    # Every recorded record converts back to the very event the trainer emitted.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    recorded = [e for e in seen if isinstance(e, (ev.StepMetrics, ev.EvalResult, ev.CheckpointSaved, ev.Finished))]
    assert [to_event(r) for r in rows if r["event"] != "RunStarted"] == recorded
    assert to_event({"event": "NoSuchEvent"}) is None and to_event({"event": "StepMetrics", "step": 1}) is None


def test_reader_returns_only_complete_new_lines_and_notices_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    assert reader.read() == ([], False)  # not there yet
    path.write_text(step_line(1, 5.0) + step_line(2, 4.0)[:20])  # the second line is being written
    rows, restarted = reader.read()
    assert [r["step"] for _, r in rows] == [1] and not restarted
    with open(path, "a") as f:
        f.write(step_line(2, 4.0)[20:] + "not json\n" + step_line(3, 3.0))
    rows, _ = reader.read()
    assert [r["step"] for _, r in rows] == [2, 3]  # the damaged line is skipped
    assert reader.read() == ([], False)
    path.unlink()
    path.write_text(step_line(1, 9.0))  # a new file in its place
    rows, restarted = reader.read()
    assert restarted and [r["loss"] for _, r in rows] == [9.0]


def test_replayed_steps_after_a_resume_supersede_the_earlier_records(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = [step_line(s, 10.0 - s) for s in range(1, 7)] + [eval_line(4, 7.0), eval_line(6, 6.5)]
    first.sort(key=lambda line: json.loads(line)["step"])
    second = [json.dumps({"event": "RunStarted", "start_step": 4}) + "\n"] + \
             [step_line(s, 20.0 - s) for s in range(5, 9)] + [eval_line(8, 5.0)]
    path.write_text("".join(first + second))
    history = open_history(MetricsReader(path))
    assert list(history.train.x) == list(range(1, 9))
    assert list(history.train.y) == [9, 8, 7, 6, 15, 14, 13, 12]  # steps 5, 6 from the second session
    assert list(history.valid.x) == [4, 8]  # the first session's evaluation at step 6 was replayed away
    assert len(history.sessions) == 1
    # Fed record by record (as watch does), the history says where the replay starts.
    fed, offset, replays = RunHistory(path), 0, []
    for line in first + second:
        replays.append(fed.add(json.loads(line), offset))
        offset += len(line.encode())
    assert [r for r in replays if r is not None] == [5]
    fed.cut_from(7)  # what a session resumed at step 6 logs again
    assert list(fed.train.x) == list(range(1, 7)) and fed.last_step is not None and fed.last_step["loss"] == 14.0
    assert list(fed.valid.x) == [4]


def test_large_file_opens_from_its_tail_then_backfills_exactly(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    rng = random.Random(0)
    lines = []
    for s in range(1, 3001):
        lines.append(step_line(s, 5 + rng.random()))
        if s % 100 == 0:
            lines.append(eval_line(s, 5.5))
    lines.append(json.dumps({"event": "RunStarted", "start_step": 2800}) + "\n")  # a replay across the tail
    lines += [step_line(s, 1.0) for s in range(2801, 3101)]
    path.write_text("".join(lines))
    exact = open_history(MetricsReader(path))
    reader = MetricsReader(path)
    history = open_history(reader, full_read_bytes=10_000, tail_bytes=40_000, samples=50)
    assert not history.complete and len(history.train) < 300
    shown = history.train_points()  # the whole range at once, sampled before the tail
    assert shown.x[0] <= 61 and shown.x[-1] == 3100 and len(shown) < 400
    history.merge_earlier(backfill(path, *history.pending))
    assert history.complete
    for a, b in ((history.train, exact.train), (history.lr, exact.lr), (history.valid, exact.valid)):
        assert list(a.x) == list(b.x) and list(a.y) == list(b.y) and list(a.offset) == list(b.offset)
    assert list(history.train.x) == list(range(1, 3101)) and history.train.y[-1] == 1.0
    assert [e["step"] for e in history.evals] == [e["step"] for e in exact.evals]
    import engine.runs.reader as run_reader

    monkeypatch.setattr(run_reader, "FULL_READ_BYTES", 10_000)
    monkeypatch.setattr(run_reader, "TAIL_BYTES", 40_000)
    whole = read_history(tmp_path)  # the run folder's whole history at once: tail, then backfill
    assert whole.complete and list(whole.train.y) == list(exact.train.y) and list(whole.valid.x) == list(exact.valid.x)
    # The reader goes on from the end of what was opened.
    with open(path, "a") as f:
        f.write(step_line(3101, 0.5))
    rows, _ = reader.read()
    assert [r["step"] for _, r in rows] == [3101]
    assert history.record_at(history.train.offset[0])["step"] == 1


def test_downsample_keeps_each_buckets_minimum_and_maximum() -> None:
    n = 100_000
    x = array("q", range(n))
    y = array("d", [1.0 + 0.001 * (i % 7) for i in range(n)])
    y[31_337], y[77_777] = 50.0, -3.0  # one spike up, one down
    xs, ys = downsample(x, y, 100)
    assert len(xs) <= 204 and xs == sorted(xs)
    assert 50.0 in ys and -3.0 in ys and xs[ys.index(50.0)] == 31_337
    assert xs[0] == 0 and xs[-1] == n - 1
    y.append(2.0)  # the curve stays appendable after being plotted
    assert downsample(array("q", [1, 2]), array("d", [3.0, 4.0]), 100) == ([1, 2], [3.0, 4.0])
