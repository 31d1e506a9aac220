"""Checkpoints survive crashes mid-write, and damaged ones are named and skipped."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine.errors import CheckpointError
from engine.runs.checkpoints import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def resume_state(step: int) -> dict:
    """Every entry a resume needs, with tiny contents."""
    return {"model": {"w": torch.full((4,), float(step))}, "optimizer": {}, "scaler": {}, "rng": [],
            "loader": {"epoch": 0, "step_in_epoch": step}, "config": {},
            "trainer": {"step": step, "tokens_seen": 0, "best_val_loss": 1.0, "elapsed_s": 0.0}}


def _save(run: Path, step: int, best: bool = False) -> Path:
    path = checkpoint_path(run, step)
    save_checkpoint(path, resume_state(step), {"step": step, "best": best})
    return path


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    # A child process starts writing step 2 through the real atomic path, on a
    # "slow disk" that stalls halfway; we SIGKILL it mid-write.
    script = textwrap.dedent(f"""
        import time, torch
        from pathlib import Path
        import engine.runs.checkpoints as c
        import engine.runs.checkpoints as s
        real_save = torch.save
        def slow_save(obj, f):
            f.write(b"PK" + b"x" * 100000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        c.save_checkpoint(s.checkpoint_path(Path({str(tmp_path)!r}), 2), {{"model": {{}}}}, {{"step": 2}},
                         parts=(c.MODEL,))
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not checkpoint_path(tmp_path, 2).exists()  # the half-written file never took the name
    assert list_checkpoints(tmp_path) == [checkpoint_path(tmp_path, 1)]
    path, state = load_latest_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 1) and state["trainer"]["step"] == 1


def test_truncated_checkpoint_is_named_and_resume_falls_back(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    bad = _save(tmp_path, 2)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="step_0000002.pt is truncated"):
        load_checkpoint(bad)
    warnings: list[str] = []
    path, state = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert state["trainer"]["step"] == 1
    assert "step_0000002.pt" in warnings[0] and "falling back" in warnings[0]


def test_corrupt_bytes_give_a_clear_error(tmp_path: Path) -> None:
    bad = _save(tmp_path, 3)
    data = bytearray(bad.read_bytes())
    data[10:60] = b"\x00" * 50
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"step_0000003.pt is corrupt"):
        load_checkpoint(bad)


def test_no_loadable_checkpoint_explains(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        load_latest_checkpoint(tmp_path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, 5)
    path.parent.mkdir(parents=True)
    torch.save({"format_version": 1, "evil": Path("/")}, path)  # an arbitrary class
    with pytest.raises(CheckpointError, match="step_0000005.pt"):
        load_checkpoint(path)


def test_prune_keeps_newest_and_best(tmp_path: Path) -> None:
    for step in range(1, 7):
        _save(tmp_path, step, best=step == 2)
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002.pt", "step_0000005.pt", "step_0000006.pt"]
    assert not list(tmp_path.glob("snapshots/.*tmp*"))


def test_a_state_short_of_a_part_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    state = resume_state(1)
    del state["rng"]
    with pytest.raises(ValueError, match="a checkpoint holds model, optimizer, scaler, rng, loader, trainer, config"):
        save_checkpoint(checkpoint_path(tmp_path, 1), state, {"step": 1})
    assert not (tmp_path / "snapshots").exists() or not list((tmp_path / "snapshots").iterdir())
