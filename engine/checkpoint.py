"""Checkpoints: atomic writes, safe loads, metadata readable without tensors, retention.

A checkpoint is `snapshots/step_0000300.pt` (everything exact resumption
needs, loadable with `torch.load(weights_only=True)`, so nothing arbitrary is
unpickled) plus `step_0000300.json` beside it (step, losses, time: what the
resume picker shows, read without touching the tensors). Both are written to
a temporary file, fsynced and renamed, so a crash mid-save leaves the previous
checkpoint as it was. The final model goes to `models/` as safetensors.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save

from engine.config import RunConfig, apply_overrides, read_toml
from engine.errors import CheckpointError

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through `write(fileobj)` into a temp file, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, default=str)), mode="w")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


# ----------------------------------------------------------------------------- training checkpoints

def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "snapshots" / f"step_{step:07d}.pt"


def save_checkpoint(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write the tensors file, then its metadata; a checkpoint counts only once both exist."""
    atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
    write_json(path.with_suffix(".json"), {"format_version": FORMAT_VERSION, "file": path.name,
                                           "bytes": path.stat().st_size, "time": time.time(), **meta})


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects; a bad file names itself."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    meta = path.with_suffix(".json")
    if meta.is_file():
        expected = read_json(meta).get("bytes")
        if expected is not None and path.stat().st_size != expected:
            raise CheckpointError(
                f"checkpoint {path} is truncated ({path.stat().st_size} of {expected} bytes)"
            )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for damaged zip archives
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {e}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a tui-lm checkpoint (format {FORMAT_VERSION})")
    return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (tensors + metadata), oldest first."""
    snaps = run_dir / "snapshots"
    if not snaps.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in snaps.iterdir()
             if (m := _NAME.match(p.name)) and p.with_suffix(".json").is_file()]
    return [p for _, p in sorted(found)]


def load_latest_checkpoint(
    run_dir: Path, map_location: str | torch.device = "cpu", warn: Callable[[str], None] = lambda _: None
) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint that loads; damaged newer ones are reported through `warn` and skipped."""
    problems = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as e:
            problems.append(str(e))
            warn(f"{e}; falling back to the previous checkpoint")
    detail = ("; ".join(problems)) if problems else "no checkpoints in " + str(run_dir / "snapshots")
    raise CheckpointError(f"cannot resume {run_dir}: {detail}")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints and the newest one marked best."""
    paths = list_checkpoints(run_dir)
    best = [p for p in paths if read_json(p.with_suffix(".json")).get("best")]
    protected = set(paths[-keep:]) | set(best[-1:])
    for p in paths:
        if p not in protected:
            p.with_suffix(".json").unlink(missing_ok=True)  # metadata first: it marks completeness
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- final model

def save_final_model(run_dir: Path, model: torch.nn.Module, cfg: RunConfig, tokenizer_path: Path) -> Path:
    """models/: weights as safetensors (tied embedding stored once), config and tokenizer."""
    out = run_dir / "models"
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    atomic_write(out / "model.safetensors", lambda f: f.write(save(state)))
    atomic_write(out / "config.toml", lambda f: f.write(cfg.to_toml()), mode="w")
    atomic_write(out / "tokenizer.json", lambda f: f.write(Path(tokenizer_path).read_text()), mode="w")
    return out


@dataclass
class LoadedModel:
    model: torch.nn.Module  # engine.model.GPT in eval mode
    config: RunConfig
    tokenizer: Any  # tokenizers.Tokenizer
    source: Path  # the weights file it came from
    from_checkpoint: bool  # True when the run had no final model


def _config_from(values: dict[str, Any], where: str) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(cfg, values, where)
    return cfg


def load_model(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> LoadedModel:
    """The run's final model, or a given / the newest checkpoint when there is none."""
    from tokenizers import Tokenizer

    from engine.model import GPT

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    final = run_dir / "models" / "model.safetensors"
    if checkpoint is None and final.is_file():
        cfg = _config_from(read_toml(run_dir / "models" / "config.toml"), "models/config.toml")
        state, source, from_ckpt = load_file(final, device="cpu"), final, False
        state["lm_head.weight"] = state["wte.weight"]
    else:
        if checkpoint is not None:
            source = Path(checkpoint)
            data = load_checkpoint(source)
        else:
            source, data = load_latest_checkpoint(run_dir)
        cfg = _config_from(data["config"], str(source))
        state, from_ckpt = data["model"], True
    tok_file = run_dir / "models" / "tokenizer.json"
    if not tok_file.is_file():
        tok_file = run_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise CheckpointError(f"no tokenizer.json in {run_dir / 'models'} or {run_dir}")
    model = GPT(cfg.model)
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(model, cfg, Tokenizer.from_file(str(tok_file)), source, from_ckpt)
