"""Fault injection with real processes: SIGINT during evaluation, kill -9, two trainers on one run, a file-size limit.

Each test runs the real CLI (`tui_lm.cli.main`) in a child process through a
small launcher that only slows the model down or stalls a write (so a signal
lands where the test wants it), then checks exit status, messages and files.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.runs.checkpoints import checkpoint_path, list_checkpoints, load_checkpoint
from tests.conftest import make_corpus

REPO = Path(__file__).resolve().parents[2]

# Scaffolding only: TEST_SLOW_EVAL / TEST_SLOW_TRAIN (seconds per forward) and
# TEST_STALL_SAVE (the save that hangs halfway), then the real CLI.
LAUNCHER = """
import os, sys, time
import torch
import engine.model.gpt as m
slow_eval = float(os.environ.get("TEST_SLOW_EVAL", "0"))
slow_train = float(os.environ.get("TEST_SLOW_TRAIN", "0"))
real_forward = m.GPT.forward
def forward(self, *a, **k):
    time.sleep(slow_train if self.training else slow_eval)
    return real_forward(self, *a, **k)
m.GPT.forward = forward
stall = int(os.environ.get("TEST_STALL_SAVE", "0"))
if stall:
    real_save, count = torch.save, [0]
    def slow_save(obj, f, *a, **k):
        count[0] += 1
        if count[0] == stall:
            f.write(b"PK" + b"x" * 100000)
            f.flush()
            print("stalled in save", flush=True)
            time.sleep(600)
        return real_save(obj, f, *a, **k)
    torch.save = slow_save  # engine.runs.checkpoints imports torch when it saves
from tui_lm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def tiny_flags(corpus: Path, out: Path, steps: int, **extra: str) -> list[str]:
    flags = {"--dataset": str(corpus), "--d_model": "32", "--num_heads": "2", "--num_layers": "1", "--d_ff": "64",
             "--max_seq_len": "16", "--batch_size": "4", "--max_steps": str(steps), "--vocab_size": "300",
             "--warmup_steps": "2", "--eval_interval": "0", "--log_interval": "1", "--sample_tokens": "0",
             "--save_interval": "0", "--device": "cpu", "--out": str(out), "--run_name": "r", **extra}
    return ["--no-ui", "--preset", "tiny", *(x for kv in flags.items() for x in kv)]


def start(args: list[str], tmp: Path, **env: str) -> subprocess.Popen:
    launcher = tmp / "launch.py"
    launcher.write_text(LAUNCHER)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, str(launcher), *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(args: list[str], tmp: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    child = start(args, tmp, **env)
    out, err = child.communicate(timeout=timeout)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def wait_for(child: subprocess.Popen, text: str, timeout: float = 300) -> list[str]:
    """stdout lines up to and including the first one containing `text`."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    child.kill()
    raise AssertionError(f"never printed {text!r}; got {seen[-5:]} / {child.stderr.read()[-2000:]}")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def big_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Enough validation text for an evaluation of dozens of batches."""
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    return make_corpus(tmp_path / "corpus", lines=2400)


# ----------------------------------------------------------------------------- Ctrl-C during the final evaluation

def test_sigint_during_final_evaluation_stops_promptly_with_checkpoint(big_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    child = start(tiny_flags(big_corpus, out, 4), tmp_path, TEST_SLOW_EVAL="0.1")
    wait_for(child, "step      4/4")
    time.sleep(1.0)  # well inside the final evaluation (~30 batches of 0.1 s for valid, as many for test)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert time.monotonic() - sent < 5, "the evaluation ran to its end after Ctrl-C"
    assert child.returncode == 0, stderr
    assert "final evaluation interrupted" in stdout and "stopped at step 4" in stdout
    run_dir = out / "r"
    assert json.loads((run_dir / "state.json").read_text())["status"] == "stopped"
    load_checkpoint(checkpoint_path(run_dir, 4))  # written before the evaluation, --save-interval 0 or not
    assert (run_dir / "models" / "model.safetensors").is_file()
    # Resuming runs the final evaluation it missed, without training again.
    again = run(["--no-ui", "--resume", str(run_dir)], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "finished at step 4" in again.stdout and "test word ppl" in again.stdout
    assert "step      " not in again.stdout


# ----------------------------------------------------------------------------- two processes, kill -9, stale temps

def test_second_process_on_a_training_run_is_refused_and_lock_dies_with_the_holder(corpus: Path,
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "runs"
    first = start(tiny_flags(corpus, out, 30, **{"--save_interval": "2"}), tmp_path, TEST_SLOW_TRAIN="0.3")
    wait_for(first, "checkpoint step 2")
    run_dir = out / "r"
    state_before = (run_dir / "state.json").read_bytes()
    second = run(["--no-ui", "--resume", str(run_dir)], tmp_path, timeout=120)
    assert second.returncode == 2
    line = one_error_line(second.stderr)
    assert f"in use by process {first.pid} on {socket.gethostname()}" in line
    assert json.loads((run_dir / "state.json").read_text())["pid"] == first.pid  # never written by the second
    assert json.loads(state_before)["pid"] == first.pid
    # kill -9: the kernel drops the lock with the process, and the run resumes.
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = run(["--no-ui", "--resume", str(run_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "finished at step 30" in resumed.stdout


def test_temp_file_of_a_save_killed_midway_is_removed_on_resume(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    child = start(tiny_flags(corpus, out, 8, **{"--save_interval": "2"}), tmp_path, TEST_STALL_SAVE="2")
    wait_for(child, "stalled in save")
    child.send_signal(signal.SIGKILL)
    child.wait()
    run_dir = out / "r"
    temps = [p for p in (run_dir / "snapshots").iterdir() if ".tmp-" in p.name]
    assert len(temps) == 1 and temps[0].name.startswith(".step_0000004.pt.tmp-")
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_0000002.pt"]
    resumed = run(["--no-ui", "--resume", str(run_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "removed 1 unfinished temp file" in resumed.stdout
    assert not [p for p in (run_dir / "snapshots").iterdir() if ".tmp-" in p.name]


# ----------------------------------------------------------------------------- file-size limit during a save

def test_file_size_limit_during_save_is_one_line_and_keeps_the_last_checkpoint(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    first = run(tiny_flags(corpus, out, 4, **{"--save_interval": "2"}) + ["--max_steps", "4"], tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = out / "r"
    # Stopped runs resume; make this one look stopped at step 2 by removing the later files.
    for p in (run_dir / "snapshots").glob("step_0000004.*"):
        p.unlink()
    good = checkpoint_path(run_dir, 2)
    state = json.loads((run_dir / "state.json").read_text())
    (run_dir / "state.json").write_text(json.dumps({**state, "status": "stopped", "step": 2}))
    limit = good.stat().st_size - 1  # the next checkpoint cannot be written in full

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-m", "tui_lm", "--no-ui", "--resume", str(run_dir)], env=env,
                           capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert child.returncode == 2, child.stderr
    line = one_error_line(child.stderr)
    assert "cannot write" in line and "step_0000004.pt" in line and "File too large" in line
    assert "inline_container" not in line
    load_checkpoint(good)  # the previous checkpoint is intact
    assert not [p for p in (run_dir / "snapshots").iterdir() if ".tmp-" in p.name]
    assert json.loads((run_dir / "state.json").read_text())["status"] == "crashed"
