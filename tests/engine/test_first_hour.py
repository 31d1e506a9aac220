"""A new user's first hour (issue 24): the wrapper, the final evaluation's cost and unit, --resume beside a
running trainer, tokens/s after a pause, and a stop during the final evaluation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.control import TrainingControl
from tests.conftest import make_corpus, tiny_config, tiny_overrides
from tests.processes import REPO, TrainerProcess, headless_flags

# ----------------------------------------------------------------------------- 1. the wrapper


def _fake_python(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _wrapper_in(project: Path) -> Path:
    """run_train_lm.sh copied into a project folder of its own, so `.venv` next to it is the test's."""
    project.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(REPO / "run_train_lm.sh", project / "run_train_lm.sh"))


def _fresh_shell(tmp_path: Path) -> dict[str, str]:
    """No virtual environment active, and a python3 / python first on PATH that lack tui-lm's dependencies."""
    fake = tmp_path / "system-bin"
    for name in ("python3", "python"):
        _fake_python(fake / name, 'echo "ModuleNotFoundError: No module named tomli_w" >&2; exit 1')
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{fake}:/usr/bin:/bin"
    return env


def test_wrapper_runs_the_projects_venv_from_a_fresh_shell(tmp_path: Path) -> None:
    """No venv active, a system python first on PATH: the .venv next to the wrapper runs the CLI."""
    wrapper = _wrapper_in(tmp_path / "project")
    # The project's .venv: this test's interpreter, with this checkout on its path.
    _fake_python(tmp_path / "project" / ".venv" / "bin" / "python",
                 f'PYTHONPATH="{REPO}" exec "{sys.executable}" "$@"')
    run = subprocess.run([str(wrapper), "--help"], env=_fresh_shell(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: tui-lm") and "--final_eval_batches" in run.stdout


def test_wrapper_translates_the_seed_flags(tmp_path: Path) -> None:
    # The project's .venv python echoes what the wrapper runs it with (it "imports" tui_lm.cli: exit 0).
    wrapper = _wrapper_in(tmp_path / "project")
    _fake_python(tmp_path / "project" / ".venv" / "bin" / "python", 'echo "$@"')
    out = subprocess.run([str(wrapper), "--preset", "small", "--warmup", "4000", "--lr", "6e-4"],
                         env=_fresh_shell(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "-m tui_lm --no-ui --model_preset small --warmup_steps 4000 --lr 6e-4"


def test_wrapper_without_tui_lm_says_how_to_install(tmp_path: Path) -> None:
    wrapper = _wrapper_in(tmp_path / "project")
    run = subprocess.run([str(wrapper), "--preset", "tiny"], env=_fresh_shell(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "tui-lm is not installed" in lines[0]
    assert f"cd {tmp_path / 'project'} && python3 -m venv .venv && .venv/bin/pip install" in lines[0]


# ----------------------------------------------------------------------------- 2, 3. the final evaluation


def _train(cfg, control: TrainingControl | None = None, on_event=None) -> list[ev.Event]:
    from engine.train.trainer import Trainer

    seen: list[ev.Event] = []

    def sink(e: ev.Event) -> None:
        seen.append(e)
        if on_event is not None:
            on_event(e)

    result = Trainer(cfg, sink, control).run()
    assert isinstance(result, ev.Finished), result
    return seen


def _final_progress(events: list[ev.Event], split: str) -> list[ev.EvalProgress]:
    last_step = [e for e in events if isinstance(e, ev.Finished)][-1].step
    return [e for e in events if isinstance(e, ev.EvalProgress) and e.split == split and e.step == last_step]


def test_final_evaluation_batches_are_counted_in_the_flags_unit(corpus: Path, tmp_path: Path) -> None:
    """--final_eval_batches 3 shows 3 batches, though the evaluation scores several micro-batches at once;
    the time model counts the tokens the trainer scores."""
    from engine.speed.model import eval_tokens
    from tui_lm.headless import eval_progress_text

    cfg = tiny_config(corpus, tmp_path / "out", max_steps=2, eval_interval=0, final_eval_batches=3)
    events = _train(cfg)
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    for split in ("valid", "test"):
        progress = _final_progress(events, split)
        assert [p.total for p in progress] == [3] * len(progress) and progress[-1].done == 3
        assert eval_progress_text(progress[0]).endswith(": 3 batches")
    valid = next(e for e in events if isinstance(e, ev.EvalResult) and e.split == "valid")
    seq = cfg.model.max_seq_len
    valid_tokens = len((corpus / "valid.txt").read_text())  # more than the split's tokens: only the bound counts
    assert valid.partial and valid.tokens == eval_tokens(3, started.micro_batch, seq, valid_tokens) == 3 * 4 * seq


def test_the_first_lines_say_what_the_final_evaluation_costs(corpus: Path, tmp_path: Path) -> None:
    """Before the first step: the final evaluation's batches (those it then runs), a time, and the flag
    that bounds it; a skipped one says it is skipped."""
    events = _train(tiny_config(corpus, tmp_path / "whole", max_steps=2, eval_interval=0))
    first_step = next(i for i, e in enumerate(events) if isinstance(e, ev.StepMetrics))
    notice = [e.message for e in events[:first_step] if isinstance(e, ev.Log)
              and e.message.startswith("final evaluation:")]
    assert len(notice) == 1
    valid, test = (_final_progress(events, split)[-1].total for split in ("valid", "test"))
    assert notice[0].startswith(f"final evaluation: {valid} valid + {test} test batches of 4 sequences "
                                "(the whole valid and test splits), about ")
    assert "--final_eval_batches N bounds it" in notice[0] and "-1 skips it" in notice[0]

    bounded = _train(tiny_config(corpus, tmp_path / "bounded", max_steps=2, eval_interval=0, final_eval_batches=1))
    line = next(e.message for e in bounded if isinstance(e, ev.Log) and e.message.startswith("final evaluation:"))
    assert line.startswith(f"final evaluation: 1 valid + 1 test batches of 4 sequences (the first of {valid} + "
                           f"{test}: partial figures)")
    skipped = _train(tiny_config(corpus, tmp_path / "skipped", max_steps=2, eval_interval=0, final_eval_batches=-1))
    assert any(isinstance(e, ev.Log) and e.message.startswith("final evaluation: skipped (--final_eval_batches -1)")
               for e in skipped)


# ----------------------------------------------------------------------------- 5. tokens/s after a pause


def test_a_pause_is_not_counted_in_the_next_windows_tokens_per_s(corpus: Path, tmp_path: Path) -> None:
    """Paused for PAUSE_S at a logging step: the next window's time is its steps', not the pause's (the
    window of steps 5-6 is at most the wall time between the logs of steps 4 and 6 less the pause)."""
    pause_s = 3.0
    control = TrainingControl()
    seen_at: dict[object, float] = {}

    def on_event(e: ev.Event) -> None:
        seen_at[e.step if isinstance(e, ev.StepMetrics) else type(e)] = time.perf_counter()
        if isinstance(e, ev.StepMetrics) and e.step == 4:
            control.pause()
        if isinstance(e, ev.Paused):
            threading.Timer(pause_s, control.resume).start()

    cfg = tiny_config(corpus, tmp_path / "out", max_steps=8, log_interval=2, eval_interval=0, final_eval_batches=-1)
    events = _train(cfg, control, on_event)
    metrics = {e.step: e for e in events if isinstance(e, ev.StepMetrics)}
    after = metrics[6]  # the window of steps 5 and 6, which began before the pause
    paused = seen_at[ev.Resumed] - seen_at[ev.Paused]
    assert paused >= pause_s
    window = 2 * after.step_time_s
    assert window <= seen_at[6] - seen_at[4] - paused, (window, seen_at[6] - seen_at[4], paused)
    assert after.tokens_per_s == pytest.approx(2 * 4 * 16 / window)
    assert after.elapsed_s - metrics[4].elapsed_s == pytest.approx(window)


# ----------------------------------------------------------------------------- 4. --resume beside a trainer


def _stopped(corpus: Path, out: Path, name: str, at: int = 4) -> Path:
    """A run named `name` in `out`, stopped by the user at step `at` (a checkpoint written)."""
    from engine.config.loading import build_config

    overrides = tiny_overrides(corpus, out, max_steps=8, eval_interval=0, final_eval_batches=2, log_interval=1)
    overrides["run"]["run_name"] = name
    control = TrainingControl()
    _train(build_config("tiny", None, overrides), control,
           lambda e: control.stop() if isinstance(e, ev.StepMetrics) and e.step == at else None)
    return out / name


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tui_lm", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_bare_resume_skips_the_run_another_process_trains(corpus: Path, tmp_path: Path) -> None:
    """One run stopped, a newer one being trained: bare --resume resumes the stopped one; with none free it
    says which process trains which run; naming the busy run says who holds it. No "step 0", no "config"."""
    out = tmp_path / "out"
    free = _stopped(corpus, out, "free")
    busy = _stopped(corpus, out, "busy")  # the newer checkpoint: the one bare --resume used to pick
    trainer = TrainerProcess(["--no-ui", "--resume", str(busy), "--max_steps", "100000"], tmp_path)
    try:
        trainer.wait_until(lambda: "step" in trainer.out.read_text(), what="the busy run to train")
        resumed = _cli("--no-ui", "--resume", "--out", str(out))
        assert resumed.returncode == 0, resumed.stderr
        assert f"run {free} (resuming" in resumed.stdout and "finished at step 8" in resumed.stdout

        none_free = _cli("--no-ui", "--resume", "--out", str(out))
        assert none_free.returncode == 2 and none_free.stdout == ""
        assert none_free.stderr.strip() == (
            f"tui-lm: error: --resume: no run in {out} is free to resume; being trained now: {busy} by process "
            f"{trainer.pid} on {os.uname().nodename}. Wait for one to finish or stop it (tui-lm stop RUN), or "
            "name another: --resume PATH")

        named = _cli("--no-ui", "--resume", str(busy))
        assert named.returncode == 2 and "step 0" not in named.stderr and "(config)" not in named.stderr
        assert named.stderr.strip().startswith(f"tui-lm: error: cannot resume: run folder {busy} is in use by "
                                               f"process {trainer.pid}")
    finally:
        trainer.proc.send_signal(signal.SIGTERM)
        trainer.finish(timeout=120)


def test_a_run_locked_when_the_trainer_claims_it_is_busy_not_a_config_error(corpus: Path, tmp_path: Path) -> None:
    """Another process took the run between the check and the trainer's own lock: said without "step 0"."""
    from engine.runs.folder import lock_run
    from engine.train.launch import resume_request
    from engine.train.trainer import Trainer
    from tui_lm.headless import format_event

    run_dir = _stopped(corpus, tmp_path / "out", "r")
    request = resume_request(run_dir)
    lock = lock_run(run_dir)  # as the other process would hold it
    try:
        result = Trainer(request.config, run_dir=run_dir, resume=True).run()
    finally:
        lock.release()
    assert isinstance(result, ev.Failed) and result.kind == "busy"
    assert format_event(result) == f"error: run folder {run_dir} is in use by process {os.getpid()} on " \
        f"{os.uname().nodename}, which is training in it; wait for it to finish or stop it first " \
        f"(tui-lm stop {run_dir})"


# ----------------------------------------------------------------------------- 8. a stop during the final evaluation


def test_sigterm_during_the_final_evaluation_skips_it_at_once(tmp_path: Path, monkeypatch) -> None:
    """A real headless run with a long final evaluation, SIGTERM during it: the message says what happens, the
    process exits promptly, the final model and checkpoint are intact."""
    from engine.artifacts.final_model import load_model
    from engine.runs.checkpoints import good_checkpoints

    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    corpus = make_corpus(tmp_path / "corpus")
    # A validation split fifty times the training one makes an evaluation of many seconds.
    (corpus / "valid.txt").write_text((corpus / "train.txt").read_text() * 50)
    flags = headless_flags(corpus, tmp_path / "out", "r", 2, final_eval_batches=0, d_model=128, num_layers=4,
                           d_ff=512, max_seq_len=64, num_heads=4)
    trainer = TrainerProcess(flags, tmp_path, env={"PYTHONUNBUFFERED": "1"})
    trainer.wait_until(lambda: "evaluating valid at step 2" in trainer.out.read_text(), timeout=300,
                       what="the final evaluation")
    trainer.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code, out, err = trainer.finish(timeout=120)
    took = time.monotonic() - sent
    assert code == 0, err
    assert ("stopping the evaluation: the model is saved, the evaluation is skipped (Ctrl-C again to exit at once)"
            in out)
    assert "after this step" not in out
    assert took < 15, f"exited {took:.0f} s after SIGTERM"
    assert "final evaluation interrupted" in out and "stopped at step 2" in out
    assert "eval step 2 valid" not in out  # nothing of the evaluation left behind is reported
    run_dir = tmp_path / "out" / "r"
    assert good_checkpoints(run_dir)[-1][0].name == "step_0000002.pt"
    assert load_model(run_dir).source == run_dir / "models" / "model.safetensors"  # verified: its checksums
