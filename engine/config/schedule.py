"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio * lr`.

Pure Python (no torch) so the dashboard can draw the whole curve before a run
starts. `step` counts optimizer steps from 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    min_lr = lr * min_lr_ratio
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    decay_steps = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / decay_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


@dataclass(frozen=True)
class LRSchedule:
    """The schedule of one run, bound to its numbers (engine.config.plan builds it once)."""

    lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def at(self, step: int) -> float:
        return lr_at(step, lr=self.lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                     min_lr_ratio=self.min_lr_ratio)

    def curve(self, points: int) -> tuple[list[int], list[float]]:
        """`points + 1` evenly spaced steps over the run and the LR at each (the dashboard's plot)."""
        xs = [round(i * self.total_steps / points) for i in range(points + 1)]
        return xs, [self.at(x) for x in xs]
