"""The time of a planned run on a device: this machine's kept measurement of the config when there is one, else the model.

What `tui-lm estimate` and the setup screen both show: `timed_plan` plans
with the training split's size (epochs need it), `run_time` reads the kept
measurement (engine.speed.measured) or models the throughput
(engine.speed.model) and works out the whole run's time.
"""

from __future__ import annotations

from engine.config.plan import DeviceInfo, RunPlan, plan_run
from engine.config.run_config import RunConfig
from engine.errors import DataError
from engine.memory.estimate import MemoryEstimate
from engine.memory.gpus import GPU
from engine.speed.measured import load_measurement
from engine.speed.model import SplitSizes, TimeEstimate, estimate_time, modelled_throughput


def device_key(gpu: GPU | None) -> str:
    """The device a measurement is kept under: "cpu" or the catalogue card's name."""
    return "cpu" if gpu is None else gpu.name


def timed_plan(cfg: RunConfig, world_size: int, device: DeviceInfo, sizes: SplitSizes | None,
               vocab_size: int | None = None) -> RunPlan:
    """The plan with the training split's size when it is known."""
    if sizes is not None:
        try:
            return plan_run(cfg, world_size=world_size, device=device, vocab_size=vocab_size, train_tokens=sizes.train)
        except DataError:  # shorter than one window: the run says so when it starts; plan without epochs
            pass
    return plan_run(cfg, world_size=world_size, device=device, vocab_size=vocab_size)


def run_time(plan: RunPlan, est: MemoryEstimate, gpu: GPU | None, sizes: SplitSizes | None) -> TimeEstimate:
    """The time of `plan` on `gpu` (None: the CPU): measured here when kept, else modelled."""
    modelled = modelled_throughput(plan, est, gpu)
    kept = load_measurement(plan, device_key(gpu))
    return estimate_time(plan, est, kept.throughput(modelled) if kept else modelled, sizes)
