"""Fault injection on run folders: symlinks, reused names, torn metrics, changed data, stopped evaluations.

Real tiny CPU runs in this process; the damage is done to the real files
they leave, and the checks are on what a user sees and what is on disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.config.loading import build_config
from engine.control import TrainingControl
from engine.runs.checkpoints import checkpoint_path
from engine.runs.folder import new_run_dir
from engine.runs.reader import read_history
from engine.train.trainer import Trainer
from tests.conftest import stopped_run, tiny_config


def resume(run_dir: Path, **kw) -> tuple[ev.Event, list[ev.Event]]:
    seen: list[ev.Event] = []
    result = Trainer(build_config(None, run_dir / "run.toml"), seen.append, run_dir=run_dir, resume=True, **kw).run()
    return result, seen


# ----------------------------------------------------------------------------- symlinks

def test_resume_replaces_planted_symlinks_instead_of_writing_through_them(corpus: Path, tmp_path: Path) -> None:
    run_dir = stopped_run(corpus, tmp_path / "out")
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("run.toml", "state.json"):
        victim = outside / name
        victim.write_bytes((run_dir / name).read_bytes())  # still readable, so the run resumes
        (run_dir / name).unlink()
        (run_dir / name).symlink_to(victim)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    result, _ = resume(run_dir)
    assert isinstance(result, ev.Finished) and not result.stopped
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert not (run_dir / "run.toml").is_symlink() and not (run_dir / "state.json").is_symlink()
    assert json.loads((run_dir / "state.json").read_text())["status"] == "finished"


def test_symlinked_metrics_or_snapshots_are_refused_not_followed(corpus: Path, tmp_path: Path) -> None:
    run_dir = stopped_run(corpus, tmp_path / "out", save_interval=2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").symlink_to(victim)
    result, _ = resume(run_dir)
    assert isinstance(result, ev.Failed) and result.kind == "io"
    assert "metrics.jsonl is a symbolic link" in result.message
    assert victim.read_text() == "precious\n"

    (run_dir / "metrics.jsonl").unlink()
    elsewhere = tmp_path / "elsewhere"
    (run_dir / "snapshots").rename(elsewhere)
    (run_dir / "snapshots").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    result, _ = resume(run_dir)
    assert isinstance(result, ev.Failed) and "snapshots is a symbolic link" in result.message
    assert sorted(p.name for p in elsewhere.iterdir()) == before  # nothing written there


# ----------------------------------------------------------------------------- run names

def test_existing_folder_without_run_toml_is_refused_and_left_alone(corpus: Path, tmp_path: Path) -> None:
    mine = tmp_path / "out" / "r"
    (mine / "snapshots").mkdir(parents=True)
    (mine / "snapshots" / "step_0000001.pt").write_bytes(b"someone else's file")
    (mine / "notes.txt").write_text("keep me")
    result = Trainer(tiny_config(corpus, tmp_path / "out")).run()
    assert isinstance(result, ev.Failed) and result.kind == "config"
    assert "already exists and is not a run folder" in result.message
    assert sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*")) == [
        "notes.txt", "snapshots", "snapshots/step_0000001.pt"]


def test_generated_names_in_the_same_second_are_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "strftime", lambda *_: "20261126-101500")
    cfg = build_config("tiny", None, {"run": {"out_dir": str(tmp_path)}})
    made = [new_run_dir(cfg, "data") for _ in range(3)]
    assert [p.name for p in made] == ["tiny-20261126-101500", "tiny-20261126-101500-2", "tiny-20261126-101500-3"]


# ----------------------------------------------------------------------------- metrics.jsonl and TensorBoard

def test_crash_replay_and_torn_tail_leave_readable_metrics_and_non_overlapping_curves(corpus: Path,
                                                                                      tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def crash_at_8(e: ev.Event) -> None:
        if isinstance(e, ev.StepMetrics) and e.step == 8:
            raise RuntimeError("power cut")

    crashed = Trainer(tiny_config(corpus, tmp_path / "out", save_interval=3), crash_at_8).run()
    assert isinstance(crashed, ev.Failed) and crashed.step == 8
    run_dir = tmp_path / "out" / "r"
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"time": 1, "event": "StepMetr')  # a write cut by the crash
    result, seen = resume(run_dir)
    assert isinstance(result, ev.Finished) and not result.stopped
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is whole JSON again
    starts = [r for r in rows if r["event"] == "RunStarted"]
    assert [r["start_step"] for r in starts] == [0, 6]
    steps = [r["step"] for r in rows if r["event"] == "StepMetrics"]
    assert steps == list(range(1, 9)) + list(range(7, 13))  # steps 7 and 8 replayed after the resume mark
    history = read_history(run_dir)  # what every view plots: one point per step, the resumed session's
    assert list(history.train.x) == list(range(1, 13))
    resumed = {e.step: e.loss for e in seen if isinstance(e, ev.StepMetrics)}
    assert list(history.train.y)[6:] == [resumed[s] for s in range(7, 13)]
    assert history.records == len(rows)
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == list(range(1, 13))


# ----------------------------------------------------------------------------- data changing under a run

def test_changed_data_is_refused_then_accepted_with_the_runs_own_tokenizer(corpus: Path, tmp_path: Path) -> None:
    run_dir = stopped_run(corpus, tmp_path / "out")
    tokenizer = (run_dir / "tokenizer.json").read_bytes()
    run_toml = (run_dir / "run.toml").read_bytes()
    with open(corpus / "train.txt", "a") as f:
        f.write("an entirely new vocabulary arrives : zymurgy quixotic xylophone .\n" * 50)
    result, _ = resume(run_dir)
    assert isinstance(result, ev.Failed) and result.kind == "data"
    assert "changed since it was trained" in result.message and "--accept-data-change" in result.message
    assert (run_dir / "tokenizer.json").read_bytes() == tokenizer and (run_dir / "run.toml").read_bytes() == run_toml
    assert not checkpoint_path(run_dir, 7).exists()

    result, seen = resume(run_dir, accept_data_change=True)
    assert isinstance(result, ev.Finished) and not result.stopped
    assert (run_dir / "tokenizer.json").read_bytes() == tokenizer  # never retrained
    record = json.loads((run_dir / "data.json").read_text())
    assert len(record["changes"]) == 1 and record["fingerprint"] == record["changes"][0]["to"]
    assert any("continuing on the new data with the run's own tokenizer" in e.message
               for e in seen if isinstance(e, ev.Log))


def test_unchanged_data_resumes_from_the_same_cache_without_retokenizing(corpus: Path, tmp_path: Path) -> None:
    run_dir = stopped_run(corpus, tmp_path / "out")
    _, seen = resume(run_dir)
    logs = [e.message for e in seen if isinstance(e, ev.Log)]
    assert any(m.startswith("using cached tokens from") for m in logs)
    assert not any("training BPE" in m or m.startswith("tokenizing") for m in logs)


# ----------------------------------------------------------------------------- stop during a periodic evaluation

def test_stop_during_periodic_evaluation_does_not_wait_for_it(corpus: Path, tmp_path: Path) -> None:
    control = TrainingControl()
    seen: list[ev.Event] = []

    def sink(e: ev.Event) -> None:
        seen.append(e)
        if isinstance(e, ev.StepMetrics) and e.step == 4:  # the evaluation of step 4 starts right after
            control.stop()

    result = Trainer(tiny_config(corpus, tmp_path / "out", eval_batches=0), sink, control).run()
    assert isinstance(result, ev.Finished) and result.stopped and result.step == 4
    assert not [e for e in seen if isinstance(e, ev.EvalResult)]
    assert checkpoint_path(tmp_path / "out" / "r", 4).is_file()


def test_no_stray_files_after_a_run(corpus: Path, tmp_path: Path) -> None:
    run_dir = stopped_run(corpus, tmp_path / "out", save_interval=2)
    names = {p.name for p in run_dir.iterdir()}
    assert {"run.toml", "state.json", "data.json", "tokenizer.json", "metrics.jsonl", ".lock"} <= names
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert oct((run_dir / "run.toml").stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_listing_runs_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, engine.runs.listing, engine.runs.folder, engine.runs.checkpoints, engine.files; "
            "print(','.join(m for m in ('torch', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 640 KiB tmpfs: room for one tiny checkpoint and the run's small files, not for two checkpoints."""
    import shutil
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the file-size-limit test covers the same path")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_during_save_is_one_line_and_keeps_the_last_checkpoint(corpus: Path, small_disk: Path) -> None:
    from engine.runs.checkpoints import load_checkpoint

    result = Trainer(tiny_config(corpus, small_disk, save_interval=2, keep_checkpoints=1)).run()
    assert isinstance(result, ev.Failed) and result.kind == "io"
    assert "cannot write" in result.message and "step_0000004.pt: No space left on device" in result.message
    assert len(result.message.splitlines()) == 1 and not result.traceback
    run_dir = small_disk / "r"
    load_checkpoint(Path(result.checkpoint))  # the last checkpoint written is intact
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert json.loads((run_dir / "state.json").read_text())["status"] in ("running", "crashed")
