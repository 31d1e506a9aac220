"""Batches of training windows from the memory-mapped token stream, with a resumable position.

The training stream is cut into non-overlapping windows of `seq_len + 1`
tokens. Each epoch visits every window once in an order drawn from a
generator seeded by (seed, epoch), so the order is a pure function of the
epoch number: the loader's whole state is (epoch, step within the epoch),
saved in every checkpoint and independent of how many ranks read it.

An optimizer step consumes `batch_size` windows; micro-step `j` on rank `r`
takes its own contiguous slice of them, so ranks read disjoint data and the
global batch means the same thing for any world size. Every number (window
length, batch, accumulation, micro-batch, windows, steps per epoch, ranks,
seed) is the run plan's (engine.config.plan), made for this very split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.config.plan import RunPlan


@dataclass
class LoaderState:
    """The whole position (checkpointed as engine.runs.checkpoints.LOADER)."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in this epoch


class TrainLoader:
    def __init__(self, tokens: np.ndarray, plan: RunPlan, *, rank: int = 0, device: str = "cpu") -> None:
        """Batches of `tokens`, the training split `plan` was made for, as rank `rank` reads them."""
        if plan.train_tokens != len(tokens):
            raise ValueError(f"the plan was made for {plan.train_tokens} training tokens, not {len(tokens)}")
        self.tokens = tokens
        self.seq_len = plan.seq_len
        self.batch_size = plan.batch_size
        self.grad_accum_steps = plan.grad_accum_steps
        self.micro_batch = plan.micro_batch
        self.num_windows = plan.train_windows
        self.steps_per_epoch = plan.steps_per_epoch
        self.world_size = plan.world_size
        self.seed = plan.config.train.seed
        self.rank = rank
        self.device = torch.device(device)
        self.state = LoaderState()
        self._order_epoch = -1
        self._order: np.ndarray | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(self.num_windows)
            self._order_epoch = epoch
        return self._order  # type: ignore[return-value]

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The micro-batches (inputs, targets) of this rank for the next optimizer step."""
        if self.state.step_in_epoch >= self.steps_per_epoch:
            self.state = LoaderState(self.state.epoch + 1, 0)
        order = self._epoch_order(self.state.epoch)
        first = self.state.step_in_epoch * self.batch_size
        windows = order[first:first + self.batch_size]
        self.state.step_in_epoch += 1
        per_rank = self.batch_size // self.world_size
        mine = windows[self.rank * per_rank:(self.rank + 1) * per_rank]
        return [self._batch(mine[j * self.micro_batch:(j + 1) * self.micro_batch])
                for j in range(self.grad_accum_steps)]

    @property
    def epoch(self) -> int:
        """Epoch of the step about to be taken."""
        s = self.state
        return s.epoch + 1 if s.step_in_epoch >= self.steps_per_epoch else s.epoch

    def _batch(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        starts = np.sort(windows) * self.seq_len
        rows = np.stack([self.tokens[s:s + self.seq_len + 1] for s in starts]).astype(np.int64)
        data = torch.from_numpy(rows)
        if self.device.type == "cuda":
            data = data.pin_memory().to(self.device, non_blocking=True)
        return data[:, :-1], data[:, 1:]

    def example_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch with the real layout (views of a (B, T + 1) buffer), position untouched."""
        return self._batch(np.arange(self.micro_batch))
