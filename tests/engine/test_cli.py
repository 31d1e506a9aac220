"""The headless command line: flags, exit statuses and messages a user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.loading import build_config, write_toml
from tests.conftest import tiny_overrides
from tui_lm.cli import main

REPO = Path(__file__).resolve().parents[2]


def flags(corpus: Path, out: Path, steps: int = 6) -> list[str]:
    return ["--no-ui", "--preset", "tiny", "--dataset", str(corpus), "--d_model", "32", "--num_heads", "2",
            "--num_layers", "1", "--d_ff", "64", "--max-seq-len", "16", "--batch_size", "4", "--max-steps", str(steps),
            "--vocab-size", "300", "--eval-interval", "3", "--eval_batches", "2", "--log-interval", "2",
            "--sample-tokens", "0", "--device", "cpu", "--out", str(out), "--run-name", "cli"]


@pytest.mark.parametrize("argv, message", [
    (["--num_heads", "3"], "model.d_model (256) must be divisible by model.num_heads (3)"),
    (["--max-seq-len", "0"], "model.max_seq_len must be a positive integer, got 0"),
    (["--lr", "-1"], "train.lr must be positive, got -1.0"),
    (["--precision", "fp8"], "train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    (["--model_preset", "huge"], "preset 'huge' does not exist; choose one of: medium, small, tiny"),
    (["--batch_size", "abc"], "argument --batch_size/--batch-size: invalid int value: 'abc'"),
    (["--learning-rate", "1"], "unrecognized arguments: --learning-rate"),
    (["--config", "nowhere.toml"], "config file nowhere.toml does not exist"),
])
def test_bad_flags_exit_2_with_one_clear_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        code = main(["--no-ui", *argv])
        raise SystemExit(code)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_unknown_key_in_run_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "run.toml").write_text("[model]\nd_modle = 3\n")
    assert main(["--no-ui", "--config", str(tmp_path / "run.toml")]) == 2
    assert "unknown key model.d_modle" in capsys.readouterr().err


def test_headless_run_then_resume_latest(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "tui_lm", *flags(corpus, out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "step      6/6" in done.stdout and "finished at step 6" in done.stdout
    assert "word ppl" in done.stdout
    run_dir = out / "cli"
    assert (run_dir / "models" / "model.safetensors").is_file()
    # Resuming a finished run is refused with a clear message.
    again = subprocess.run([sys.executable, "-m", "tui_lm", "--no-ui", "--resume", "--out", str(out),
                            "--dataset", str(corpus)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "no resumable run found in" in again.stderr


def test_flags_override_run_file_and_resolved_config_is_written(corpus: Path, tmp_path: Path) -> None:
    cfg = build_config("tiny", None, tiny_overrides(corpus, tmp_path / "o"))
    write_toml(cfg, tmp_path / "profile.toml")
    assert main(["--no-ui", "--config", str(tmp_path / "profile.toml"), "--max_steps", "3", "--run_name", "fromfile"]) == 0
    written = (tmp_path / "o" / "fromfile" / "run.toml").read_text()
    assert "max_steps = 3" in written and "d_model = 32" in written
    assert json.loads((tmp_path / "o" / "fromfile" / "state.json").read_text())["status"] == "finished"


def test_existing_run_folder_is_never_overwritten(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(flags(corpus, tmp_path, steps=2)) == 0
    before = (tmp_path / "cli" / "metrics.jsonl").read_text()
    assert main(flags(corpus, tmp_path, steps=2)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "cli" / "metrics.jsonl").read_text() == before
