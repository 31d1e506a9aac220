"""Training checkpoints in one place: file names, sidecars, verification, retention, saving and loading.

A checkpoint is `snapshots/step_0000300.pt` plus its sidecar `step_0000300.json`,
written last, so a checkpoint counts only once both exist. The sidecar holds
the size and the xxHash3-128 checksum of the `.pt` (computed while torch wrote
it, no second read) and what the resume picker shows (step, losses, time), so
listing runs and choosing a checkpoint never load a tensor: torch is imported
only by the functions that save or load the tensors file.

The tensors file holds everything exact resumption needs, declared once as
its `Part`s below (the writer, the checks on load, the saved counters and the
restore derive from them), and is loaded with `torch.load(weights_only=True)`,
so nothing arbitrary is unpickled; loading checks size and checksum before
torch sees the file, then the parts its use needs.
A sidecar that cannot be read or has the wrong shape makes its checkpoint
"bad": it is named, skipped by resume (the previous good checkpoint is used)
and never counted as one of the kept checkpoints; it can never stop pruning.
"""

from __future__ import annotations

import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from engine.errors import CheckpointError, FileError, short_reason
from engine.files import (
    HASH_NAME,
    HashingWriter,
    atomic_write,
    ensure_folder,
    hash_file,
    os_reason,
    read_json_object,
    write_json,
)
from engine.runs.layout import SNAPSHOTS

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step_{step:07d}.pt"


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def step_of(path: Path) -> int:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else -1


def _all_checkpoint_files(run_dir: Path) -> list[Path]:
    """Every `step_N.pt` (complete or not), oldest first."""
    snaps = Path(run_dir) / SNAPSHOTS
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


@dataclass(frozen=True)
class Part:
    """One entry of the tensors file: its key, its container type and, for counters, the numbers inside.

    engine.train.build writes each part (checkpoint_state) and restores it
    (_restore); loading checks every part a use needs (`parts`).
    """

    key: str
    kind: type
    counters: tuple[tuple[str, type], ...] = ()  # (name, int or float): attributes of the object they count
    for_model: bool = False  # also needed to use the trained model (final model, export, sampling)

    def take(self, holder: Any) -> dict[str, Any]:
        """The counters of `holder` (its attributes of the counters' names), as a checkpoint holds them."""
        return {name: getattr(holder, name) for name, _ in self.counters}

    def put(self, holder: Any, saved: dict[str, Any]) -> None:
        """Set the counters of `holder` from a loaded checkpoint's entry, each as its type."""
        for name, kind in self.counters:
            setattr(holder, name, kind(saved[name]))


MODEL = Part("model", dict, for_model=True)  # the model's state_dict
OPTIMIZER = Part("optimizer", dict)  # AdamW's state_dict, or Muon's and AdamW's (engine.optim.groups)
SCALER = Part("scaler", dict)  # the fp16 GradScaler's state_dict: {} when it is off
RNG = Part("rng", list)  # every rank's RNG states, in rank order
LOADER = Part("loader", dict, (("epoch", int), ("step_in_epoch", int)))  # engine.data.loader.LoaderState
TRAINER = Part("trainer", dict, (("step", int), ("tokens_seen", int), ("best_val_loss", float),
                                 ("elapsed_s", float)))  # engine.train.build.Progress
CONFIG = Part("config", dict, for_model=True)  # RunConfig.to_dict(): what the model was built with
RESUME_PARTS = (MODEL, OPTIMIZER, SCALER, RNG, LOADER, TRAINER, CONFIG)  # what a run's checkpoint holds
MODEL_PARTS = tuple(p for p in RESUME_PARTS if p.for_model)


def save_checkpoint(path: Path, state: dict[str, Any], meta: dict[str, Any],
                    parts: tuple[Part, ...] = RESUME_PARTS) -> str:
    """Write the tensors file (`state`: exactly the entries of `parts`), then its sidecar (size, checksum,
    `meta`); returns the checksum."""
    if set(state) != {p.key for p in parts}:
        # A checkpoint short of a part would be written fine and refused at resume.
        raise ValueError(f"a checkpoint holds {', '.join(p.key for p in parts)}, not {', '.join(state)}")
    path = Path(path)
    ensure_folder(path.parent)
    writer: HashingWriter | None = None

    def write(f: Any) -> None:
        nonlocal writer
        writer = HashingWriter(f)
        import torch

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


def _check_shape(path: Path, state: Any, parts: tuple[Part, ...]) -> None:
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a tui-lm checkpoint (format {FORMAT_VERSION})")
    for part in parts:
        if not isinstance(state.get(part.key), part.kind):
            raise CheckpointError(f"checkpoint {path} has no valid {part.key!r} entry; it cannot be used")
        for name, _ in part.counters:
            if not isinstance(state[part.key].get(name), (int, float)):
                raise CheckpointError(f"checkpoint {path} has no valid {part.key}.{name}; it cannot be used")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    parts: tuple[Part, ...] = RESUME_PARTS) -> dict[str, Any]:
    """Load a checkpoint after checking its size and checksum; a bad file names itself."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if sidecar_path(path).exists():
        verify(path, read_sidecar(path))
    import torch

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message goes on to suggest weights_only=False: never repeat that advice.
        raise CheckpointError(f"checkpoint {path} holds Python objects besides tensors; "
                              "it was not written by tui-lm and is refused") from None
    except Exception as e:  # torch raises several types for damaged zip archives
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({short_reason(e)})") from None
    _check_shape(path, state, parts)
    return state


def load_latest_checkpoint(
    run_dir: Path,
    map_location: str | torch.device = "cpu",
    warn: Callable[[str], None] = lambda _: None,
    parts: tuple[Part, ...] = RESUME_PARTS,
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
            return path, load_checkpoint(path, map_location, parts)
        except CheckpointError as e:
            problems.append(str(e))
            if skipped is not None:
                skipped.append(path)
            warn(f"{e}; skipping it and falling back to the previous checkpoint")
    detail = ("; ".join(problems)) if problems else "no checkpoints in " + str(Path(run_dir) / SNAPSHOTS)
    raise CheckpointError(f"cannot resume {run_dir}: {detail}")
