"""Measure a config's training speed on this machine: a few real steps of the real Trainer, after a warm-up.

`measure(cfg)` trains `cfg` as a run would (same device, precision, compile,
micro-batch, accumulation) in a temporary run folder, with evaluation,
samples and checkpoints off, and stops after `warmup` steps and then at
least `steps` timed steps lasting at least MIN_TIMED_S together (on a shared
machine one step's time varies by 2-5x: a few steps alone are noise). The
clock is the trainer's own (read after the host sync of each logged step, so
on a GPU it counts finished work); the timed steps are those after the
warm-up. The compile time is the trainer's torch.compile warm-up plus the
warm-up steps' excess over steady steps (recompiles, autotuning). The result
is kept in the user's cache (engine.speed.measured) under this machine and the
config, where `tui-lm estimate` and the setup screen find it. The caller's
config is not modified; the temporary folder is deleted.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from pathlib import Path
from typing import Callable

from engine import events as ev
from engine.config.plan import DeviceInfo, RunPlan, plan_run
from engine.config.run_config import RunConfig
from engine.control import TrainingControl
from engine.errors import ConfigError, UserError
from engine.memory.gpus import find_gpu
from engine.speed.measured import Measurement, save_measurement
from engine.train.trainer import Trainer

WARMUP_STEPS = 2
TIMED_STEPS = 5
MIN_TIMED_S = 10.0


def measured_device(describe: str, name: str) -> str:
    """"cpu", or the catalogue name of the CUDA card `name` (its own name when the catalogue lacks it)."""
    if not describe.startswith("cuda"):
        return "cpu"
    try:
        return find_gpu(name).name
    except ConfigError:
        return name


def _measuring_config(cfg: RunConfig, out_dir: Path, total: int) -> RunConfig:
    """`cfg` for a measurement run that stops itself (a control) before `total` + 1 steps."""
    train = dataclasses.replace(cfg.train, max_steps=total + 1, log_interval=1, eval_interval=0, save_interval=0,
                                sample_tokens=0, keep_checkpoints=1, final_eval_batches=-1)
    run = dataclasses.replace(cfg.run, out_dir=str(out_dir), run_name="measure")
    return dataclasses.replace(cfg, train=train, run=run)


class MeasureCancelled(UserError):
    """The caller's control stopped the measurement before its last step: nothing is kept."""


def measure(cfg: RunConfig, *, steps: int = TIMED_STEPS, warmup: int = WARMUP_STEPS,
            log: Callable[[str], None] = lambda _: None, control: TrainingControl | None = None,
            min_seconds: float | None = None) -> tuple[RunPlan, str, Measurement]:
    """(the plan measured, the device key, the measurement), saved; UserError when the run cannot train,
    MeasureCancelled when `control` (the caller's, to cancel it from another thread) stops it first."""
    control = control or TrainingControl()
    metrics: list[ev.StepMetrics] = []
    started: list[ev.RunStarted] = []
    min_s = MIN_TIMED_S if min_seconds is None else min_seconds
    total = warmup + steps
    done = False

    def emit(e: ev.Event) -> None:
        nonlocal done
        if isinstance(e, ev.StepMetrics):
            metrics.append(e)
            log(f"step {e.step} of {total}+: {e.step_time_s:.2f} s")
            timed_s = e.elapsed_s - metrics[warmup - 1].elapsed_s if len(metrics) >= warmup else 0.0
            if e.step >= total and timed_s >= min_s and not done:
                done = True
                control.stop()
        elif isinstance(e, ev.RunStarted):
            started.append(e)
            log(f"training on {e.device}, {e.precision}, {'compiled' if e.compiled else 'eager'}: "
                f"{warmup} warm-up steps, then at least {steps} timed over at least {min_s:.0f} s")
        elif isinstance(e, ev.Log):
            log(e.message)

    with tempfile.TemporaryDirectory(prefix="tui-lm-measure-") as tmp:
        # Room for the steps MIN_TIMED_S needs: the control ends it (the schedule does not change a step's speed).
        result = Trainer(_measuring_config(cfg, Path(tmp), total + 1_000_000), emit, control).run()
    if isinstance(result, ev.Failed):
        raise UserError(f"the measurement run failed: {result.message.splitlines()[0]}")
    if not done and control.should_stop:
        raise MeasureCancelled(f"measurement cancelled after {len(metrics)} steps: nothing kept")
    if not started or not done:
        raise UserError(f"the measurement run stopped after {len(metrics)} of {total} steps")
    run = started[0]
    steps = len(metrics) - warmup
    timed_s = metrics[-1].elapsed_s - metrics[warmup - 1].elapsed_s
    step_s = timed_s / steps
    excess = max(0.0, metrics[warmup - 1].elapsed_s - warmup * step_s)
    result_m = Measurement(tokens_per_s=run.tokens_per_step / run.world_size / step_s,
                           compile_s=(run.compile_s + excess) if run.compiled else 0.0, steps=steps,
                           date=datetime.date.today().isoformat())
    device = _device_info(run.device)
    plan = plan_run(cfg, device=device)
    key = measured_device(run.device, device.name)
    save_measurement(plan, key, result_m)
    return plan, key, result_m


def _device_info(describe: str) -> DeviceInfo:
    """The plan's description of the device the run trained on ("cuda:0 (NVIDIA H200)" or "cpu")."""
    if not describe.startswith("cuda"):
        return DeviceInfo(describe.split(" ")[0].split(":")[0])
    import torch

    index = torch.cuda.current_device()
    return DeviceInfo("cuda", index, torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index))
