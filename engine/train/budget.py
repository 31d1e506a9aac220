"""`train.time_budget`: measure the run's speed after a warm-up, then fix its total steps once, recorded.

The budget covers the training loop: from the first step of this process
(after data preparation and the compile warm-up) to the end of the final
evaluation. `BudgetWatch.observe` is called at each logged step with the
trainer's training clock (read after the host sync, evaluations and
checkpoints excluded). The first logged window (at least WARMUP_STEPS steps)
is the warm-up; the next MEASURE_STEPS or more steps, in whole windows and
at least MEASURE_SHARE of the budget, give the seconds per step. The total then follows from engine.speed.budget: the
wall time spent so far (evaluations and checkpoints included), the steps
left, the periodic evaluations still ahead and the final evaluation, both at
the measured speed (forward-only: a third of a trained token's FLOPs). The
final checkpoint and model save are not counted (well under a second for the
presets on a local disk).

The speed is watched after that too: on a shared machine it moves with the
load (2x within a minute on the development machine). Over each later window
of the same length, when the steps that fit at the window's speed would move
the end by more than REFIX_SHARE of the budget, the total is fixed again
(recorded the same way; the cosine follows the new total from that step).
A budget too short for any step after the measurement ends the run there and
says why.

`fix_total` records the total as train.budget_steps in run.toml and a
SettingsChanged record, replans (the cosine schedule ends at the new total;
warmup as set) and says the predicted end. A resume reads budget_steps from
run.toml and continues to exactly that step without measuring again; a run
stopped before the total was fixed measures again on resume, with the budget
minus the training time it had already spent.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Callable

from engine import events as ev
from engine.config.loading import write_toml
from engine.config.plan import RunPlan, replan
from engine.config.run_config import RunConfig, parse_duration
from engine.speed.budget import budget_total, periodic_evals
from engine.speed.model import FORWARD_SHARE, eval_tokens

WARMUP_STEPS = 2
MEASURE_STEPS = 5
MEASURE_SHARE = 0.05  # and at least this share of the budget: a few steps on a shared machine are noise
REFIX_SHARE = 0.02  # a later window's speed fixes the total again when it moves the end by more than this


class BudgetWatch:
    def __init__(self, cfg: RunConfig, plan: RunPlan, *, start_step: int, spent_s: float, valid_tokens: int,
                 test_tokens: int, reduce: Callable[[list[float]], list[float]] = lambda xs: xs) -> None:
        """`spent_s`: training time an earlier process spent on this budget; `reduce`: the ranks' mean."""
        self.budget_s = parse_duration(cfg.train.time_budget)
        self.plan, self.start_step = plan, start_step
        self.spent_before = spent_s
        self.valid_tokens, self.test_tokens = valid_tokens, test_tokens
        self.reduce = reduce
        self.wall_start = time.perf_counter()
        self.warm: tuple[int, float] | None = None  # (step, training clock) where the measured window starts
        self.total: int | None = None  # the total fixed last

    def observe(self, step: int, elapsed_s: float) -> tuple[int, float, float] | None:
        """At a logged step: None while measuring, then (total, seconds per step, predicted seconds left) when the
        total is fixed, first or again (module docstring)."""
        if self.warm is None:
            if step - self.start_step >= WARMUP_STEPS:
                self.warm = (step, elapsed_s)
            return None
        warm_step, warm_elapsed = self.warm
        if step - warm_step < MEASURE_STEPS or elapsed_s - warm_elapsed < MEASURE_SHARE * self.budget_s:
            return None
        self.warm = (step, elapsed_s)  # the next window starts here
        spent = self.spent_before + time.perf_counter() - self.wall_start
        step_s, spent = self.reduce([(elapsed_s - warm_elapsed) / (step - warm_step), spent])
        t, plan = self.plan.config.train, self.plan
        tokens_per_s = plan.tokens_per_step / plan.world_size / step_s
        eval_rate = tokens_per_s / FORWARD_SHARE
        eval_s = eval_tokens(t.eval_batches, plan.micro_batch, plan.seq_len, self.valid_tokens) / eval_rate
        final_s = 0.0
        if t.final_eval_batches >= 0:
            final_s = sum(eval_tokens(t.final_eval_batches, plan.micro_batch, plan.seq_len, n)
                          for n in (self.valid_tokens, self.test_tokens)) / eval_rate
        total = budget_total(budget_s=self.budget_s, spent_s=spent, step=step, step_s=step_s,
                             eval_interval=t.eval_interval, eval_s=eval_s, final_s=final_s)
        left = (total - step) * step_s + periodic_evals(step, total, t.eval_interval) * eval_s + final_s
        if self.total is not None and abs(total - self.total) * step_s <= REFIX_SHARE * self.budget_s:
            return None  # the end moves too little to change the schedule for
        self.total = total
        return total, step_s, left


def fix_total(cfg: RunConfig, plan: RunPlan, step: int, total: int, step_s: float, left_s: float,
              emit: ev.EventSink, run_toml=None) -> tuple[RunConfig, RunPlan]:
    """The config and plan with the budget's total fixed, recorded (run.toml when `run_toml`) and announced."""
    t = cfg.train
    fixed = dataclasses.replace(cfg, train=dataclasses.replace(t, budget_steps=total))
    new_plan = replan(plan, fixed)
    if run_toml is not None:
        write_toml(new_plan.config, run_toml)
    end = (datetime.datetime.now() + datetime.timedelta(seconds=left_s)).strftime("%H:%M:%S")
    if t.budget_steps:
        emit(ev.Log(f"time budget {t.time_budget}: the speed moved to {step_s:.3g} s a step; the run ends at step "
                    f"{total:,} instead of {t.budget_steps:,} (the cosine schedule with it), predicted to end at "
                    f"{end}"))
    elif total <= step:
        emit(ev.Log(f"time budget {t.time_budget}: no step fits after the measurement ({step_s:.3g} s a step; "
                    f"the final evaluation needs about {left_s:.0f} s): the run ends at step {step:,}, predicted to "
                    f"end at {end}; a longer budget or a smaller train.final_eval_batches leaves room to train",
                    "warning"))
    else:
        emit(ev.Log(f"time budget {t.time_budget}: {step_s:.3g} s a step measured after a warm-up; the run ends at "
                    f"step {total:,} (the cosine schedule with it), training, evaluations and the final evaluation "
                    f"predicted to end at {end}"))
    emit(ev.SettingsChanged(step=step, changes={"train.budget_steps": [t.budget_steps, total]}))
    return new_plan.config, new_plan
