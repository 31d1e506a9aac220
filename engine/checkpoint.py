"""Training checkpoints: the tensors file, written atomically with its checksum, loaded safely.

A checkpoint (`snapshots/step_0000300.pt`) holds everything exact resumption
needs and is loaded with `torch.load(weights_only=True)`, so nothing arbitrary
is unpickled. Saving hashes the bytes as torch writes them (no second read)
and records size and checksum in the sidecar (engine.snapshots); loading checks
both before torch sees the file, then checks the expected keys. A bad file is
named and, when resuming, the previous good checkpoint is used instead.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any, Callable

import torch

from engine.data import short_reason
from engine.errors import CheckpointError, FileError
from engine.files import HASH_NAME, HashingWriter, atomic_write, ensure_folder, os_reason, write_json
from engine.snapshots import FORMAT_VERSION, list_checkpoints, read_sidecar, sidecar_path, verify

# What each kind of use needs in a checkpoint, and the container type of each.
RESUME_KEYS: dict[str, type] = {"model": dict, "optimizer": dict, "scaler": dict, "rng": list,
                                "loader": dict, "trainer": dict, "config": dict}
MODEL_KEYS: dict[str, type] = {"model": dict, "config": dict}
_NESTED = {"trainer": ("step", "tokens_seen", "best_val_loss", "elapsed_s"), "loader": ("epoch", "step_in_epoch")}


def save_checkpoint(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write the tensors file, then its sidecar (size, checksum, `meta`); returns the checksum."""
    path = Path(path)
    ensure_folder(path.parent)
    writer: HashingWriter | None = None

    def write(f: Any) -> None:
        nonlocal writer
        writer = HashingWriter(f)
        torch.save({"format_version": FORMAT_VERSION, **state}, writer)

    try:
        atomic_write(path, write)
    except RuntimeError:
        # torch's zip writer hides the OS error (ENOSPC, EFBIG) behind "enforce fail at inline_container.cc".
        if writer is not None and writer.error is not None:
            raise FileError(f"cannot write {path}: {os_reason(writer.error)}") from None
        raise
    assert writer is not None
    size = path.stat().st_size
    if size != writer.size:
        raise FileError(f"cannot write {path}: {size} bytes on disk, {writer.size} written")
    checksum = writer.hash.hexdigest()
    write_json(sidecar_path(path), {"format_version": FORMAT_VERSION, "file": path.name, "bytes": size,
                                    HASH_NAME: checksum, "time": time.time(), **meta})
    return checksum


def _check_shape(path: Path, state: Any, keys: dict[str, type]) -> None:
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a tui-lm checkpoint (format {FORMAT_VERSION})")
    for key, kind in keys.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"checkpoint {path} has no valid {key!r} entry; it cannot be used")
        for field in _NESTED.get(key, ()):
            if not isinstance(state[key].get(field), (int, float)):
                raise CheckpointError(f"checkpoint {path} has no valid {key}.{field}; it cannot be used")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    keys: dict[str, type] = RESUME_KEYS) -> dict[str, Any]:
    """Load a checkpoint after checking its size and checksum; a bad file names itself."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if sidecar_path(path).exists():
        verify(path, read_sidecar(path))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message goes on to suggest weights_only=False: never repeat that advice.
        raise CheckpointError(f"checkpoint {path} holds Python objects besides tensors; "
                              "it was not written by tui-lm and is refused") from None
    except Exception as e:  # torch raises several types for damaged zip archives
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({short_reason(e)})") from None
    _check_shape(path, state, keys)
    return state


def load_latest_checkpoint(
    run_dir: Path,
    map_location: str | torch.device = "cpu",
    warn: Callable[[str], None] = lambda _: None,
    keys: dict[str, type] = RESUME_KEYS,
    skipped: list[Path] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint that verifies and loads.

    Each newer bad one is reported through `warn` (naming the file and why)
    and appended to `skipped`, so the caller can keep it from being counted as
    a good checkpoint when pruning.
    """
    problems = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location, keys)
        except CheckpointError as e:
            problems.append(str(e))
            if skipped is not None:
                skipped.append(path)
            warn(f"{e}; skipping it and falling back to the previous checkpoint")
    detail = ("; ".join(problems)) if problems else "no checkpoints in " + str(Path(run_dir) / "snapshots")
    raise CheckpointError(f"cannot resume {run_dir}: {detail}")
