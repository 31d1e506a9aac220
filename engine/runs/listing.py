"""Finding runs to resume: each run folder described from its small files, without torch.

A run folder holds `run.toml` (the resolved config), `state.json` (status,
step, last metrics, last checkpoint: small and rewritten atomically),
`data.json`, `tokenizer.json`, `snapshots/`, `models/`, `tensorboard/` and
`metrics.jsonl` (see engine.runs.folder). The resume picker and `--resume`
read only the TOML and JSON files, so listing runs never loads a tensor or
imports torch, and a damaged run is listed with its problem, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config.loading import read_toml
from engine.config.model_label import model_description, model_label
from engine.errors import ConfigError, FileError
from engine.files import read_json_object
from engine.runs.checkpoints import good_checkpoints, list_checkpoints
from engine.runs.folder import default_out_dir  # noqa: F401  (where --resume looks by default)
from engine.runs.layout import RUN_CONFIG, STATE, is_run_folder
from engine.runs.liveness import trainer_gone

STATUSES = ("running", "paused", "stopped", "finished", "crashed")


@dataclass
class RunInfo:
    """One row of the resume picker."""

    path: Path
    name: str
    preset: str  # run.preset: what it started from (and resuming applies)
    model: str  # what its model is called: the preset's name, or "custom (from tiny)" (engine.config.model_label)
    model_detail: str  # the same, with what differs from the preset: "custom (from tiny): d_model 512"
    dataset: str
    step: int
    total_steps: int
    status: str  # one of STATUSES
    last_val_ppl: float | None
    last_word_ppl: float | None
    last_val_partial: bool  # those two come from a partial evaluation (False when state.json does not say)
    last_checkpoint: str  # file name, "" when none
    last_checkpoint_time: float | None
    world_size: int
    problem: str  # why it cannot be resumed; "" when it can

    @property
    def resumable(self) -> bool:
        return not self.problem and self.status != "finished"


def _number(value: Any, kind: type, default: Any) -> Any:
    """A field of a JSON file that may have been edited or damaged: the value when it has the right type."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return kind(value)


def read_run(run_dir: Path) -> RunInfo:
    """Describe a run folder from its small files only; never raises for a damaged run."""
    problem = ""
    try:
        cfg = read_toml(run_dir / RUN_CONFIG)
    except ConfigError as e:
        cfg, problem = {}, f"{RUN_CONFIG} unreadable: {e}"
    state: dict[str, Any] = {}
    if (run_dir / STATE).is_file():
        try:
            state = read_json_object(run_dir / STATE)
        except FileError as e:
            problem = problem or str(e)
    status = state.get("status") if state.get("status") in STATUSES else "crashed"
    # A "running" run whose trainer is gone (a dead pid on this host, a silent heartbeat
    # from another one sharing the filesystem) died without saying so.
    if status == "running" and trainer_gone(state):
        status = "crashed"
    good = good_checkpoints(run_dir)
    last, meta = good[-1] if good else (None, {})
    if last is None and list_checkpoints(run_dir) and not problem:
        problem = "no readable checkpoint (every checkpoint's metadata is damaged or its file truncated)"
    elif last is None and status != "finished" and not problem:
        problem = "no checkpoint to resume from"
    section = (lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {})
    preset = str(section("run").get("preset", ""))
    return RunInfo(
        path=run_dir,
        name=run_dir.name,
        preset=str(section("run").get("preset", "?")),
        model=model_label(preset, section("model")) if cfg else "?",
        model_detail=model_description(preset, section("model")) if cfg else "?",
        dataset=str(section("data").get("dataset", "?")),
        step=_number(meta.get("step", state.get("step")), int, 0),
        total_steps=_number(state.get("total_steps"), int, 0),
        status=status,
        last_val_ppl=_number(state.get("last_val_ppl"), float, None),
        last_word_ppl=_number(state.get("last_word_ppl"), float, None),
        last_val_partial=state.get("last_val_partial") is True,
        last_checkpoint=last.name if last else "",
        last_checkpoint_time=_number(meta.get("time"), float, None),
        world_size=_number(meta.get("world_size", state.get("world_size")), int, 1),
        problem=problem,
    )


def find_runs(roots: list[Path]) -> list[RunInfo]:
    """Runs under the given parents (`lm_*` folders of the cwd by default), newest first."""
    runs = []
    for root in roots:
        if not root.is_dir():
            continue
        for child in root.iterdir():
            if is_run_folder(child):
                runs.append(read_run(child))

    def newest(r: RunInfo) -> float:
        try:
            return r.last_checkpoint_time or (r.path / RUN_CONFIG).stat().st_mtime
        except OSError:
            return 0.0

    runs.sort(key=newest, reverse=True)
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
