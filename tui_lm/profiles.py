"""Saved run profiles: named TOML files in one folder, the same format as a run's run.toml.

The folder is `$TUI_LM_PROFILES` when that is set, else
`~/.config/tui-lm/profiles/`. A profile is written with `engine.config.loading.write_toml`,
so any run folder's `run.toml` can be copied in as a profile and any profile can
be passed to `tui-lm path/to/profile.toml` or `tui-lm --no-ui --config ...`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.config.loading import build_config, write_toml
from engine.config.run_config import RunConfig
from engine.errors import ConfigError

PROFILES_ENV = "TUI_LM_PROFILES"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def profiles_dir() -> Path:
    """Where profiles are saved and listed from (not created until the first save)."""
    env = os.environ.get(PROFILES_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "tui-lm" / "profiles"


def list_profiles() -> list[Path]:
    folder = profiles_dir()
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.toml"))


def name_problem(name: str) -> str:
    """Why `name` cannot be a profile name; "" when it can."""
    if not name:
        return "enter a profile name"
    if not _NAME.match(name):
        return "use letters, digits, '.', '_' or '-' (no spaces or slashes)"
    return ""


def profile_path(name: str) -> Path:
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"profile name {name!r}: {problem}")
    return profiles_dir() / f"{name.removesuffix('.toml')}.toml"


def save_profile(cfg: RunConfig, name: str) -> Path:
    path = profile_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_toml(cfg, path)
    return path


def load_profile(path: str | Path) -> RunConfig:
    """defaults < the file's preset < the file (the one merge, `build_config`), *not validated*.

    The setup screen shows invalid values next to their fields instead of
    refusing the file; only unreadable TOML, unknown keys and wrong types raise
    `ConfigError`.
    """
    return build_config(None, path, check=False)
