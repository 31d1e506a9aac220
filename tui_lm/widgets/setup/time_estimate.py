"""The setup screen's time lines: how long the run takes on the panel's target, and where the figure comes from.

engine.speed.run_time does the work (this machine's kept measurement of the
config, else the model); this module picks the catalogue card of the target
and words the result for the narrow memory panel.
"""

from __future__ import annotations

from rich.text import Text

from engine.config.run_config import RunConfig
from engine.errors import ConfigError
from engine.memory.estimate import estimate_memory
from engine.memory.gpus import GPU, find_gpu
from engine.speed.model import SplitSizes, TimeEstimate, format_duration, short_source
from engine.speed.run_time import run_time, timed_plan


class UnknownCard(Exception):
    """The target GPU is not in the catalogue: no peak to time it with."""


def target_gpu(device, name: str, capacity: int) -> GPU | None:
    """The catalogue card of a GPU target (None for the CPU); UnknownCard when it is not catalogued."""
    if device.type != "cuda":
        return None
    try:
        return find_gpu(name, capacity)
    except ConfigError:
        raise UnknownCard(name) from None


def time_on(cfg: RunConfig, device, gpu: GPU | None, vocab: int, sizes: SplitSizes | None) -> TimeEstimate:
    plan = timed_plan(cfg, 1, device, sizes, vocab)
    return run_time(plan, estimate_memory(cfg, plan=plan), gpu, sizes)


def time_lines(te: TimeEstimate, sizes: SplitSizes | None) -> list[Text]:
    """"time 0.35 s/step · 37 min/epoch", "to the end 13.2 h (21,720 steps, 86 evaluations)", the source."""
    head = Text.assemble(("time ", "dim"), (f"{te.seconds_per_step:.3g} s/step", "bold"))
    if te.epoch_s:
        head.append(" · ")
        head.append(f"{format_duration(te.epoch_s)}/epoch", style="bold")
    lines = [head]
    if te.steps:
        lines.append(Text.assemble(("to the end ", "dim"), (format_duration(te.total_s), "bold"),
                                   (f" ({te.steps:,} steps, {te.periodic_evals} evaluations + the final one"
                                    f"{', compile' if te.compile_s else ''})", "dim")))
    else:
        lines.append(Text("to the end: unknown (epochs of a dataset of unknown size)", style="dim"))
    where = short_source(te.throughput)
    if sizes is not None and not sizes.exact:
        where += "; dataset size estimated"
    lines.append(Text(where, style="dim italic"))
    return lines


def short_total(te: TimeEstimate | None) -> str:
    """The presets table's time cell: the whole run, else (steps unknown) one step."""
    if te is None:
        return "-"
    if not te.steps:
        return f"{te.seconds_per_step:.2g}s/st"
    # A narrow column: "45s", "12m", "2.3h", "3.0d".
    number, unit = format_duration(te.total_s).split()
    return number + unit[0]
