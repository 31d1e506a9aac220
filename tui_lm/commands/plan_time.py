"""The time half of `tui-lm estimate`: seconds per step, tokens/s, time per epoch and to the end of the schedule.

For the target (the CPU with --device cpu, the --gpu card) and each catalogue
GPU that fits (engine.speed.run_time: this machine's kept measurement of the
config, else the model), as JSON and as printed lines; and beside it the
quality guide (engine.speed.quality: tokens per parameter, epochs, published
references, a perplexity only where this project measured that very run).
Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from engine.config.plan import DeviceInfo, RunPlan
from engine.config.run_config import RunConfig
from engine.memory.estimate import MemoryEstimate, estimate_memory
from engine.memory.gpus import GPU
from engine.speed.model import SplitSizes, format_duration
from engine.speed.quality import (CHINCHILLA_TOKENS_PER_PARAM, REFERENCES, REFERENCES_CAPTION, QualityGuide,
                                  measured_line, reference_rows)
from engine.speed.run_time import run_time, timed_plan


def time_of(plan: RunPlan, est: MemoryEstimate, gpu: GPU | None, sizes: SplitSizes | None) -> dict[str, Any]:
    """The time figures of `plan` on `gpu` (None: the CPU), JSON-ready, each labelled with its source."""
    te = run_time(plan, est, gpu, sizes)
    th = te.throughput
    known = te.steps > 0
    return {
        "seconds_per_step": te.seconds_per_step,
        "tokens_per_s": te.tokens_per_s,
        "mfu": th.mfu,
        "source": th.source,
        "measured_here": th.here,
        "steps": te.steps or None,  # None: epochs over a split of unknown size
        "epoch_s": te.epoch_s,
        "periodic_evals": te.periodic_evals,
        "train_s": te.train_s if known else None,
        "eval_s": te.eval_s if known else None,
        "compile_s": te.compile_s,
        "total_s": te.total_s if known else None,
    }


def gpu_time(cfg: RunConfig, gpu: GPU, world_size: int, sizes: SplitSizes | None) -> dict[str, Any]:
    plan = timed_plan(cfg, world_size, DeviceInfo.gpu(gpu.name, gpu.bf16), sizes)
    return time_of(plan, estimate_memory(cfg, plan=plan), gpu, sizes)


def sizes_json(sizes: SplitSizes | None) -> dict[str, Any] | None:
    if sizes is None:
        return None
    return {"train_tokens": sizes.train, "valid_tokens": sizes.valid, "test_tokens": sizes.test,
            "exact": sizes.exact, "how": sizes.how}


def _maybe(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def time_lines(where: str, t: dict[str, Any], sizes: SplitSizes | None) -> list[str]:
    """The printed time section for one target."""
    data = ("dataset size unknown (no token cache, and data.max_samples or an unknown source): no epoch time"
            if sizes is None else f"dataset: {sizes.train:,} training tokens ({sizes.how})")
    lines = [data, f"Time on {where}: {t['seconds_per_step']:.3g} s/step, {t['tokens_per_s']:,.0f} tokens/s"
             + (f", MFU {100 * t['mfu']:.1f}%" if t["mfu"] is not None else "")
             + (f", {_maybe(t['epoch_s'])} per epoch" if t["epoch_s"] else "")]
    if t["total_s"] is not None:
        lines.append(f"  to the end of the schedule ({t['steps']:,} steps): {format_duration(t['total_s'])} = training "
                     f"{format_duration(t['train_s'])} + {t['periodic_evals']} periodic and the final evaluations "
                     f"{format_duration(t['eval_s'])} + compile {format_duration(t['compile_s'])}")
    lines.append(f"  throughput {t['source']}")
    return lines


def time_table(rows: list[dict[str, Any]]):
    """GPU, s/step, tokens/s, epoch and total of the catalogue rows that carry a time."""
    from rich.table import Table

    table = Table(caption="the MFU of the nearest row measured on an NVIDIA H200, at each card's peak: modelled, "
                          "not measured on that card", caption_justify="left")
    for col, just in (("GPU", "left"), ("s/step", "right"), ("tokens/s", "right"), ("epoch", "right"),
                      ("total", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for r in rows:
        t = r["time"]
        table.add_row(r["name"], f"{t['seconds_per_step']:.3g}", f"{t['tokens_per_s']:,.0f}", _maybe(t["epoch_s"]),
                      _maybe(t["total_s"]))
    return table


def quality_json(g: QualityGuide) -> dict[str, Any]:
    m = g.measured
    return {
        "tokens": g.tokens or None,
        "params": g.params,
        "tokens_per_param": g.tokens_per_param,
        "compute_optimal_tokens_per_param": CHINCHILLA_TOKENS_PER_PARAM,
        "data_verdict": g.data_verdict,
        "epochs": g.epochs,
        "repeat_warning": g.repeat_warning or None,
        # Only a run this project measured, exactly this one (engine/speed/quality.py); else null.
        "expected_word_perplexity": None if m is None else {"valid_word_ppl": m.word_ppl, "seeds": m.seeds,
                                                            "source": f"bench/quality.py; {m.source}"},
        "references": [{"model": r.model, "params": r.params, "dataset": r.dataset, "test_word_ppl": r.word_ppl,
                        "source": r.source} for r in REFERENCES],
        "references_note": REFERENCES_CAPTION,
    }


def quality_lines(g: QualityGuide) -> list[str]:
    """The printed quality section."""
    if g.tokens_per_param is None:
        lines = ["Quality: tokens per parameter unknown (epochs of a dataset of unknown size)"]
    else:
        lines = [f"Quality: {g.tokens:,} training tokens for {g.params:,} parameters = {g.tokens_per_param:.1f} "
                 f"tokens per parameter (compute-optimal ~{CHINCHILLA_TOKENS_PER_PARAM:.0f}, Hoffmann et al. "
                 f"2022): {g.data_verdict}"]
    if g.epochs is not None:
        lines.append(f"  {g.epochs:.2f} epochs over the training split"
                     + (f"; warning: {g.repeat_warning}" if g.repeat_warning else ""))
    lines.append(f"  {measured_line(g.measured)}" if g.measured else
                 "  no expected perplexity: this project has measured no run like this one (bench/quality.py)")
    lines.append(f"  {REFERENCES_CAPTION}:")
    for model, params, dataset, ppl in reference_rows():
        lines.append(f"    {ppl:>5}  {params:>4} on {dataset:<12}  {model}")
    return lines
