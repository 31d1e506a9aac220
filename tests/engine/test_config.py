"""Presets, precedence, TOML round trips and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.costs import count_params
from engine.config.loading import build_config, load_preset, preset_names, read_toml, write_toml
from engine.config.run_config import RunConfig, validation_errors
from engine.config.schedule import LRSchedule
from engine.errors import ConfigError


@pytest.mark.parametrize("name", ["tiny", "small", "medium"])
def test_preset_toml_round_trip(name: str, tmp_path: Path) -> None:
    cfg = build_config(name)
    write_toml(cfg, tmp_path / "run.toml")
    again = build_config(None, tmp_path / "run.toml")
    assert again == cfg
    assert read_toml(tmp_path / "run.toml")["run"]["preset"] == name


def test_preset_shapes_and_parameter_counts() -> None:
    assert preset_names() == ["medium", "small", "tiny"]
    shapes = {n: load_preset(n)["model"] for n in preset_names()}
    assert shapes["tiny"] == {"d_model": 256, "num_heads": 4, "num_layers": 4, "d_ff": 1024, "max_seq_len": 256, "dropout": 0.1}
    assert shapes["small"]["max_seq_len"] == 512 and shapes["medium"]["num_layers"] == 12
    counts = {n: count_params(build_config(n).model) for n in preset_names()}
    assert 15e6 < counts["tiny"] < 17e6
    assert 44e6 < counts["small"] < 46e6
    assert 123e6 < counts["medium"] < 125e6  # GPT-2 small: 124M


def test_precedence_preset_then_file_then_flags(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('[run]\npreset = "small"\n[train]\nlr = 1e-3\nbatch_size = 8\n')
    cfg = build_config(None, tmp_path / "run.toml", {"train": {"batch_size": 4}})
    assert cfg.model.d_model == 512  # from the file's preset
    assert cfg.train.lr == 1e-3  # file beats defaults
    assert cfg.train.batch_size == 4  # flags beat the file
    assert cfg.train.warmup_steps == 1000 and cfg.train.epochs == 20  # seed defaults
    assert build_config("medium", tmp_path / "run.toml").model.d_model == 768  # --preset beats the file's


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"num_heads": 3}}, "model.d_model (256) must be divisible by model.num_heads (3)"),
    ({"model": {"max_seq_len": 0}}, "model.max_seq_len must be a positive integer, got 0"),
    ({"train": {"lr": -0.1}}, "train.lr must be positive, got -0.1"),
    ({"train": {"precision": "fp8"}}, "train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    ({"train": {"batch_size": 6, "grad_accum_steps": 4}}, "train.batch_size (6) must be divisible by train.grad_accum_steps (4)"),
    ({"model": {"dropout": 1.5}}, "model.dropout must be in [0, 1), got 1.5"),
    ({"train": {"device": "gpu"}}, "train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
])
def test_invalid_values_name_field_value_and_allowed(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config("tiny", None, overrides)
    assert str(err.value) == message


def test_toml_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = 1e-3\n")
    with pytest.raises(ConfigError, match=r"unknown key train.learning_rate; allowed in \[train\]: epochs, max_steps"):
        build_config(None, bad)
    bad.write_text('[train]\nbatch_size = "32"\n')
    with pytest.raises(ConfigError, match=r"train.batch_size must be int, got str '32'"):
        build_config(None, bad)
    bad.write_text("[trainer]\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[trainer\]"):
        build_config(None, bad)
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        build_config(None, bad)
    with pytest.raises(ConfigError, match="preset 'huge' does not exist; choose one of: medium, small, tiny"):
        build_config("huge")


def test_validation_errors_lists_every_field() -> None:
    cfg = RunConfig()
    cfg.model.num_heads = 3
    cfg.train.lr = 0
    assert set(validation_errors(cfg)) == {"model.d_model", "train.lr"}


def test_lr_schedule_warmup_then_cosine_to_min() -> None:
    schedule = LRSchedule(lr=0.5, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    m = schedule.multiplier
    assert m(0) == pytest.approx(0.1)
    assert m(9) == 1.0
    assert m(60) == pytest.approx(0.55)  # half way through the cosine
    assert m(110) == pytest.approx(0.1)
    assert all(m(s) >= m(s + 1) for s in range(10, 120))
    # The LR plotted is the peak times the multiplier.
    assert [schedule.at(s) for s in (0, 9, 60)] == pytest.approx([0.05, 0.5, 0.275])
