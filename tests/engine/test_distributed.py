"""torchrun on the CPU with gloo and 2 processes: same numbers as 1 process, cross-size resume, failures, slow
ranks, and the CUDA defaults (compile, DDP, accumulation) trained, steered, killed and resumed."""

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
from tests.processes import TrainerProcess

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], tmp: Path, nproc: int, **env: str) -> subprocess.CompletedProcess:
    """The CLI on `nproc` ranks (one plain process for 1), with tests/rank_launcher.py's knobs in `env`."""
    launcher = ["-m", "tests.rank_launcher"]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *launcher]
           if nproc > 1 else [sys.executable, *launcher])
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


@pytest.mark.slow
def test_ranks_wait_out_each_others_slow_host_work_on_the_long_timeout_group(prepared: Path, tmp_path: Path) -> None:
    # The default group's collectives time out after 5 s here (NCCL's watchdog: 10 min). Rank 1's data
    # preparation and rank 0's checkpoint and final-model writes each take 7 s longer: the other rank waits
    # on the gloo group with the long timeout, never in a collective of the default group.
    result = run(flags(prepared, tmp_path, "slow", steps=2) + ["--save_interval", "2"], tmp_path, 2,
                 TEST_PG_TIMEOUT="5", TEST_SLOW_PREPARE="1:7", TEST_SLOW_SAVE="7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished at step 2" in result.stdout
    assert [p.name for p in list_checkpoints(tmp_path / "slow")] == ["step_0000002.pt"]
    assert (tmp_path / "slow" / "models" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- what a multi-GPU user runs by default
# torch.compile on (aot_eager: inductor takes minutes to build its kernels on 2 cores), DDP, accumulation, the
# constant learning rate after warm-up (min_lr_ratio 1) so that a resume may set another max_steps and still
# follow the uninterrupted run step for step. Each case combines several axes; the uninterrupted reference is one
# eager process.

COMPILED = {"TEST_COMPILE_BACKEND": "aot_eager"}
STEERED = {**COMPILED, "TEST_SLOW_STEP": "0.2"}  # a request from outside lands within a step or two
CONSTANT_LR = ["--grad_accum_steps", "2", "--min_lr_ratio", "1"]


def steer(action: str, run_dir: Path) -> int:
    from tui_lm.cli import main

    return main([action, str(run_dir), "--wait", "--timeout", "120"])


def trainer(args: list[str], tmp: Path, nproc: int) -> TrainerProcess:
    return TrainerProcess(args, tmp, nproc=nproc, module="tests.rank_launcher", env=STEERED)


@pytest.mark.slow
def test_compiled_ddp_modern_muon_chunked_steered_from_outside_resumes_on_one_forced_rank(
        prepared: Path, tmp_path: Path) -> None:
    """2 ranks, modern + Muon + chunked loss, paused then stopped by `tui-lm pause|stop RUN` from this process;
    resumed on one process that runs the distributed path (TUI_LM_FORCE_DDP=1), compiled; equal to one eager run."""
    from engine.runs.liveness import read_state

    extra = CONSTANT_LR + ["--arch", "modern", "--optimizer", "muon", "--muon_lr", "0.02", "--loss_chunk", "24"]
    run_dir = tmp_path / "steered"
    proc = trainer(flags(prepared, tmp_path, "steered", steps=100_000) + extra + ["--compile", "on"], tmp_path, 2)
    try:
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) >= 2, timeout=240, what="two compiled ranks")
        assert steer("pause", run_dir) == 0
        paused = read_state(run_dir)
        assert paused["status"] == "paused" and paused["world_size"] == 2
        assert steer("stop", run_dir) == 0
        code, out, err = proc.finish()
        assert code == 0, err[-3000:]
    finally:
        proc.kill()
    assert "torch.compile" in out and "DistributedDataParallel over 2 rank(s), gloo" in out
    stopped_at = read_state(run_dir)["step"]
    end = stopped_at + 2
    resumed = run(["--no-ui", "--resume", str(run_dir), "--compile", "on", "--max_steps", str(end)], tmp_path, 1,
                  TUI_LM_FORCE_DDP="1", **COMPILED)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {stopped_at}" in resumed.stdout and f"finished at step {end}" in resumed.stdout
    assert "DistributedDataParallel over 1 rank(s), gloo (forced by TUI_LM_FORCE_DDP=1)" in resumed.stdout
    straight = run(flags(prepared, tmp_path, "straight", steps=end) + extra, tmp_path, 1)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert step_losses(run_dir) == pytest.approx(step_losses(tmp_path / "straight"), rel=1e-3)
    assert_same_weights(tmp_path / "straight", run_dir, atol=2e-3)  # Muon's bf16 Newton-Schulz (see above)


@pytest.mark.slow
def test_compiled_ddp_gpt2_adamw_bf16_killed_resumes_from_its_last_checkpoint(prepared: Path, tmp_path: Path) -> None:
    """2 ranks, gpt2 + AdamW in bf16 autocast (the CUDA default precision), the whole job SIGKILLed after a
    checkpoint; resumed on 2 ranks, compiled; its steps after the checkpoint equal one eager run's."""
    from engine.runs.liveness import read_state

    extra = CONSTANT_LR + ["--precision", "bf16", "--save_interval", "3"]
    run_dir = tmp_path / "killed"
    proc = trainer(flags(prepared, tmp_path, "killed", steps=100_000) + extra + ["--compile", "on"], tmp_path, 2)
    try:
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) >= 4, timeout=240, what="a checkpoint at step 3")
    finally:
        proc.kill()
    assert proc.poll() == -9
    saved_at = load_checkpoint(list_checkpoints(run_dir)[-1])["trainer"]["step"]
    assert saved_at >= 3 and saved_at % 3 == 0
    end = saved_at + 3
    resumed = run(["--no-ui", "--resume", str(run_dir), "--compile", "on", "--max_steps", str(end)], tmp_path, 2,
                  **COMPILED)
    assert resumed.returncode == 0, resumed.stdout[-1000:] + resumed.stderr[-3000:]
    assert f"at step {saved_at}" in resumed.stdout and f"finished at step {end}" in resumed.stdout
    straight = run(flags(prepared, tmp_path, "straight", steps=end) + extra, tmp_path, 1)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert step_losses(run_dir)[-3:] == pytest.approx(step_losses(tmp_path / "straight")[-3:], rel=1e-3)
    # bf16 autocast rounds each rank's half batch apart from the whole one: up to 0.017 per weight after
    # 6 steps (measured); a wrong data position or optimizer state would move the losses above first.
    assert_same_weights(tmp_path / "straight", run_dir, atol=3e-2)
