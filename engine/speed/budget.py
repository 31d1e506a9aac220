"""How many steps fit in a time budget, once the run's own speed is measured (`--time-budget`).

Pure arithmetic, used by engine.train.budget when the run has measured its
seconds per step: the largest total N such that

    spent + (N - step) x step_s + periodic evaluations before N x eval_s + final_s <= budget

where `spent` is the wall time the budget has used so far, the periodic
evaluations are those at multiples of eval_interval below N (the trainer's
rule), and `final_s` the final evaluation plus the final checkpoint and model
save. Never below `step`: a budget already spent ends the run at once.
"""

from __future__ import annotations


def periodic_evals(step: int, total: int, interval: int) -> int:
    """Evaluations at multiples of `interval` in (step, total): those still ahead of a run at `step`."""
    if not interval:
        return 0
    return max(0, (total - 1) // interval - step // interval)


def budget_total(*, budget_s: float, spent_s: float, step: int, step_s: float, eval_interval: int,
                 eval_s: float, final_s: float) -> int:
    """The total steps that end within the budget (module docstring)."""
    left = budget_s - spent_s - final_s
    if left <= 0 or step_s <= 0:
        return step
    per_step = step_s + (eval_s / eval_interval if eval_interval else 0.0)
    total = step + int(left / per_step) + 1
    # The evaluations fall on exact multiples: step down until the sum fits.
    while total > step and (total - step) * step_s + periodic_evals(step, total, eval_interval) * eval_s > left:
        total -= 1
    return total
