"""Real trainers in their own processes, for the tests that watch or steer a run from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def headless_flags(corpus: Path, out: Path, name: str, steps: int, **extra: object) -> list[str]:
    """A tiny headless run logging every step; `extra` adds flags (eval_interval=4 -> --eval_interval 4)."""
    settings = {"dataset": corpus, "d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "max_seq_len": 16,
                "batch_size": 4, "max_steps": steps, "vocab_size": 300, "eval_interval": 0, "eval_batches": 2,
                "save_interval": 0, "log_interval": 1, "sample_tokens": 0, "device": "cpu", "out": out,
                "run_name": name, "warmup_steps": 2, "lr": 3e-3, **extra}
    return ["--no-ui"] + [part for key, value in settings.items() for part in (f"--{key}", str(value))]


class TrainerProcess:
    """`python -m tui_lm ARGS` (torchrun when nproc > 1), output in files: a pipe nobody reads would block it.

    `module` runs another entry point (tests.rank_launcher: the CLI with fault knobs, set through `env`).
    kill() ends torchrun and every rank together.
    """

    def __init__(self, args: list[str], folder: Path, nproc: int = 1, tag: str = "trainer",
                 module: str = "tui_lm", env: dict[str, str] | None = None) -> None:
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   "-m"] if nproc > 1 else [sys.executable, "-m"])
        self.out, self.err = folder / f"{tag}.stdout", folder / f"{tag}.stderr"
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(launch + [module, *args], env=full_env, stdout=out, stderr=err)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.out.read_text(), self.err.read_text()

    def kill(self) -> None:
        """SIGKILL to the whole job, as the OOM killer or a scheduler would: torchrun and its ranks (which it
        starts in sessions of their own), all at once."""
        import psutil

        try:
            job = [psutil.Process(self.proc.pid)]
            job += job[0].children(recursive=True)
        except psutil.NoSuchProcess:  # the job is gone already
            job = []
        for p in job:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(job[1:], timeout=30)
        self.proc.wait(timeout=30)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"trainer exited ({self.proc.poll()}) waiting for {what}: "
                                     f"{self.err.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)
