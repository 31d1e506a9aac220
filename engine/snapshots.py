"""Checkpoint files seen from outside: names, sidecars, verification and retention (no torch).

A checkpoint is `snapshots/step_0000300.pt` plus its sidecar `step_0000300.json`,
written last, so a checkpoint counts only once both exist. The sidecar holds
the size and the xxHash3-128 checksum of the `.pt` (computed while it was
written) and what the resume picker shows (step, losses, time), so listing runs
and choosing a checkpoint never load a tensor, or even import torch.

A sidecar that cannot be read or has the wrong shape makes its checkpoint
"bad": it is named, skipped by resume and never counted as one of the kept
checkpoints; it can never stop pruning or a resume.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from engine.errors import CheckpointError, FileError
from engine.files import HASH_NAME, hash_file, read_json_object

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "snapshots" / f"step_{step:07d}.pt"


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def step_of(path: Path) -> int:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else -1


def _all_checkpoint_files(run_dir: Path) -> list[Path]:
    """Every `step_N.pt` (complete or not), oldest first."""
    snaps = Path(run_dir) / "snapshots"
    try:
        found = [p for p in snaps.iterdir() if _NAME.match(p.name)]
    except OSError:
        return []
    return sorted(found, key=step_of)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (tensors + sidecar present), oldest first; their content is not checked."""
    return [p for p in _all_checkpoint_files(run_dir) if sidecar_path(p).is_file()]


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of checkpoint `path`, checked for shape; damage raises CheckpointError naming the file."""
    side = sidecar_path(path)
    try:
        meta = read_json_object(side)
    except FileError as e:
        raise CheckpointError(f"checkpoint metadata {e}") from None
    size = meta.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError(f"checkpoint metadata {side} has no valid byte count")
    checksum = meta.get(HASH_NAME)
    if checksum is not None and not isinstance(checksum, str):
        raise CheckpointError(f"checkpoint metadata {side} has a malformed checksum")
    for key in ("step", "total_steps", "epoch", "world_size"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise CheckpointError(f"checkpoint metadata {side}: {key} must be an integer, got {value!r}")
    return meta


def verify(path: Path, meta: dict[str, Any]) -> None:
    """Raise CheckpointError unless `path` has the size and checksum its sidecar recorded.

    Sidecars from before checksums existed (tui-lm 0.1) are checked by size only.
    """
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror}") from None
    if size != meta["bytes"]:
        raise CheckpointError(f"checkpoint {path} is truncated ({size} of {meta['bytes']} bytes)")
    expected = meta.get(HASH_NAME)
    if expected is not None:
        try:
            actual = hash_file(path)
        except FileError as e:
            raise CheckpointError(str(e)) from None
        if actual != expected:
            raise CheckpointError(f"checkpoint {path} is corrupt (its checksum does not match the one "
                                  f"recorded when it was written)")


def good_checkpoints(run_dir: Path, bad: Iterable[Path] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """(path, sidecar) of complete checkpoints whose sidecar reads and whose size matches, oldest first.

    The checksum is not recomputed here (that reads every byte); `bad` names
    checkpoints already found corrupt, which are left out.
    """
    skip = {Path(p).resolve() for p in bad}
    out = []
    for p in list_checkpoints(run_dir):
        if p.resolve() in skip:
            continue
        try:
            meta = read_sidecar(p)
            if p.stat().st_size != meta["bytes"]:
                continue
        except (CheckpointError, OSError):
            continue
        out.append((p, meta))
    return out


def prune_checkpoints(run_dir: Path, keep: int, bad: Iterable[Path] = ()) -> list[Path]:
    """Keep the newest `keep` good checkpoints and the newest good one marked best; returns what was removed.

    Bad checkpoints (unreadable sidecar, wrong size, in `bad`) never count as
    kept; they go once older than the newest good checkpoint. Nothing newer
    than the newest good checkpoint is touched, and with no good checkpoint at
    all nothing is removed: the last checkpoint that verified is never pruned.
    """
    good = good_checkpoints(run_dir, bad)
    if not good:
        return []
    protected = {p for p, _ in good[-max(keep, 1):]}
    best = [p for p, meta in good if meta.get("best") is True]
    protected |= set(best[-1:])
    newest = step_of(good[-1][0])
    removed = []
    for p in _all_checkpoint_files(run_dir):
        if p in protected or step_of(p) >= newest:
            continue
        # The sidecar first: it is what marks a checkpoint complete.
        for f in (sidecar_path(p), p):
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass
        removed.append(p)
    return removed
