"""The setup screen's time lines: how long the run takes on the panel's target, and where the figure comes from.

engine.speed.run_time does the work (this machine's kept measurement of the
config, else the model); this module picks the catalogue card of the target
and words the result for the narrow memory panel, with the final
evaluation's cost and the quality guide (engine.speed.quality) below it.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from engine.config.run_config import RunConfig
from engine.errors import ConfigError
from engine.memory.estimate import estimate_memory
from engine.memory.gpus import GPU, find_gpu
from engine.speed.model import SplitSizes, TimeEstimate, format_duration, short_source
from engine.speed.quality import (CHINCHILLA_TOKENS_PER_PARAM, REFERENCES_CAPTION, QualityGuide, measured_line,
                                  quality_guide, reference_rows)
from engine.speed.run_time import run_time, timed_plan
from tui_lm.widgets.setup.messages import label


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


def final_eval_line(te: TimeEstimate, sizes: SplitSizes | None, final_eval_batches: int) -> Text:
    """What the final evaluation costs (engine.speed.model's windows and time) and the setting that bounds it."""
    bound = label("train.final_eval_batches")
    if final_eval_batches < 0:
        return Text(f"final evaluation skipped ({bound} -1)", style="dim")
    if sizes is None:
        return Text(f"final evaluation: the whole valid and test splits, size unknown; {bound} bounds it",
                    style="dim")
    how = "bounded" if final_eval_batches else "whole splits"
    return Text.assemble(("final evaluation ", "dim"), (format_duration(te.final_eval_s), "bold"),
                         (f" ({te.final_windows:,} windows, {how}); {bound} bounds it", "dim"))


def time_lines(te: TimeEstimate, sizes: SplitSizes | None, final_eval_batches: int = 0,
               measurable: bool = False) -> list[Text]:
    """"time 0.35 s/step · 37 min/epoch", "to the end 13.2 h (21,720 steps, 86 evaluations)", the final
    evaluation's cost, the source."""
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
    lines.append(final_eval_line(te, sizes, final_eval_batches))
    where = short_source(te.throughput)
    if sizes is not None and not sizes.exact:
        where += "; dataset size estimated"
    if measurable:  # the target is this machine: the setup screen's F4 measures it
        where += "; F4 measures it here"
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


def guide_on(cfg: RunConfig, device, vocab: int, sizes: SplitSizes | None, num_params: int) -> QualityGuide:
    """The quality guide of the run as planned on `device` (its steps need the training split's size)."""
    return quality_guide(timed_plan(cfg, 1, device, sizes, vocab), num_params, sizes.train if sizes else None)


def quality_parts(g: QualityGuide) -> list[Text | Table]:
    """"data 2.8 tokens/param (compute-optimal ~20) · 20.0 epochs", the repetition warning, a measured
    perplexity when this project measured this very run, and the published references."""
    parts: list[Text | Table] = []
    if g.tokens_per_param is None:
        parts.append(Text("data: tokens per parameter unknown (dataset size unknown)", style="dim"))
    else:
        head = Text.assemble(("data ", "dim"), (f"{g.tokens_per_param:.2g} tokens/param", "bold"),
                             (f" (compute-optimal ~{CHINCHILLA_TOKENS_PER_PARAM:.0f})", "dim"))
        if g.epochs is not None:
            head.append(" · ")
            head.append(f"{g.epochs:.3g} epochs", style="bold yellow" if g.repeat_warning else "bold")
        parts.append(head)
    if g.repeat_warning:
        parts.append(Text(g.repeat_warning, style="yellow"))
    if g.measured is not None:
        parts.append(Text(measured_line(g.measured), style="green"))
    parts.append(Text(REFERENCES_CAPTION, style="dim italic"))
    table = Table(box=None, padding=(0, 1), pad_edge=False, expand=True, show_edge=False, header_style="dim")
    for name, just in (("published", "left"), ("size", "right"), ("data", "left"), ("ppl", "right")):
        table.add_column(name, justify=just, no_wrap=True)
    for row in reference_rows(short=True):
        table.add_row(*row)
    parts.append(table)
    return parts
