"""Batches of training windows from the memory-mapped token stream, with a resumable position.

The training stream is cut into non-overlapping windows of `seq_len + 1`
tokens. Each epoch visits every window once in an order drawn from a
generator seeded by (seed, epoch), so the order is a pure function of the
epoch number: the loader's whole state is (epoch, step within the epoch),
saved in every checkpoint and independent of how many ranks read it.

An optimizer step consumes `batch_size` windows; micro-step `j` on rank `r`
takes its own contiguous slice of them, so ranks read disjoint data and the
global batch means the same thing for any world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LoaderState:
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in this epoch

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}


class TrainLoader:
    def __init__(
        self,
        tokens: np.ndarray,
        *,
        seq_len: int,
        batch_size: int,
        grad_accum_steps: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str = "cpu",
    ) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.grad_accum_steps = grad_accum_steps
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.micro_batch = batch_size // (grad_accum_steps * world_size)
        self.num_windows = (len(tokens) - 1) // seq_len
        self.steps_per_epoch = self.num_windows // batch_size
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

    def load_state(self, state: dict[str, int]) -> None:
        self.state = LoaderState(int(state["epoch"]), int(state["step_in_epoch"]))
