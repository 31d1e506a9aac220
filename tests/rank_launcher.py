"""The real CLI (`tui_lm.cli.main`) with test scaffolding, run by every rank: `python -m tests.rank_launcher ARGS`.

Each knob is an environment variable, off unless set:
- TEST_COMPILE_BACKEND: torch.compile's backend (the CUDA default, compile on, with one fast on 2 cores).
- TEST_STOP_AT=N: every rank sends itself SIGTERM after step N, as torchrun does on Ctrl-C.
- TEST_FAIL_AT=RANK:N: that rank raises at step N.
- TEST_PG_TIMEOUT=S: the default process group's collectives time out after S seconds (NCCL's watchdog,
  shortened), once the rendezvous is done.
- TEST_SLOW_PREPARE=RANK:S: that rank's data preparation takes S seconds longer.
- TEST_SLOW_SAVE=S: rank 0's checkpoint and final-model writes take S seconds longer (slow storage).
- TEST_SLOW_STEP=S: every training step takes S seconds longer, so a request from outside lands within a step or two.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def _rank_seconds(var: str) -> tuple[int, float]:
    rank, _, seconds = os.environ.get(var, "-1:0").partition(":")
    return int(rank), float(seconds)


def _slow(fn, seconds: float):
    @functools.wraps(fn)
    def slow(*a, **k):
        time.sleep(seconds)
        return fn(*a, **k)
    return slow


def install() -> None:
    from engine.data import token_cache
    from engine.train import trainer

    rank = int(os.environ.get("RANK", "0"))
    if os.environ.get("TEST_COMPILE_BACKEND"):
        torch.compile = functools.partial(torch.compile, backend=os.environ["TEST_COMPILE_BACKEND"])
    if os.environ.get("TEST_PG_TIMEOUT"):
        real_init = dist.init_process_group

        def init(*a, **k):
            real_init(*a, **k)
            dist.distributed_c10d._set_pg_timeout(timedelta(seconds=float(os.environ["TEST_PG_TIMEOUT"])))

        dist.init_process_group = init
    slow_rank, seconds = _rank_seconds("TEST_SLOW_PREPARE")
    if slow_rank == rank:
        token_cache.prepare_data = _slow(token_cache.prepare_data, seconds)
    if os.environ.get("TEST_SLOW_SAVE") and rank == 0:
        seconds = float(os.environ["TEST_SLOW_SAVE"])
        trainer.save_checkpoint = _slow(trainer.save_checkpoint, seconds)
        trainer.save_final_model = _slow(trainer.save_final_model, seconds)
    slow_step = float(os.environ.get("TEST_SLOW_STEP", "0"))
    stop_at = int(os.environ.get("TEST_STOP_AT", "0"))
    fail_rank, fail_step = _rank_seconds("TEST_FAIL_AT")
    real_train_step = trainer.Trainer._train_step

    def train_step(self, batches):
        if self.progress.step + 1 == int(fail_step) and self.s.rt.rank == fail_rank:
            raise RuntimeError("injected failure")
        time.sleep(slow_step)
        out = real_train_step(self, batches)
        if stop_at and self.progress.step + 1 == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.Trainer._train_step = train_step


if __name__ == "__main__":
    install()
    from tui_lm.cli import main

    sys.exit(main(sys.argv[1:]))
