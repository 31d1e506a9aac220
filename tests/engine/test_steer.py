"""Steering a run from outside: real headless and torchrun trainers paused, resumed, stopped by `tui-lm pause|resume|stop`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.runs.liveness import read_state, trainer_gone
from engine.runs.requests import pending_request, take_request, write_request
from tests.processes import REPO, headless_flags
from tests.processes import TrainerProcess as Trainer
from tui_lm.cli import main


def env() -> dict[str, str]:
    """Read when a process starts: the fixtures set TUI_LM_CACHE after import."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def steer(*argv: str) -> int:
    return main([*argv, "--wait", "--timeout", "60"])


def step_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["event"] == "StepMetrics"]


@pytest.fixture
def prepared(corpus: Path) -> Path:
    """Tokenize once in this process so the trainers only read the cache."""
    from engine.config.run_config import DataConfig
    from engine.data.token_cache import prepare_data

    prepare_data(DataConfig(dataset=str(corpus), vocab_size=300))
    return corpus


# ----------------------------------------------------------------------------- the request file, liveness


def test_request_is_taken_once_and_unknown_actions_refused(tmp_path: Path) -> None:
    assert take_request(tmp_path) is None
    write_request(tmp_path, "pause")
    write_request(tmp_path, "stop")  # the newer request replaces an unread one
    assert pending_request(tmp_path) == "stop"
    assert take_request(tmp_path) == "stop"
    assert take_request(tmp_path) is None and not list(tmp_path.iterdir())
    with pytest.raises(ValueError):
        write_request(tmp_path, "explode")


def test_stale_heartbeat_and_dead_pid_mean_the_trainer_is_gone() -> None:
    now = time.time()
    here = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(), "updated": now}
    assert trainer_gone(here, now) == ""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert trainer_gone({**here, "pid": dead.pid}, now) == f"trainer process {dead.pid} is gone"
    assert "not responding" in trainer_gone(here, now + 3600)
    elsewhere = {**here, "host": "other-node"}
    assert trainer_gone(elsewhere, now + 10) == ""
    assert trainer_gone(elsewhere, now + 600) == "no heartbeat from the trainer on other-node for 10 min 0 s"
    # A slow run's expected interval between logging steps widens the limit.
    assert trainer_gone({**elsewhere, "heartbeat_s": 300}, now + 600) == ""
    assert trainer_gone({**here, "status": "stopped", "pid": dead.pid}, now) == ""


# ----------------------------------------------------------------------------- a real headless process


