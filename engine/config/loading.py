"""Presets, TOML files and the one merge: defaults < preset < run file < command-line flags.

`build_config` is the merge every face uses (CLI, setup screen, `estimate`,
resume); `apply_overrides` checks each key and value against the settings'
declarations in engine/config/run_config.py and is the only function here that
mutates the config it is given, which is its job. `write_toml` is atomic.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from engine.config.run_config import LEGACY_KEYS, SCHEMA, SECTIONS, SETTINGS, RunConfig, _plain_name, validate
from engine.config.schema import coerce
from engine.errors import ConfigError


# ----------------------------------------------------------------------------- presets

def presets_dir() -> Path:
    """The preset folder: inside the package when installed, top level in a checkout."""
    packaged = Path(__file__).parents[1] / "presets"
    return packaged if packaged.is_dir() else Path(__file__).parents[2] / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def load_preset(name: str) -> dict[str, dict[str, Any]]:
    path = presets_dir() / f"{name}.toml"
    if not _plain_name(name) or not path.is_file():
        raise ConfigError(
            f"preset {name!r} does not exist; choose one of: {', '.join(preset_names())}"
        )
    return read_toml(path)


def with_preset(cfg: RunConfig, name: str) -> RunConfig:
    """A copy of `cfg` with preset `name`'s values applied on top."""
    out = copy.deepcopy(cfg)
    apply_overrides(out, load_preset(name), f"preset {name}")
    out.run.preset = name
    return out


# ----------------------------------------------------------------------------- TOML + merging

def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:  # binary, Latin-1...: TOML is UTF-8
        raise ConfigError(f"config file {path} is not UTF-8 text (invalid byte at offset {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except ValueError as e:  # an embedded NUL byte in the path
        raise ConfigError(f"config file {str(path)!r} cannot be opened: {e}") from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str) -> None:
    """Set values from a nested {section: {key: value}} mapping, checking names and types."""
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; allowed: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        for key, value in values.items():
            full = LEGACY_KEYS.get(f"{section}.{key}", f"{section}.{key}")
            s = SETTINGS.get(full)
            if s is None:
                allowed = ", ".join(x.name for x in SCHEMA if x.section == section)
                raise ConfigError(f"{source}: unknown key {section}.{key}; allowed in [{section}]: {allowed}")
            try:
                value = coerce(s, value, f"{source}: {section}.{key}")
            except ValueError as e:
                raise ConfigError(str(e)) from None
            setattr(getattr(cfg, s.section), s.name, value)


def build_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    check: bool = True,
) -> RunConfig:
    """The one merge: defaults < preset < run file < overrides, then (unless told not to) validate.

    The preset is `preset`, else the overrides' run.preset (the --preset
    flag), else the file's run.preset, else "tiny" when there is no file.
    `check=False` is for the setup screen, which shows bad values next to
    their fields instead of refusing the file; unreadable TOML, unknown keys
    and wrong types raise `ConfigError` either way.
    """
    cfg = RunConfig()
    file_values = read_toml(file) if file else {}
    flag_preset = (overrides or {}).get("run", {}).get("preset")
    file_run = file_values.get("run") if isinstance(file_values.get("run"), dict) else {}
    explicit = preset or flag_preset
    chosen = explicit or file_run.get("preset") or (None if file else "tiny")
    if chosen:
        if not isinstance(chosen, str):
            raise ConfigError(f"{file}: run.preset must be str, got {type(chosen).__name__} {chosen!r}")
        cfg = with_preset(cfg, chosen)
    if file_values:
        apply_overrides(cfg, file_values, str(file))
    if explicit:
        cfg.run.preset = explicit
    if overrides:
        apply_overrides(cfg, overrides, "command line")
    if check:
        validate(cfg)
    return cfg


def write_toml(cfg: RunConfig, path: str | Path) -> None:
    from engine.config.model_label import toml_comment  # it reads presets through this module
    from engine.files import write_text  # atomic: a full disk never leaves a truncated run.toml

    write_text(Path(path), toml_comment(cfg) + cfg.to_toml())
