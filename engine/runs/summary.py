"""What a run folder says about a run at a glance: its final numbers and its settings, for browse and compare.

`summarize` reads state.json, run.toml and the run's history (engine.runs.history)
into one `RunSummary`; `differing_settings` lines up several runs' resolved
settings and keeps the ones that are not all equal. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.loading import read_toml
from engine.config.model_label import model_description, model_label
from engine.errors import ConfigError
from engine.runs.history import RunHistory
from engine.runs.layout import RUN_CONFIG
from engine.runs.liveness import read_state, trainer_gone

# Settings that name the run rather than describe how it was trained.
NOT_SETTINGS = ("run.run_name", "run.out_dir")

# (label, RunSummary attribute, format, the attribute saying the figure is partial or "") of the
# final-metrics table, in order.
METRIC_ROWS = (
    ("state", "status", "{}", ""),
    ("model", "model", "{}", ""),
    ("steps", "step", "{:,}", ""),
    ("tokens seen", "tokens_seen", "{:,}", ""),
    ("train loss", "train_loss", "{:.4f}", ""),
    ("best valid loss", "best_valid_loss", "{:.4f}", "best_valid_partial"),
    ("valid ppl", "valid_ppl", "{:,.2f}", "valid_partial"),
    ("valid word ppl", "valid_word_ppl", "{:,.2f}", "valid_partial"),
    ("test ppl", "test_ppl", "{:,.2f}", "test_partial"),
    ("test word ppl", "test_word_ppl", "{:,.2f}", "test_partial"),
    ("training time", "elapsed_s", "{:,.0f} s", ""),
)


@dataclass
class RunSummary:
    path: Path
    name: str
    status: str  # running, paused, stopped, finished, crashed; "gone" when the trainer vanished
    problem: str  # why the status is not what state.json says, or the crash message
    step: int
    total_steps: int
    tokens_seen: int
    train_loss: float | None
    best_valid_loss: float | None
    valid_ppl: float | None
    valid_word_ppl: float | None
    test_ppl: float | None
    test_word_ppl: float | None
    elapsed_s: float | None
    settings: dict[str, Any] = field(default_factory=dict)  # "section.key" -> value, from run.toml
    model: str = "?"  # "tiny", or "custom (from tiny)" (engine.config.model_label)
    model_detail: str = "?"  # the same, with what differs from the preset: "custom (from tiny): d_model 512"
    # Whether those figures come from a partial evaluation (only the split's first batches scored).
    best_valid_partial: bool = False
    valid_partial: bool = False
    test_partial: bool = False

    def partial(self, flag: str) -> bool:
        """The value of a METRIC_ROWS partial attribute ("" = never partial)."""
        return bool(flag) and bool(getattr(self, flag))

    def formatted(self, attribute: str, fmt: str) -> str:
        value = getattr(self, attribute)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "—"
        return fmt.format(value)


def flat_settings(run_dir: Path) -> dict[str, Any]:
    """run.toml as {"section.key": value}; {} when it cannot be read."""
    try:
        data = read_toml(Path(run_dir) / RUN_CONFIG)
    except ConfigError:
        return {}
    return {f"{section}.{key}": value for section, values in data.items() if isinstance(values, dict)
            for key, value in values.items()}


def summarize(run_dir: Path, history: RunHistory) -> RunSummary:
    state = read_state(run_dir)
    status, problem = str(state.get("status", "unknown")), str(state.get("message", "") or "")
    gone = trainer_gone(state)
    if gone:
        status, problem = "gone", gone
    last = history.last_step or {}
    valid = [r for r in history.evals if r.get("split") == "valid"]
    test = history.test or {}
    end = history.end or {}
    if end.get("event") == "Failed":
        problem = problem or str(end.get("message", ""))
    best_valid_loss = min(history.valid.y) if history.valid else None
    settings = flat_settings(run_dir)
    model = {key.split(".", 1)[1]: value for key, value in settings.items() if key.startswith("model.")}
    preset = str(settings.get("run.preset", ""))
    return RunSummary(
        path=Path(run_dir), name=Path(run_dir).name, status=status, problem=problem,
        step=int(last.get("step", state.get("step", 0)) or 0),
        total_steps=int(last.get("total_steps", state.get("total_steps", 0)) or 0),
        tokens_seen=int(last.get("tokens_seen", 0) or 0),
        train_loss=last.get("loss"),
        best_valid_loss=best_valid_loss,
        valid_ppl=valid[-1].get("perplexity") if valid else None,
        valid_word_ppl=valid[-1].get("word_perplexity") if valid else None,
        test_ppl=test.get("perplexity"), test_word_ppl=test.get("word_perplexity"),
        elapsed_s=last.get("elapsed_s"), settings=settings,
        model=model_label(preset, model) if settings else "?",
        model_detail=model_description(preset, model) if settings else "?",
        best_valid_partial=any(r.get("partial") is True and r.get("loss") == best_valid_loss for r in valid),
        valid_partial=bool(valid) and valid[-1].get("partial") is True, test_partial=test.get("partial") is True,
    )


def differing_settings(runs: list[RunSummary]) -> list[tuple[str, list[Any]]]:
    """(setting, value in each run) for every setting that is not the same in all runs; None = absent."""
    keys = sorted({k for r in runs for k in r.settings} - set(NOT_SETTINGS))
    rows = []
    for key in keys:
        values = [r.settings.get(key) for r in runs]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows
