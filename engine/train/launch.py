"""Starting a run, shared by the headless CLI and the dashboard: the config, the run to resume, the checks.

- `new_run_config`: the one merge (defaults < preset < run file < flags),
  validated, plus a refusal of runs whose memory is absurd, before anything
  is created on disk.
- `find_run_dir` / `resume_request`: the one resume resolver. A run another
  process is training (its folder's lock is held) is never resumed: bare
  `--resume` skips it for the newest free run, and says which process holds
  which run when none is free. A resumed run's
  own run.toml is the base; flags given with --resume are compared with it
  setting by setting, following each setting's declared resume policy
  (engine/config/run_config.py): a "fixed" change is refused with one line naming the
  field, the old and the new value; "safe" changes are returned for the
  trainer to apply, report and record once the checkpoint has been restored;
  "ignore" settings only say where to look. Nothing here writes run.toml.
- `picker_roots`: which folders the dashboard's resume picker lists.

No torch: the CLI answers a bad flag without importing it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.loading import build_config
from engine.config.plan import DeviceInfo, plan_run
from engine.config.run_config import RunConfig, user_settings
from engine.errors import ConfigError, RunLocked
from engine.runs.folder import lock_holder, locked_message
from engine.runs.layout import RUN_CONFIG, is_run_folder, named_folder

# A run whose estimate exceeds this many times the largest catalogue GPU and
# this machine's RAM is a typo (an extra zero), not a plan: refuse it at once.
ABSURD_FACTOR = 100


@dataclass(frozen=True)
class ResumeRequest:
    run_dir: Path
    config: RunConfig  # the run's own config with the safe changes applied
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # "section.name" -> (old, new)


def new_run_config(file: str | Path | None, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """The config of a new run from a run file and flags (the preset comes from either), checked."""
    cfg = build_config(None, file, overrides)
    # Under torchrun the ranks are known now: a batch that does not split over them fails here,
    # before any data is prepared. (The device's own checks come once it is resolved.)
    ranks = int(os.environ.get("WORLD_SIZE", "1") or "1")
    plan = plan_run(cfg, world_size=ranks, device=DeviceInfo.gpu())
    if plan.errors:
        raise ConfigError(plan.errors[0])
    check_memory_is_sane(cfg)
    return cfg


def _size(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def absurd_memory_problem(cfg: RunConfig) -> str:
    """One line when the run's estimated memory is beyond any machine; "" otherwise.

    The estimate is engine.memory.estimate's for a GPU at the data section's vocabulary;
    the bound is ABSURD_FACTOR times the larger of the largest catalogue GPU and
    this machine's RAM, so only typos are caught, never a big but real run.
    """
    from engine.memory.estimate import estimate_memory
    from engine.memory.gpus import GPU_CATALOGUE

    est = estimate_memory(cfg, plan=plan_run(cfg, device=DeviceInfo.gpu()))
    largest = max(g.memory_bytes for g in GPU_CATALOGUE)
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except Exception:  # no psutil: the catalogue alone sets the bound
        ram = 0
    bound = ABSURD_FACTOR * max(largest, ram)
    if est.total_bytes <= bound:
        return ""
    m, t = cfg.model, cfg.train
    return (f"this run needs {_size(est.total_bytes)} of memory per device by the estimate "
            f"(d_model {m.d_model}, layers {m.num_layers}, d_ff {m.d_ff}, max_seq_len {m.max_seq_len}, "
            f"batch_size {t.batch_size}), more than {ABSURD_FACTOR}x the largest GPU or this machine's RAM; "
            f"check the model shape and train.batch_size")


def check_memory_is_sane(cfg: RunConfig) -> None:
    problem = absurd_memory_problem(cfg)
    if problem:
        raise ConfigError(problem)


# ----------------------------------------------------------------------------- resume

def find_run_dir(target: str, base: RunConfig) -> Path:
    """The run folder `--resume [target]` means.

    `target`: a run folder or its run.toml; "" = run.run_name in the output
    folder when one is named, else the most recent resumable run there that
    no process is training (`base` holds the output folder and dataset the
    flags or file name).
    """
    from engine.data.sources import canonical_name
    from engine.runs.listing import default_out_dir

    if target:
        run_dir = named_folder(Path(target))
        if not is_run_folder(run_dir):
            raise ConfigError(f"--resume {target}: not a run folder (no {RUN_CONFIG} in it)")
        return run_dir
    parent = Path(base.run.out_dir) if base.run.out_dir else default_out_dir(canonical_name(base.data.dataset))
    if base.run.run_name:
        return find_run_dir(str(parent / base.run.run_name), base)
    return latest_free_run(parent)


def latest_free_run(parent: Path) -> Path:
    """The most recently active resumable run under `parent` whose lock nobody holds."""
    from engine.runs.listing import find_runs, latest_run

    busy = []
    for info in find_runs([parent]):
        if not info.resumable:
            continue
        holder = lock_holder(info.path)
        if not holder:
            return info.path
        busy.append(f"{info.path} by {holder}")
    if busy:
        raise RunLocked(f"--resume: no run in {parent} is free to resume; being trained now: {'; '.join(busy)}. "
                        f"Wait for one to finish or stop it (tui-lm stop RUN), or name another: --resume PATH")
    return latest_run(parent)  # nothing resumable at all: it says so


def resume_request(run_dir: Path, overrides: dict[str, dict[str, Any]] | None = None) -> ResumeRequest:
    """The run's config with the flags applied per the resume policy; raises on a "fixed" change, and
    RunLocked when another process is training the run."""
    holder = lock_holder(run_dir)
    if holder:
        raise RunLocked(f"cannot resume: {locked_message(run_dir, holder)}")
    stored = build_config(None, run_dir / RUN_CONFIG)
    requested = build_config(None, run_dir / RUN_CONFIG, overrides or {}) if overrides else stored
    changes: dict[str, tuple[Any, Any]] = {}
    config = copy.deepcopy(stored)
    for s in user_settings():
        old, new = stored.get(s.key), requested.get(s.key)
        if old == new or s.resume == "ignore":
            continue
        if s.resume == "fixed":
            raise ConfigError(
                f"--resume {run_dir}: {s.key} cannot change when resuming ({_show(old)} in {RUN_CONFIG}, "
                f"{_show(new)} asked); it changes what is being trained: start a new run instead")
        changes[s.key] = (old, new)
        setattr(getattr(config, s.section), s.name, new)
    if changes:
        check_memory_is_sane(config)
    return ResumeRequest(run_dir, config, changes)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def resolve(config_file: str | None, overrides: dict[str, dict[str, Any]],
            resume: str | None) -> tuple[RunConfig, ResumeRequest | None]:
    """What `tui-lm --no-ui [--config F] [--resume [R]] [flags]` runs: a new config, or a resume request."""
    if resume is None:
        return new_run_config(config_file, overrides), None
    base = build_config(None, config_file, overrides) if not resume else RunConfig()
    request = resume_request(find_run_dir(resume, base), overrides)
    return request.config, request


def picker_roots(target: str) -> list[Path]:
    """Folders the resume picker lists for `--resume target`: a run folder's siblings, or the folder's runs."""
    chosen = Path(target)
    return [chosen.parent if is_run_folder(chosen) else chosen]
