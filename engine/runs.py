"""Run folders: creating them, their `state.json`, and finding runs to resume.

A run folder holds `run.toml` (the resolved config), `state.json` (status,
step, last metrics, last checkpoint: small and rewritten atomically, so the
resume picker lists runs without loading a tensor), `snapshots/`, `models/`,
`tensorboard/`, `metrics.jsonl` and the tokenizer.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.checkpoint import list_checkpoints, read_json, write_json
from engine.config import RunConfig, read_toml
from engine.errors import CheckpointError, ConfigError

STATUSES = ("running", "paused", "stopped", "finished", "crashed")


def default_out_dir(dataset_name: str) -> Path:
    return Path(f"lm_{dataset_name}")


def new_run_dir(cfg: RunConfig, dataset_name: str) -> Path:
    """A fresh folder for a new run; refuses to reuse an existing run's folder."""
    parent = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir(dataset_name)
    name = cfg.run.run_name or f"{cfg.run.preset or 'custom'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = parent / name
    if (run_dir / "run.toml").exists():
        raise ConfigError(
            f"run folder {run_dir} already holds a run; choose another --run-name or resume it with --resume {run_dir}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def update_state(run_dir: Path, **values: Any) -> dict[str, Any]:
    path = run_dir / "state.json"
    state = read_json(path) if path.is_file() else {}
    state.update(values, updated=time.time(), pid=os.getpid(), host=socket.gethostname())
    write_json(path, state)
    return state


@dataclass
class RunInfo:
    """One row of the resume picker."""

    path: Path
    name: str
    preset: str
    dataset: str
    step: int
    total_steps: int
    status: str  # one of STATUSES
    last_val_ppl: float | None
    last_word_ppl: float | None
    last_checkpoint: str  # file name, "" when none
    last_checkpoint_time: float | None
    world_size: int
    problem: str  # why it cannot be resumed; "" when it can

    @property
    def resumable(self) -> bool:
        return not self.problem and self.status != "finished"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(run_dir: Path) -> RunInfo:
    """Describe a run folder from its small files only; never raises for a damaged run."""
    problem = ""
    try:
        cfg = read_toml(run_dir / "run.toml")
    except ConfigError as e:
        cfg, problem = {}, f"run.toml unreadable: {e}"
    try:
        state = read_json(run_dir / "state.json") if (run_dir / "state.json").is_file() else {}
    except CheckpointError as e:
        state, problem = {}, problem or str(e)
    status = state.get("status", "crashed")
    # A "running" run whose process is gone on this host died without saying so.
    if status == "running" and (state.get("host") != socket.gethostname() or not _process_alive(state.get("pid", -1))):
        status = "crashed"
    ckpts = list_checkpoints(run_dir)
    last = ckpts[-1] if ckpts else None
    meta: dict[str, Any] = {}
    if last is not None:
        try:
            meta = read_json(last.with_suffix(".json"))
            if last.stat().st_size != meta.get("bytes", last.stat().st_size):
                problem = problem or f"{last.name} is truncated"
        except CheckpointError as e:
            problem = problem or str(e)
    elif status != "finished" and not problem:
        problem = "no checkpoint to resume from"
    return RunInfo(
        path=run_dir,
        name=run_dir.name,
        preset=cfg.get("run", {}).get("preset", "?"),
        dataset=cfg.get("data", {}).get("dataset", "?"),
        step=int(meta.get("step", state.get("step", 0))),
        total_steps=int(state.get("total_steps", 0)),
        status=status,
        last_val_ppl=state.get("last_val_ppl"),
        last_word_ppl=state.get("last_word_ppl"),
        last_checkpoint=last.name if last else "",
        last_checkpoint_time=meta.get("time"),
        world_size=int(meta.get("world_size", state.get("world_size", 1))),
        problem=problem,
    )


def find_runs(roots: list[Path]) -> list[RunInfo]:
    """Runs under the given parents (`lm_*` folders of the cwd by default), newest first."""
    runs = []
    for root in roots:
        if not root.is_dir():
            continue
        for child in root.iterdir():
            if (child / "run.toml").is_file():
                runs.append(read_run(child))
    runs.sort(key=lambda r: r.last_checkpoint_time or (r.path / "run.toml").stat().st_mtime, reverse=True)
    return runs


def default_roots(cwd: Path | None = None) -> list[Path]:
    cwd = cwd or Path.cwd()
    return sorted(p for p in cwd.glob("lm_*") if p.is_dir())


def latest_run(parent: Path) -> Path:
    """The most recently active resumable run under `parent`, for `--resume` with no path."""
    for info in find_runs([parent]):
        if info.resumable:
            return info.path
    raise ConfigError(f"--resume: no resumable run found in {parent}; pass a run folder: --resume PATH")
