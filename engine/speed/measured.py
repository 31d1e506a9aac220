"""Throughput measured on this machine (`tui-lm estimate --measure`), kept per machine and config in the user's cache.

One JSON file per (machine, config) under `<cache>/measured/`, the cache being
engine.data.token_cache.cache_root(None): $TUI_LM_CACHE, else
$XDG_CACHE_HOME/tui-lm (~/.cache/tui-lm). The machine is its host name,
processor, core count, torch version and the device the run trains on; the
config is every setting that changes a step's speed (declared
`estimate=True`, the data's vocabulary among them) plus the ranks, the resolved
precision and compile. A stored figure replaces the modelled one (engine.speed.model) and is
labelled "measured here on DATE". Written atomically; an unreadable file is
treated as no measurement.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from engine.config.plan import RunPlan
from engine.config.run_config import SCHEMA
from engine.data.token_cache import cache_root
from engine.files import write_text
from engine.speed.model import Throughput

FOLDER = "measured"


@dataclass(frozen=True)
class Measurement:
    tokens_per_s: float  # training, one rank, warm-up excluded
    compile_s: float  # the torch.compile warm-up (0 when eager)
    steps: int  # timed steps
    date: str  # ISO date of the measurement

    def throughput(self, modelled: Throughput) -> Throughput:
        """The modelled throughput with the measured training speed and compile time in its place.

        Evaluations were not measured: their modelled rate moves by the same
        factor as the training speed did.
        """
        ratio = self.tokens_per_s / modelled.tokens_per_s
        return Throughput(tokens_per_s=self.tokens_per_s, source=f"measured here on {self.date} ({self.steps} steps)",
                          mfu=None if modelled.mfu is None else modelled.mfu * ratio, compile_s=self.compile_s,
                          eval_tokens_per_s=modelled.eval_tokens_per_s * ratio, here=True)


@functools.lru_cache(maxsize=None)
def _machine_id(device: str) -> tuple[tuple[str, str], ...]:
    return tuple(_read_machine_id(device).items())


def machine_id(device: str) -> dict[str, str]:
    """What makes this machine this machine, for the speed of `device` ("cpu", "cuda:0 (NVIDIA H200)").

    Read once per process (the torch version's metadata lookup costs milliseconds, and the setup
    screen asks on every keystroke)."""
    return dict(_machine_id(device))


def _read_machine_id(device: str) -> dict[str, str]:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = ""
    return {"host": platform.node(), "processor": platform.processor() or platform.machine(),
            "cores": str(os.cpu_count()), "torch": torch_version, "device": device}


def config_id(plan: RunPlan) -> dict[str, object]:
    """The settings that decide the speed of `plan`, resolved."""
    cfg = plan.config
    values: dict[str, object] = {s.key: cfg.get(s.key) for s in SCHEMA if s.estimate is True}
    values.update({"world_size": plan.world_size, "precision": plan.precision, "compile": plan.compile})
    return values


def measurement_path(plan: RunPlan, device: str) -> Path:
    blob = json.dumps({"machine": machine_id(device), "config": config_id(plan)}, sort_keys=True)
    return cache_root(None) / FOLDER / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def load_measurement(plan: RunPlan, device: str) -> Measurement | None:
    try:
        data = json.loads(measurement_path(plan, device).read_text())
        return Measurement(float(data["tokens_per_s"]), float(data["compile_s"]), int(data["steps"]),
                           str(data["date"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_measurement(plan: RunPlan, device: str, m: Measurement) -> Path:
    path = measurement_path(plan, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"tokens_per_s": m.tokens_per_s, "compile_s": m.compile_s, "steps": m.steps, "date": m.date,
              "machine": machine_id(device), "config": config_id(plan)}
    write_text(path, json.dumps(record, indent=2))
    return path
