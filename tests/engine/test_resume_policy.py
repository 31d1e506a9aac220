"""Flags given with --resume follow each setting's resume policy, and bad values never touch the disk.

Fixed settings (what is being trained) are refused with one line and the run
folder is left byte for byte as it was; safe ones (how long, how often) are
applied, said on screen and recorded in metrics.jsonl with the step they took
effect; run.toml takes them only once the checkpoint has been restored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.loading import build_config
from tests.conftest import tiny_overrides
from tui_lm.cli import main


def run_flags(corpus: Path, out: Path, steps: int) -> list[str]:
    o = tiny_overrides(corpus, out)
    flat = {**o["model"], **o["data"], **o["train"], "max_steps": steps, "out": str(out), "run_name": "r"}
    return ["--no-ui", *[x for k, v in flat.items() for x in (f"--{k}", str(v))]]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and "tensorboard" not in p.parts}


@pytest.fixture
def stopped_run(corpus: Path, tmp_path: Path) -> Path:
    """A finished 4-step run whose last checkpoint can be resumed with more steps."""
    assert main(run_flags(corpus, tmp_path / "o", 4) + ["--save_interval", "2"]) == 0
    return tmp_path / "o" / "r"


@pytest.mark.parametrize("flag, value, key, old", [
    ("--d_model", "64", "model.d_model", "32"),
    ("--batch_size", "8", "train.batch_size", "4"),
    ("--lr", "0.1", "train.lr", "0.003"),
    ("--seed", "7", "train.seed", "1337"),
    ("--max_seq_len", "32", "model.max_seq_len", "16"),
])
def test_fixed_settings_are_refused_and_the_run_is_untouched(stopped_run: Path, flag: str, value: str, key: str,
                                                             old: str, capsys) -> None:
    before = snapshot(stopped_run)
    capsys.readouterr()
    assert main(["--no-ui", "--resume", str(stopped_run), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{key} cannot change when resuming ({old} in run.toml, {value} asked)" in err
    assert snapshot(stopped_run) == before
    # and a plain resume still works afterwards (run.toml was not rewritten)
    assert build_config(None, stopped_run / "run.toml").model.d_model == 32


def test_dataset_change_is_refused(stopped_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["--no-ui", "--resume", str(stopped_run), "--dataset", str(tmp_path / "other")]) == 2
    assert "data.dataset cannot change when resuming" in capsys.readouterr().err


def test_safe_changes_are_applied_said_and_recorded(stopped_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["--no-ui", "--resume", str(stopped_run), "--max_steps", "8", "--eval_interval", "2"]) == 0
    out = capsys.readouterr().out
    assert "resumed with changed settings from step 4: train.max_steps 4 -> 8, train.eval_interval 4 -> 2" in out
    assert "cosine learning-rate schedule changes from step 4" in out
    assert "finished at step 8" in out
    rows = [json.loads(line) for line in (stopped_run / "metrics.jsonl").read_text().splitlines()]
    changed = [r for r in rows if r["event"] == "SettingsChanged"]
    assert changed == [{**changed[0], "step": 4,
                        "changes": {"train.max_steps": [4, 8], "train.eval_interval": [4, 2]}}]
    steps = [r["step"] for r in rows if r["event"] == "StepMetrics"]
    assert steps[-4:] == [5, 6, 7, 8]
    assert build_config(None, stopped_run / "run.toml").train.max_steps == 8  # recorded for the next resume


def test_failed_restore_leaves_run_toml_alone(stopped_run: Path, capsys) -> None:
    for ckpt in (stopped_run / "snapshots").glob("*.pt"):
        ckpt.write_bytes(b"not a checkpoint")
    before = (stopped_run / "run.toml").read_bytes()
    assert main(["--no-ui", "--resume", str(stopped_run), "--max_steps", "8"]) == 2
    assert (stopped_run / "run.toml").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "train.lr must be a finite number, got inf"),
    (["--lr", "1e309"], "train.lr must be a finite number, got inf"),
    (["--weight_decay", "inf"], "train.weight_decay must be a finite number, got inf"),
    (["--dropout", "nan"], "model.dropout must be a finite number, got nan"),
    (["--seed", "-1"], "train.seed must be between 0 and 9223372036854775807, got -1"),
    (["--seed", str(2**70)], f"train.seed must be between 0 and 9223372036854775807, got {2**70}"),
    (["--d_model", "1000000", "--num_heads", "4"], "this run needs "),
    (["--batch_size", "99999999999"], "this run needs "),
    (["--d_ff", "1e11"], "invalid int value: '1e11'"),
])
def test_bad_values_exit_2_in_one_line_and_create_nothing(argv: list[str], message: str, tmp_path: Path,
                                                          capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a default output folder would land here
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    try:
        code = main(["--no-ui", "--dataset", str(tmp_path), "--out", str(tmp_path / "runs"), *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no cache, nothing


def test_absurd_memory_names_the_estimate(capsys) -> None:
    assert main(["--no-ui", "--d_model", "1000000", "--num_heads", "4"]) == 2
    err = capsys.readouterr().err
    assert " TB of memory per device by the estimate" in err or " PB of memory per device" in err
    assert "d_model 1000000" in err


def test_warmup_longer_than_the_run_is_said(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(run_flags(corpus, tmp_path / "o", 3) + ["--warmup_steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "train.warmup_steps (1000) is not below the run's 3 steps" in out
