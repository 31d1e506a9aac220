"""How long a run takes, from its plan alone: seconds per step, per epoch and to the end of the schedule.

    seconds per step = overhead + FLOPs per step / (peak FLOP/s for the precision x expected MFU)
    total            = steps x seconds per step + evaluations + compile time

FLOPs per step = tokens per step per rank x FLOPs per token (6N + attention,
engine.memory.estimate.flops_per_token). The overhead is a fixed time per
step, seeded per device kind (engine.speed.table.OVERHEAD); the efficiency
(MFU on a GPU, the achieved FLOP/s on the CPU, both on the step without its
overhead) comes from engine.speed.table's measured rows, or
from a measurement of this very config on this machine (`Throughput.measured`,
engine.speed.measured). Evaluations are forward-only (a third of the FLOPs
per token), run eagerly (the trainer scores with the uncompiled model), at the
eager efficiency of the same lookup, overhead included in it: the periodic ones every eval_interval
steps over eval_batches micro-batches (0: the whole valid split), and the
final whole valid and test splits unless final_eval_batches bounds or skips
them. Sampling at each evaluation (a few dozen tokens) is left out. Compile
time is the nearest compiled row's warm-up. Pure arithmetic: the setup screen
recomputes it per keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.plan import RunPlan
from engine.memory.estimate import MemoryEstimate
from engine.memory.gpus import GPU, find_gpu
from engine.speed.table import OVERHEAD, compute_flops, nearest_row, peak_flops

FORWARD_SHARE = 1 / 3  # a forward pass is 2N of the 6N FLOPs per trained token


@dataclass(frozen=True)
class Throughput:
    """Training speed on one rank, and where the figure comes from."""

    tokens_per_s: float
    # "measured on NVIDIA H200: <row>", "extrapolated from <device>: <row> (differs in ...)", "measured here on DATE"
    source: str
    mfu: float | None = None  # None on the CPU (no catalogued peak)
    compile_s: float = 0.0
    eval_tokens_per_s: float = 0.0  # forward-only, eager; 0 = tokens_per_s / FORWARD_SHARE
    here: bool = False  # measured on this machine (engine.speed.measured), not modelled


@dataclass(frozen=True)
class SplitSizes:
    """The dataset's splits in tokens; `exact` when read from the token cache, else estimated (`how`)."""

    train: int
    valid: int
    test: int  # 0 when the dataset has no test split
    exact: bool
    how: str = ""  # "from the token cache", "estimated from 12.0 MB of text at 4.87 bytes a token"


@dataclass(frozen=True)
class TimeEstimate:
    seconds_per_step: float
    tokens_per_s: float  # all ranks
    throughput: Throughput
    steps: int
    train_s: float
    epoch_s: float | None  # None while the training split's size is unknown
    periodic_evals: int
    eval_s: float  # periodic and final evaluations
    final_windows: int  # windows the final evaluation scores (valid and test; 0: skipped or splits unknown)
    final_eval_s: float  # its share of eval_s
    compile_s: float
    total_s: float  # to the end of the schedule: training, evaluations and compile


def _efficiency(plan: RunPlan, flops: int, gpu: GPU | None, compile: bool,
                whole: bool = False) -> tuple[float, str, float]:
    """(FLOP/s per rank without the step's overhead, source, compile seconds) from the nearest measured row;
    `whole`: of its whole step, overhead included."""
    kind = "cuda" if gpu is not None else "cpu"
    t = plan.config.train
    row, differs, _ = nearest_row(kind, flops, plan.micro_batch * plan.seq_len, compile=compile,
                                  arch=plan.model.arch, optimizer=t.optimizer, precision=plan.precision)
    same_card = gpu is None or find_gpu(row.device) == gpu
    exact = not differs and row.flops_per_token == flops and row.micro_batch * row.seq_len == \
        plan.micro_batch * plan.seq_len
    what = "measured on" if exact and same_card else "extrapolated from"
    unlike = f" (differs in {', '.join(differs)})" if differs else ""
    source = f"{what} {row.describe()}{unlike} [{row.source}]"
    achieved = row.achieved_flops if whole else compute_flops(row)
    if gpu is None:
        return achieved, source, row.compile_s
    mfu = achieved / peak_flops(find_gpu(row.device), row.precision)
    if not same_card:
        source += f", its MFU at the {gpu.name}'s peak"
    return peak_flops(gpu, plan.precision) * mfu, source, row.compile_s


