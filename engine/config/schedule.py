"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio` of the peak.

The schedule is a multiplier of the peak LR, so each optimizer group scales
its own peak by it (AdamW's train.lr and Muon's train.muon_lr alike:
engine.optim.groups.set_lr) and warmup and decay keep their ratio. Pure
Python (no torch) so the dashboard can draw the whole curve before a run
starts. `step` counts optimizer steps from 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def multiplier_at(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The share of the peak LR at `step`: (step + 1) / warmup_steps, then the cosine from 1 to min_lr_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr_ratio
    decay_steps = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / decay_steps
    return min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_lr_ratio)


@dataclass(frozen=True)
class LRSchedule:
    """The schedule of one run, bound to its numbers (engine.config.plan builds it once)."""

    lr: float  # AdamW's peak (train.lr): the LR the dashboard plots is this times the multiplier
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def multiplier(self, step: int) -> float:
        return multiplier_at(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                             min_lr_ratio=self.min_lr_ratio)

    def at(self, step: int) -> float:
        """AdamW's LR at `step`."""
        return self.lr * self.multiplier(step)

    def curve(self, points: int) -> tuple[list[int], list[float]]:
        """`points + 1` evenly spaced steps over the run and the LR at each (the dashboard's plot)."""
        xs = [round(i * self.total_steps / points) for i in range(points + 1)]
        return xs, [self.at(x) for x in xs]
