"""The settings schema: every setting reaches the CLI, `estimate`, the setup form and TOML; values are checked.

These walk engine.config.run_config.SCHEMA, so a setting added with one `setting(...)`
declaration is covered here without editing this file, and one that some
surface misses fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config.loading import build_config, read_toml, write_toml
from engine.config.run_config import SCHEMA, SETTINGS, RunConfig, user_settings, validation_errors
from engine.config.schema import Setting, value_problem
from engine.errors import ConfigError
from tui_lm.cli import build_parser, main, overrides_from
from tui_lm.commands import estimate
from tui_lm.widgets.setup.fields import ELSEWHERE, FIELDS, parse


def other_value(s: Setting) -> Any:
    """A valid value that is not the default (what a user might type)."""
    d = s.default
    if s.kind == "int":
        candidates: list[Any] = [d + 1, d * 2, d - 1, 1]
    elif s.kind == "float":
        candidates = [d / 2, d * 2, 0.25]
    elif s.kind == "bool":
        candidates = [not d]
    elif s.kind == "choice":
        candidates = [c for c in s.choices if c != d]
    else:
        candidates = ["small", "cpu", "45m"]  # a name, a device, a duration
    for value in candidates:
        if value != d and not value_problem(s, value):
            return value
    raise AssertionError(f"no valid non-default value found for {s.key}")


def as_flag(s: Setting, value: Any, spelling: str = "") -> list[str]:
    spelling = spelling or s.flags[0]
    if s.kind == "bool":
        # --no_x_y for --x_y, --no-x-y for --x-y (a default-on boolean is turned off this way)
        return [spelling] if value else [("--no-" if "-" in spelling[2:] else "--no_") + spelling[2:]]
    return [spelling, str(value)]


@pytest.mark.parametrize("s", user_settings(), ids=lambda s: s.key)
def test_every_setting_has_a_flag_with_every_spelling(s: Setting) -> None:
    value = other_value(s)
    for spelling in s.flags:
        for variant in {spelling, spelling.replace("_", "-")}:
            args = build_parser().parse_args(as_flag(s, value, variant))
            assert overrides_from(args) == {s.section: {s.name: value}}, variant


def test_booleans_turn_off_with_no_flag() -> None:
    for s in user_settings():
        if s.kind != "bool":
            continue
        name = s.flags[0][2:]
        for flag in (f"--no_{name}", f"--no-{name.replace('_', '-')}"):
            assert overrides_from(build_parser().parse_args([flag])) == {s.section: {s.name: False}}
        assert overrides_from(build_parser().parse_args([s.flags[0]])) == {s.section: {s.name: True}}


def test_estimate_takes_the_settings_declared_for_it() -> None:
    declared = [s for s in user_settings() if s.estimate]
    assert {"train.batch_size", "data.vocab_size", "train.grad_checkpointing"} <= {s.key for s in declared}
    for s in declared:
        value = other_value(s)
        args = estimate.build_parser().parse_args(as_flag(s, value))
        assert estimate.overrides_from(args) == {s.section: {s.name: value}}, s.key


def test_the_form_covers_every_setting() -> None:
    assert set(FIELDS) | set(ELSEWHERE) == {s.key for s in user_settings()}
    assert not set(FIELDS) & set(ELSEWHERE)
    for key, spec in FIELDS.items():
        if spec.kind in ("int", "float", "str"):
            value = other_value(spec)
            assert parse(spec, str(value)) == (value, ""), key


def test_toml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    cfg = RunConfig()
    for s in SCHEMA:
        setattr(getattr(cfg, s.section), s.name, other_value(s))
    write_toml(cfg, tmp_path / "run.toml")
    written = read_toml(tmp_path / "run.toml")
    assert {f"{sec}.{k}" for sec, values in written.items() for k in values} == set(SETTINGS)
    cfg.run.preset = "small"  # a preset the merge can load
    write_toml(cfg, tmp_path / "run.toml")
    assert build_config(None, tmp_path / "run.toml", check=False) == cfg


def test_old_run_files_keep_grad_checkpointing(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text("[model]\ngrad_checkpointing = true\n")
    cfg = build_config(None, tmp_path / "run.toml")
    assert cfg.train.grad_checkpointing is True
    assert "grad_checkpointing" not in cfg.to_dict()["model"]


def test_help_shows_metavars_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--d_model N, --d-model N width of the residual stream (default 256)" in out
    assert "--lr FLOAT peak learning rate (default 0.0003)" in out
    assert "--out PATH, --out_dir PATH" in out and "(default lm_<dataset>)" in out
    assert "--grad_checkpointing, --grad-checkpointing" in out and "--no_grad_checkpointing" in out
    assert "--beta1 FLOAT" in out and "--layer_norm_eps FLOAT" in out and "--valid_fraction FLOAT" in out
    assert "MODEL.D_MODEL" not in out and "TRAIN." not in out


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"lr": float("inf")}}, "train.lr must be a finite number, got inf"),
    ({"train": {"weight_decay": float("inf")}}, "train.weight_decay must be a finite number, got inf"),
    ({"model": {"layer_norm_eps": float("inf")}}, "model.layer_norm_eps must be a finite number, got inf"),
    ({"train": {"min_lr_ratio": float("nan")}}, "train.min_lr_ratio must be a finite number, got nan"),
    ({"train": {"seed": -1}}, "train.seed must be between 0 and 9223372036854775807, got -1"),
    ({"train": {"seed": 2**70}}, f"train.seed must be between 0 and 9223372036854775807, got {2**70}"),
    ({"train": {"keep_checkpoints": 0}}, "train.keep_checkpoints must be at least 1, got 0"),
    ({"train": {"eval_batches": -1}}, "train.eval_batches must be 0 (whole split) or positive, got -1"),
    ({"data": {"valid_fraction": 0.5}}, "data.valid_fraction must be in (0, 0.5), got 0.5"),
    ({"run": {"run_name": "a/b"}}, "run.run_name must be a plain folder name, got 'a/b'"),
    ({"data": {"dataset": "a\x00b"}}, "data.dataset must not contain NUL bytes"),
])
def test_values_are_checked(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config("tiny", None, overrides)
    assert str(err.value) == message


def test_infinite_float_in_a_run_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text("[model]\nlayer_norm_eps = inf\n")
    with pytest.raises(ConfigError, match="model.layer_norm_eps must be a finite number, got inf"):
        build_config(None, tmp_path / "run.toml")


def test_validation_covers_every_bounded_setting() -> None:
    """A value past each declared bound is reported on that field."""
    for s in user_settings():
        below = [s.gt] if s.gt is not None else [s.ge - 1] if s.ge is not None else []
        above = [s.lt] if s.lt is not None else [s.le + 1] if s.le is not None else []
        for bad in below + above:
            cfg = RunConfig()
            setattr(getattr(cfg, s.section), s.name, type(s.default)(bad))
            assert s.key in validation_errors(cfg), (s.key, bad)
