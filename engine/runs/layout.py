"""The run folder's file names, defined once; every reader and writer of a run folder takes them from here.

    RUN/run.toml        the resolved config (engine.config.run_config's TOML)
    RUN/state.json      status, step, latest figures and the trainer's heartbeat
    RUN/data.json       the fingerprint of the data the run trained on
    RUN/tokenizer.json  the run's own tokenizer, copied once at creation
    RUN/metrics.jsonl   every record of every session, append-only (engine.runs.reader reads it)
    RUN/request.json    a pause, resume or stop request from another process
    RUN/.lock           locked (flock) while a process trains in the folder
    RUN/snapshots/      checkpoints and their sidecars (engine.runs.checkpoints)
    RUN/models/         the final model (engine.artifacts)
    RUN/tensorboard/    TensorBoard scalars

The names live here rather than in engine.config, which writes run.toml but
is told the path: the config knows nothing of run folders.
"""

from __future__ import annotations

from pathlib import Path

RUN_CONFIG = "run.toml"
STATE = "state.json"
DATA_RECORD = "data.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
REQUEST = "request.json"
LOCK = ".lock"
SNAPSHOTS = "snapshots"
MODELS = "models"
TENSORBOARD = "tensorboard"


def is_run_folder(path: Path) -> bool:
    """A folder holds a run when it holds the run's config."""
    return (Path(path) / RUN_CONFIG).is_file()


def named_folder(path: Path) -> Path:
    """The run folder a user names by itself or by its run.toml."""
    path = Path(path)
    return path.parent if path.name == RUN_CONFIG else path
