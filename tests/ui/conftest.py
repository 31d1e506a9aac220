"""Fixtures of the dashboard tests: a small text corpus, a tiny run profile, isolated folders.

Everything the app writes (token cache, profiles, runs) goes to tmp_path, and
GPU detection is switched off so the memory panel shows the same catalogue
card on every machine.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from rich.text import Text

from engine.config.loading import apply_overrides, write_toml
from engine.config.run_config import RunConfig


WORDS = ("the cat dog sat on a mat , . and of history river king was is in to a an "
         "city war music film game team season album").split()


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name, n in (("train", 400), ("valid", 60), ("test", 60)):
        lines = [" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for _ in range(n)]
        (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "tinytext")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache_dir: Path) -> None:
    # The picker scans ./lm_*: a working folder of the test's own, not the checkout's.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUI_LM_CACHE", str(cache_dir))
    # The home cache is a token cache too (prepare_data falls back to it): keep the machine's out.
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir / "xdg"))
    monkeypatch.setenv("TUI_LM_PROFILES", str(tmp_path / "profiles"))
    import engine.memory.gpus
    import tui_lm.widgets.setup.memory_panel as memory_panel

    monkeypatch.setattr(engine.memory.gpus, "detect_gpus", lambda: [])
    # The CPU target's capacity: the same on every machine, for the pictures.
    monkeypatch.setattr(memory_panel, "machine_ram", lambda: 16 * 2**30)


def tiny_config(corpus: Path, out_dir: Path, **train: Any) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(cfg, {
        "model": {"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "max_seq_len": 32, "dropout": 0.0},
        "train": {"batch_size": 4, "max_steps": 40, "eval_interval": 10, "eval_batches": 2, "sample_tokens": 8,
                  "log_interval": 1, "warmup_steps": 5, "device": "cpu", **train},
        "data": {"dataset": str(corpus), "vocab_size": 300},
        "run": {"preset": "", "out_dir": str(out_dir), "run_name": "flow"},
    }, "test")
    return cfg


@pytest.fixture
def tiny_profile(corpus: Path, tmp_path: Path) -> Callable[..., Path]:
    """Write a tiny run profile to tmp_path and return its path; keyword args override [train]."""

    def make(name: str = "tiny-test", **train: Any) -> Path:
        path = tmp_path / f"{name}.toml"
        write_toml(tiny_config(corpus, tmp_path / "runs", **train), path)
        return path

    return make


async def wait_for(pilot: Any, condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Let the app run until `condition()` holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        # A plain sleep: pilot.pause() repaints the whole screen each call, and
        # 20 repaints a second would starve the training thread of the GIL.
        await asyncio.sleep(0.05)
    await pilot.pause()


def text(widget: Any, width: int = 100) -> str:
    """What a Static shows, as plain text (its content rendered by Rich, markup resolved)."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None)
    content = widget.content
    console.print(Text.from_markup(content) if isinstance(content, str) else content)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()).strip("\n")


def run(coro: Any) -> Any:
    """Tests are plain functions running their async flow; no async pytest plugin needed."""
    return asyncio.run(coro)


def screen_text(app: Any) -> str:
    """The whole screen as the user sees it, plain text, one line per row (what a snapshot shows)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                      record=True, legacy_windows=False, safe_box=False)
    # The same render export_screenshot makes for the snapshot tests.
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