def modelled_throughput(plan: RunPlan, est: MemoryEstimate, gpu: GPU | None) -> Throughput:
    """Training tokens/s per rank of `plan` on `gpu` (None: this CPU), from the measured rows and the overhead."""
    flops = est.flops_per_token
    rate, source, compile_s = _efficiency(plan, flops, gpu, plan.compile)
    overhead = OVERHEAD["cpu" if gpu is None else "cuda"]
    tokens = plan.tokens_per_step / plan.world_size
    tokens_per_s = tokens / (overhead.seconds + tokens * flops / rate)
    if overhead.seconds:
        source += f"; + {overhead.seconds * 1e3:.3g} ms a step ({overhead.source})"
    # Evaluation (eager) at the eager row's whole-step rate: its batches have fixed costs too, unmeasured.
    eval_rate = _efficiency(plan, flops, gpu, False, whole=True)[0]
    return Throughput(tokens_per_s=tokens_per_s, source=source,
                      mfu=None if gpu is None else tokens_per_s * flops / peak_flops(gpu, plan.precision),
                      compile_s=compile_s if plan.compile else 0.0,
                      eval_tokens_per_s=eval_rate / (flops * FORWARD_SHARE))


def scored_windows(batches: int, micro: int, seq: int, split_tokens: int) -> int:
    """Windows one evaluation scores: `batches` batches of `micro` windows (0 = the whole split), at most the split.

    The one conversion from train.eval_batches / final_eval_batches (counted in batches of the training
    micro-batch's size) to windows: the trainer, this time model and the time budget all call it."""
    windows = -(-(split_tokens - 1) // seq) if split_tokens > 1 else 0
    return min(windows, batches * micro) if batches else windows


def eval_tokens(batches: int, micro: int, seq: int, split_tokens: int) -> int:
    """Tokens one evaluation scores (scored_windows' windows of `seq` tokens)."""
    return scored_windows(batches, micro, seq, split_tokens) * seq


def estimate_time(plan: RunPlan, est: MemoryEstimate, throughput: Throughput,
                  sizes: SplitSizes | None) -> TimeEstimate:
    """The run's time at `throughput` (see the module docstring); `sizes` None: the splits are unknown."""
    t = plan.config.train
    per_rank_tokens = plan.tokens_per_step / plan.world_size
    step_s = per_rank_tokens / throughput.tokens_per_s
    steps = plan.total_steps
    periodic = (steps - 1) // t.eval_interval if t.eval_interval and steps else 0
    scored = final = 0
    if sizes is not None:
        micro, seq = plan.micro_batch, plan.seq_len
        scored = periodic * eval_tokens(t.eval_batches, micro, seq, sizes.valid)
        if t.final_eval_batches >= 0:
            final = sum(eval_tokens(t.final_eval_batches, micro, seq, n) for n in (sizes.valid, sizes.test))
    eval_rate = throughput.eval_tokens_per_s or throughput.tokens_per_s / FORWARD_SHARE
    # Each rank scores its share of the windows.
    eval_s = (scored + final) / plan.world_size / eval_rate
    train_s = steps * step_s
    return TimeEstimate(
        seconds_per_step=step_s, tokens_per_s=throughput.tokens_per_s * plan.world_size, throughput=throughput,
        steps=steps, train_s=train_s, epoch_s=plan.steps_per_epoch * step_s if plan.steps_per_epoch else None,
        periodic_evals=periodic, eval_s=eval_s, final_windows=final // plan.seq_len,
        final_eval_s=final / plan.world_size / eval_rate, compile_s=throughput.compile_s,
        total_s=train_s + eval_s + throughput.compile_s,
    )


def format_duration(seconds: float) -> str:
    """"45 s", "12 min", "3.4 h", "2.1 days": what a user plans with."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def short_source(th: Throughput) -> str:
    """The source up to the row's details: "extrapolated from NVIDIA H200", "measured here on 2026-12-04 (5 steps)"."""
    return th.source.split(":")[0]