def test_headless_run_paused_resumed_and_stopped_from_another_shell(prepared: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "steered"
    proc = Trainer(headless_flags(prepared, tmp_path, "steered", steps=100_000), tmp_path)
    try:
        # The heartbeat: state.json follows the logging steps, no checkpoint or evaluation needed.
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) >= 3, what="heartbeat at log steps")
        state = read_state(run_dir)
        assert state["status"] == "running" and state["pid"] == proc.pid and state["heartbeat_s"] > 0
        assert not (run_dir / "snapshots").exists() or not list((run_dir / "snapshots").glob("*.pt"))

        assert steer("pause", str(run_dir)) == 0
        paused = read_state(run_dir)
        assert paused["status"] == "paused"
        checkpoint = run_dir / "snapshots" / paused["last_checkpoint"]
        assert checkpoint.is_file() and f"step_{paused['step']:07d}" in checkpoint.name
        assert "paused at step" in capsys.readouterr().out
        # paused means paused: no step goes by, yet the heartbeat goes on (waited for, not slept:
        # under load the heartbeat's gap can exceed any fixed sleep)
        proc.wait_until(lambda: read_state(run_dir).get("updated", 0) > paused["updated"], what="heartbeat while paused")
        later = read_state(run_dir)
        assert later["step"] == paused["step"] and later["updated"] > paused["updated"]
        assert main(["pause", str(run_dir)]) == 0 and "already paused" in capsys.readouterr().out

        assert steer("resume", str(run_dir)) == 0
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) > paused["step"] + 2, what="steps after resume")

        # The real entry point, as from another shell.
        stop = subprocess.run([sys.executable, "-m", "tui_lm", "stop", str(run_dir), "--wait", "--timeout", "60"],
                              env=env(), capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        assert "stopped at step" in stop.stdout
        code, out, err = proc.finish()
        assert code == 0, err
    finally:
        proc.kill()
    assert "pause requested from outside" in out and "resume requested from outside" in out
    assert f"paused at step {paused['step']}" in out and "resumed at step" in out
    final = read_state(run_dir)
    assert final["status"] == "stopped" and (run_dir / "snapshots" / final["last_checkpoint"]).is_file()
    assert not (run_dir / "request.json").exists()

    # Nothing is training it now: refused in one line, exit 2.
    assert main(["pause", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tui-lm pause: error: {run_dir} is not being trained (state: stopped); " \
                  f"resume it with: tui-lm --no-ui --resume {run_dir}"
    assert main(["stop", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_killed_trainer_is_reported_gone(prepared: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "killed"
    proc = Trainer(headless_flags(prepared, tmp_path, "killed", steps=100_000), tmp_path)
    try:
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) >= 1, what="running")
    finally:
        proc.kill()
    assert main(["pause", str(run_dir)]) == 2
    assert f"trainer process {proc.pid} is gone" in capsys.readouterr().err
    assert pending_request(run_dir) is None  # nothing left behind for a later trainer


def test_paused_external_run_resumes_bit_identically(prepared: Path, tmp_path: Path) -> None:
    steps = 200
    straight = subprocess.run([sys.executable, "-m", "tui_lm", *headless_flags(prepared, tmp_path, "straight", steps)],
                              env=env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "paused"
    # Slowed steps, so the pause lands mid-run: the 200 steps take well under a second otherwise.
    proc = Trainer(headless_flags(prepared, tmp_path, "paused", steps), tmp_path, module="tests.rank_launcher",
                   env={"TEST_SLOW_STEP": "0.05"})
    try:
        # After a trained step: a request read at step 0 (a logging step too) would pause before any training.
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) > 0, what="a step trained")
        assert steer("pause", str(run_dir)) == 0
        assert steer("stop", str(run_dir)) == 0  # stopped while paused: the process ends
        code, _, err = proc.finish()
        assert code == 0, err
    finally:
        proc.kill()
    stopped_at = read_state(run_dir)["step"]
    assert 0 < stopped_at < steps
    resumed = subprocess.run([sys.executable, "-m", "tui_lm", "--no-ui", "--resume", str(run_dir)],
                             env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {stopped_at}" in resumed.stdout
    assert step_losses(run_dir) == step_losses(tmp_path / "straight")  # bit-identical, not approximately
    a = load_file(tmp_path / "straight" / "models" / "model.safetensors")
    b = load_file(run_dir / "models" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- torchrun


def test_two_rank_torchrun_paused_resumed_and_stopped(prepared: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    proc = Trainer(headless_flags(prepared, tmp_path, "ddp", steps=100_000) + ["--batch_size", "8"], tmp_path, nproc=2)
    try:
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) >= 2, timeout=180, what="two ranks training")
        assert read_state(run_dir)["world_size"] == 2
        assert steer("pause", str(run_dir)) == 0
        paused = read_state(run_dir)
        time.sleep(1.0)
        assert read_state(run_dir)["step"] == paused["step"]  # both ranks wait: no step without the other
        meta = json.loads((run_dir / "snapshots" / paused["last_checkpoint"]).with_suffix(".json").read_text())
        assert meta["world_size"] == 2 and meta["reason"] == "pause"

        assert steer("resume", str(run_dir)) == 0
        proc.wait_until(lambda: read_state(run_dir).get("step", 0) > paused["step"] + 1, what="steps after resume")
        assert steer("stop", str(run_dir)) == 0
        code, out, err = proc.finish()
        assert code == 0, err[-3000:]
    finally:
        proc.kill()
    assert out.count(f"paused at step {paused['step']}") == 1  # rank 0 speaks for both
    final = read_state(run_dir)
    assert final["status"] == "stopped" and final["step"] > paused["step"]


def test_resume_picker_status_follows_the_heartbeat(tmp_path: Path) -> None:
    """A run trained on another machine over a shared filesystem: running while its heartbeat is fresh."""
    from engine.runs.listing import read_run

    (tmp_path / "run.toml").write_text('[run]\nrun_name = "x"\n')
    state = {"status": "running", "pid": 1, "host": "other-node", "step": 3, "updated": time.time()}
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert read_run(tmp_path).status == "running"
    (tmp_path / "state.json").write_text(json.dumps({**state, "updated": time.time() - 3600}))
    assert read_run(tmp_path).status == "crashed"
