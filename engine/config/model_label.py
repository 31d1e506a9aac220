"""What a run's model is called on screen: its preset's name when its shape is the preset's, else
"custom (from <preset>)".

run.preset records the preset a run started from, and resuming reads it back
(engine.config.loading.build_config applies the preset, then run.toml's own
values), so it stays a real preset's name even when flags changed the shape:
old and new run folders resume exactly. The label users read is derived here,
once, from the run's model section against the preset's, for the resume
picker, browse, compare, the dashboard header and the comment at the top of
run.toml. Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.config.run_config import RunConfig
from engine.errors import ConfigError

CUSTOM = "custom"


def shape_changes(preset: str, model: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{setting: (the preset's value, the run's)} for each of the preset's [model] values the run does not share.

    A key missing from `model` (an older run.toml) takes the preset's value on
    resume, so it is not a change. Raises ConfigError for a preset that does
    not exist.
    """
    # Imported here: loading imports this module to write run.toml's comment.
    from engine.config.loading import load_preset

    shape = load_preset(preset).get("model", {})
    return {key: (value, model[key]) for key, value in shape.items() if key in model and model[key] != value}


def model_label(preset: str, model: Mapping[str, Any]) -> str:
    """'tiny' for tiny's shape; 'custom (from tiny)' once a flag changed it; 'custom' without a preset."""
    if not preset:
        return CUSTOM
    try:
        changed = shape_changes(preset, model)
    except ConfigError:
        return f"{preset} (unknown preset)"
    return f"{CUSTOM} (from {preset})" if changed else preset


def model_description(preset: str, model: Mapping[str, Any]) -> str:
    """The label and, for a custom shape, what differs: 'custom (from tiny): d_model 512, num_layers 6'."""
    label = model_label(preset, model)
    if not label.startswith(f"{CUSTOM} (from "):
        return label
    changed = shape_changes(preset, model)
    return f"{label}: " + ", ".join(f"{key} {run}" for key, (_, run) in changed.items())


def config_model(cfg: RunConfig) -> tuple[str, dict[str, Any]]:
    """(preset, model section) of a config, the arguments of the functions above."""
    return cfg.run.preset, dataclasses.asdict(cfg.model)


def toml_comment(cfg: RunConfig) -> str:
    """The first line of a written run.toml / profile: a comment, so resuming never reads it as a setting."""
    return f"# model: {model_description(*config_model(cfg))}\n"
