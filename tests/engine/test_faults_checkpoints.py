"""Fault injection on checkpoints: damaged sidecars and tensors files are named, skipped, never fatal.

Every case damages real files written by the real code (a tiny CPU run or
save_checkpoint), then checks what a user would notice: which checkpoint a
resume uses, what it says, and which files are left on disk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine import events as ev
from engine.config.loading import build_config
from engine.errors import CheckpointError
from engine.files import hash_file
from engine.runs.checkpoints import (
    MODEL,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from engine.runs.listing import read_run
from engine.train.trainer import Trainer
from tests.conftest import stopped_run

SIDECAR_DAMAGE = {
    "garbage": b"\x00\xff\xfe not json at all",
    "empty": b"",
    "truncated": b'{"format_version": 1, "file": "step_0000006.pt", "by',
    "wrong shape": b"[1, 2]",
    "wrong field type": b'{"format_version": 1, "bytes": "many", "step": 6}',
}


def resume_state(step: int) -> dict:
    return {"model": {"w": torch.full((4,), float(step))}, "optimizer": {}, "scaler": {}, "rng": [],
            "loader": {"epoch": 0, "step_in_epoch": step}, "config": {},
            "trainer": {"step": step, "tokens_seen": 0, "best_val_loss": 1.0, "elapsed_s": 0.0}}


def save(run: Path, step: int, best: bool = False) -> Path:
    path = checkpoint_path(run, step)
    save_checkpoint(path, resume_state(step), {"step": step, "best": best})
    return path


def flip_bytes(path: Path, count: int = 100) -> None:
    """Bit rot: flip `count` bytes in the middle of the file, keeping its size."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- unit level

@pytest.mark.parametrize("damage", list(SIDECAR_DAMAGE))
def test_damaged_sidecar_is_named_skipped_and_never_breaks_pruning(tmp_path: Path, damage: str) -> None:
    (tmp_path / "run.toml").write_text('[run]\npreset = "tiny"\n')
    for step in (2, 4, 6):
        save(tmp_path, step)
    bad = checkpoint_path(tmp_path, 6)
    bad.with_suffix(".json").write_bytes(SIDECAR_DAMAGE[damage])
    warnings: list[str] = []
    path, state = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert path == checkpoint_path(tmp_path, 4) and state["trainer"]["step"] == 4
    assert len(warnings) == 1 and "step_0000006.json" in warnings[0] and "skipping" in warnings[0]
    # The damaged one never counts as kept, and is left alone while it is the newest.
    prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000004.pt", "step_0000006.pt"]
    info = read_run(tmp_path)  # the resume picker lists it, from the newest readable sidecar
    assert info.last_checkpoint == "step_0000004.pt" and info.step == 4 and not info.problem
    # Once a newer good checkpoint exists, the damaged one goes like any older one.
    save(tmp_path, 8)
    prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000008.pt"]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step_0000008.json", "step_0000008.pt"]


def test_checkpoint_without_expected_keys_is_skipped(tmp_path: Path) -> None:
    save(tmp_path, 2)
    path = checkpoint_path(tmp_path, 4)
    # A valid file and checksum, no optimizer (as a model-only checkpoint).
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}}, {"step": 4}, parts=(MODEL,))
    with pytest.raises(CheckpointError, match=r"step_0000004.pt has no valid 'optimizer' entry"):
        load_checkpoint(path)
    warnings: list[str] = []
    found, _ = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert found == checkpoint_path(tmp_path, 2) and "step_0000004.pt" in warnings[0]


def test_checksum_recorded_while_writing_and_bit_rot_detected(tmp_path: Path, monkeypatch) -> None:
    import engine.files

    def no_rereading(*_a, **_k):
        raise AssertionError("saving must not read the file back to checksum it")

    monkeypatch.setattr(engine.files, "hash_file", no_rereading)
    good, bad = save(tmp_path, 2), save(tmp_path, 4)
    monkeypatch.undo()
    meta = json.loads(bad.with_suffix(".json").read_text())
    assert meta["xxh3_128"] == hash_file(bad) and meta["bytes"] == bad.stat().st_size
    flip_bytes(bad)
    with pytest.raises(CheckpointError, match=r"step_0000004.pt is corrupt \(its checksum does not match"):
        load_checkpoint(bad)
    skipped: list[Path] = []
    path, state = load_latest_checkpoint(tmp_path, skipped=skipped)
    assert path == good and skipped == [bad]
    # The last checkpoint that verified is never pruned in favour of a corrupt one.
    prune_checkpoints(tmp_path, keep=1, bad=skipped)
    assert good.is_file() and good.with_suffix(".json").is_file()


def test_pickled_objects_are_refused_without_torchs_advice(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, 5)
    path.parent.mkdir(parents=True)
    torch.save({"format_version": 1, "evil": Path("/")}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "step_0000005.pt" in str(e.value) and "weights_only" not in str(e.value)
    assert len(str(e.value).splitlines()) == 1


# ----------------------------------------------------------------------------- real runs

def resume(run_dir: Path) -> tuple[ev.Event, list[ev.Event]]:
    seen: list[ev.Event] = []
    result = Trainer(build_config(None, run_dir / "run.toml"), seen.append, run_dir=run_dir, resume=True).run()
    return result, seen


@pytest.mark.parametrize("damage", ["garbage", "wrong shape"])
def test_resume_with_damaged_sidecar_finishes_and_keeps_pruning(corpus: Path, tmp_path: Path, damage: str) -> None:
    run_dir = stopped_run(corpus, tmp_path, save_interval=2, keep_checkpoints=2)
    checkpoint_path(run_dir, 6).with_suffix(".json").write_bytes(SIDECAR_DAMAGE[damage])
    result, seen = resume(run_dir)
    assert isinstance(result, ev.Finished) and not result.stopped and result.step == 12
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.resumed_from.endswith("step_0000004.pt")
    warned = [e.message for e in seen if isinstance(e, ev.Log) and e.level == "warning"]
    assert any("step_0000006.json" in m for m in warned)
    snaps = sorted(p.name for p in (run_dir / "snapshots").glob("*.pt"))
    assert len(snaps) <= 3 and "step_0000012.pt" in snaps  # keep 2 + best, no pile-up


def test_resume_skips_bit_rotted_checkpoint_and_trains_on_good_weights(corpus: Path, tmp_path: Path) -> None:
    run_dir = stopped_run(corpus, tmp_path, save_interval=2, keep_checkpoints=1)
    flip_bytes(checkpoint_path(run_dir, 6))
    result, seen = resume(run_dir)
    assert isinstance(result, ev.Finished) and not result.stopped
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.start_step == 4 and started.resumed_from.endswith("step_0000004.pt")
    warned = [e.message for e in seen if isinstance(e, ev.Log) and e.level == "warning"]
    assert any("step_0000006.pt is corrupt" in m for m in warned)
    assert all(math.isfinite(e.loss) for e in seen if isinstance(e, ev.StepMetrics))
    # The checkpoint written at step 6 by the resumed run replaced the corrupt one and verifies.
    load_checkpoint(checkpoint_path(run_dir, 12))
