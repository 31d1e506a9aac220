"""torchrun on the CPU with gloo and 2 processes: same numbers as 1 process, cross-size resume, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.runs.checkpoints import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[2]

# Test scaffolding run by every rank: optional fault injection, then the real CLI.
LAUNCHER = """
import os, signal, sys
if os.environ.get("TEST_COMPILE_BACKEND"):  # the CUDA default (compile on) with a backend fast on 2 cores
    import functools, torch
    torch.compile = functools.partial(torch.compile, backend=os.environ["TEST_COMPILE_BACKEND"])
from engine import events as ev
import tui_lm.headless as headless
stop_at = int(os.environ.get("TEST_STOP_AT", "0"))
fail_rank, _, fail_step = os.environ.get("TEST_FAIL_AT", "-1:0").partition(":")
real = headless.Printer.__call__
def call(self, e):
    real(self, e)
def step_hook(trainer_step):
    pass
import engine.train.trainer as t
real_train_step = t.Trainer._train_step
def train_step(self, batches):
    if self.progress.step + 1 == int(fail_step) and self.s.rt.rank == int(fail_rank):
        raise RuntimeError("injected failure")
    out = real_train_step(self, batches)
    if stop_at and self.progress.step + 1 == stop_at:
        os.kill(os.getpid(), signal.SIGTERM)  # as torchrun does on Ctrl-C
    return out
t.Trainer._train_step = train_step
from tui_lm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(args: list[str], tmp: Path, nproc: int, **env: str) -> subprocess.CompletedProcess:
    launcher = tmp / "launch.py"
    launcher.write_text(LAUNCHER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(launcher)] if nproc > 1 else [sys.executable, str(launcher)]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd + args, env=full_env, capture_output=True, text=True, timeout=300)


def flags(corpus: Path, out: Path, name: str, steps: int = 6) -> list[str]:
    return ["--no-ui", "--dataset", str(corpus), "--d_model", "32", "--num_heads", "2", "--num_layers", "1",
            "--d_ff", "64", "--max_seq_len", "16", "--dropout", "0", "--batch_size", "8", "--max_steps", str(steps),
            "--vocab_size", "300", "--eval_interval", "0", "--log_interval", "1", "--sample_tokens", "0",
            "--device", "cpu", "--out", str(out), "--run_name", name, "--warmup_steps", "2", "--lr", "3e-3"]


def step_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["event"] == "StepMetrics"]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = load_file(a / "models" / "model.safetensors"), load_file(b / "models" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=atol)


@pytest.fixture
def prepared(corpus: Path, tmp_path: Path) -> Path:
    """Tokenize once in this process so the ranks only read the cache."""
    from engine.config.run_config import DataConfig
    from engine.data.token_cache import prepare_data

    prepare_data(DataConfig(dataset=str(corpus), vocab_size=300))
    return corpus


def test_two_ranks_match_one_rank_and_resume_across_sizes(prepared: Path, tmp_path: Path) -> None:
    one = run(flags(prepared, tmp_path, "one"), tmp_path, 1)
    assert one.returncode == 0, one.stderr
    two = run(flags(prepared, tmp_path, "two"), tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("finished at step 6") == 1  # only rank 0 prints
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    meta = json.loads(list_checkpoints(tmp_path / "two")[-1].with_suffix(".json").read_text())
    assert meta["world_size"] == 2

    # Stopped (SIGTERM on every rank) under 2 ranks at step 3, resumed under 1 rank.
    stopped = run(flags(prepared, tmp_path, "split"), tmp_path, 2, TEST_STOP_AT="3")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped at step 3" in stopped.stdout
    resumed = run(["--no-ui", "--resume", str(tmp_path / "split")], tmp_path, 1)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 3" in resumed.stdout
    assert step_losses(tmp_path / "split") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "one", tmp_path / "split")


def test_modern_block_with_muon_matches_across_ranks(prepared: Path, tmp_path: Path) -> None:
    # Muon orthogonalises the all-reduced gradient (each rank its share, then all-gathered), so every
    # rank takes the same step as one process.
    # Its Newton-Schulz iteration runs in bf16, which turns the all-reduce's float rounding into
    # differences of up to ~3e-4 per weight after 4 steps at lr 0.02 (measured), hence the wider atol.
    # The two ranks also compute the loss in chunks (DDP's hooks see the same gradients).
    extra = ["--arch", "modern", "--optimizer", "muon", "--muon_lr", "0.02"]
    one = run(flags(prepared, tmp_path, "one", steps=4) + extra, tmp_path, 1)
    assert one.returncode == 0, one.stderr
    two = run(flags(prepared, tmp_path, "two", steps=4) + extra + ["--loss_chunk", "24"], tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=2e-3)
    # Each rank orthogonalises its share of the matrices, yet every rank keeps every momentum buffer:
    # stopped under 2 ranks at step 2, the run resumes on 1 and ends where one process does.
    stopped = run(flags(prepared, tmp_path, "split", steps=4) + extra, tmp_path, 2, TEST_STOP_AT="2")
    assert stopped.returncode == 0 and "stopped at step 2" in stopped.stdout, stopped.stderr[-3000:]
    resumed = run(["--no-ui", "--resume", str(tmp_path / "split")], tmp_path, 1)
    assert resumed.returncode == 0 and "finished at step 4" in resumed.stdout, resumed.stderr[-3000:]
    assert step_losses(tmp_path / "split") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "one", tmp_path / "split", atol=2e-3)


def test_failing_rank_ends_job_and_keeps_checkpoint(prepared: Path, tmp_path: Path) -> None:
    result = run(flags(prepared, tmp_path, "fail") + ["--save_interval", "2"], tmp_path, 2, TEST_FAIL_AT="1:4")
    assert result.returncode != 0
    assert "[rank 1] RuntimeError: injected failure" in result.stderr
    run_dir = tmp_path / "fail"
    last = list_checkpoints(run_dir)[-1]
    assert last.name == "step_0000002.pt"
    assert load_checkpoint(last)["trainer"]["step"] == 2
    again = run(["--no-ui", "--resume", str(run_dir)], tmp_path, 1)
    assert again.returncode == 0 and "finished at step 6" in again.stdout


def test_compiled_ddp_with_accumulation_trains_stops_and_resumes(prepared: Path, tmp_path: Path) -> None:
    # What a multi-GPU user runs by default: torch.compile on, DDP, accumulation micro-steps under no_sync.
    accum = ["--grad_accum_steps", "2"]
    one = run(flags(prepared, tmp_path, "one") + accum, tmp_path, 1)
    assert one.returncode == 0, one.stderr
    compiled = ["--compile", "on"] + accum
    stopped = run(flags(prepared, tmp_path, "two") + compiled, tmp_path, 2, TEST_STOP_AT="3",
                  TEST_COMPILE_BACKEND="aot_eager")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "torch.compile" in stopped.stdout and "stopped at step 3" in stopped.stdout
    resumed = run(["--no-ui", "--resume", str(tmp_path / "two"), "--compile", "on"], tmp_path, 2,
                  TEST_COMPILE_BACKEND="aot_eager")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished at step 6" in resumed.stdout
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-4)
    assert_same_weights(tmp_path / "one", tmp_path / "two")
