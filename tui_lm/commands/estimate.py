"""`tui-lm estimate`: will this run fit on my GPU, and how long will it take? Without touching one.

    tui-lm estimate --preset small --batch_size 32 [--precision bf16] [--grad-checkpointing]
                    [--attention math] [--grad-accum N] [--seq-len N] [--d_model N] ...
                    [--vocab-size N] [--gpu "RTX 4080"] [--epochs N] [--dataset PATH] [--measure] [--json]

Prints the breakdown of the estimated peak (engine.memory.estimate), the parameter
count, tokens per step and FLOPs per token, then for every catalogue GPU (or
just --gpu) whether it fits, the largest batch_size that does and, where it
fits, seconds per step, time per epoch and to the end of the schedule
(engine.speed; tui_lm/commands/plan_time.py), then the same in detail for the
target (--device cpu: this CPU; --gpu). `--measure` trains a few real steps
here first (engine.train.measure, the only import of torch, made on demand)
and the measured speed replaces the modelled one, also next time. `--json`
prints the same as one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any
from engine.config.loading import build_config
from engine.config.model_label import config_model, model_label
from engine.config.plan import DeviceInfo, RunPlan, plan_run
from engine.config.run_config import RunConfig, user_settings
from engine.errors import ConfigError, UserError
from engine.memory.estimate import MemoryEstimate, estimate_memory, format_bytes, max_batch_size, run_verdict
from engine.memory.gpus import GPU, GPU_CATALOGUE, find_gpu, machine_ram
from engine.speed.model import SplitSizes
from engine.speed.quality import QualityGuide, quality_guide
from engine.speed.run_time import timed_plan
from engine.speed.sizes import split_sizes
from tui_lm.commands.plan_time import gpu_time, quality_json, quality_lines, sizes_json, time_lines, time_of, time_table
from tui_lm.flags import Parser, add_setting_flags, spellings
from tui_lm.flags import overrides_from as flag_overrides

# (where, its time figures, the split sizes) of the --device cpu or --gpu target
Target = tuple[str, dict[str, Any], SplitSizes | None] | None

# The settings that change the estimate, declared as such in engine/config/run_config.py.
SETTINGS = [s for s in user_settings() if s.estimate or s.key == "run.preset"]


def build_parser() -> Parser:
    p = Parser(prog="tui-lm estimate", description="Estimate the peak GPU memory of a training run.")
    p.add_argument(*spellings("--config"), dest="config", metavar="PATH", help="TOML run file (flags override it)")
    add_setting_flags(p, SETTINGS)
    p.add_argument(*spellings("--gpu"), dest="gpu", metavar="NAME",
                   help='one GPU to check, e.g. "RTX 4080" (default: all known)')
    p.add_argument(*spellings("--world_size", "--gpus"), dest="world_size", type=int, default=1, metavar="N",
                   help="data-parallel ranks sharing batch_size (default 1)")
    p.add_argument(*spellings("--device"), dest="device", default="cuda", choices=("cuda", "cpu"),
                   help="estimate for a GPU (default) or for CPU training")
    p.add_argument("--measure", action="store_true",
                   help="train a few real steps of this config here (after a warm-up, compile included) and use "
                        "the measured speed, now and next time (kept in the user's cache)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def measure_here(cfg: RunConfig, device: str, quiet: bool) -> str:
    """Run the measurement (engine.train.measure, which imports torch) on `device`; the card's name on a GPU."""
    from engine.train.measure import measure

    on = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
    _, key, m = measure(on, log=(lambda _: None) if quiet else (lambda line: print(line, file=sys.stderr)))
    print(f"measured here: {m.tokens_per_s:,.0f} tokens/s over {m.steps} steps"
          + (f", compile {m.compile_s:.1f} s" if m.compile_s else ""), file=sys.stderr)
    return key


def overrides_from(args) -> dict[str, dict[str, Any]]:
    return flag_overrides(args, SETTINGS)


def gpu_rows(cfg: RunConfig, gpus: list[GPU], world_size: int,
             sizes: SplitSizes | None = None) -> list[dict[str, Any]]:
    """Verdict, largest batch_size and (where it fits) time for each GPU, each with its own plan ("auto" is fp16
    without bf16). A run the card cannot start is judged by engine.memory.estimate.run_verdict: bf16 on a card
    without it as the fp16 run it can start ("no bf16: fp16 fits"), anything else "does not run"."""
    rows = []
    for gpu in gpus:
        asked = plan_run(cfg, world_size=world_size, device=DeviceInfo.gpu(gpu.name, gpu.bf16))
        said, plan, est = run_verdict(asked, gpu.memory_bytes)
        runs = not plan.errors
        rows.append({
            "name": gpu.name,
            "memory_bytes": gpu.memory_bytes,
            "precision": plan.precision,  # what the verdict is about (fp16 where bf16 was asked of a card without)
            "precision_supported": not asked.errors,
            "total_bytes": est.total_bytes,
            "verdict": said,
            "max_batch_size": max_batch_size(plan.config, gpu.memory_bytes, plan=plan) if runs else 0,
        })
        fits = runs and not said.endswith("does not fit")
        rows[-1]["time"] = gpu_time(plan.config, gpu, world_size, sizes) if fits else None
    return rows


def ram_row(plan: RunPlan, est: MemoryEstimate) -> dict[str, Any]:
    """--device cpu: the verdict against this machine's RAM, where the run trains."""
    ram = machine_ram()
    said, _, _ = run_verdict(plan, ram)
    return {"name": "this machine's RAM", "memory_bytes": ram, "precision": plan.precision,
            "total_bytes": est.total_bytes, "verdict": said,
            "max_batch_size": max_batch_size(plan.config, ram, plan=plan) if not plan.errors else 0}


def verdict_style(said: str) -> str:
    """The colour of a verdict: "fits" green, "tight" yellow, "does not fit" / "does not run" red."""
    return "green" if said.endswith("fits") else "yellow" if said.endswith("tight") else "red"


def as_json(plan: RunPlan, est: MemoryEstimate, rows: list[dict[str, Any]], target: Target = None,
            ram: dict[str, Any] | None = None, guide: QualityGuide | None = None) -> dict[str, Any]:
    cfg = plan.config
    return {
        "preset": cfg.run.preset,
        "model": cfg.to_dict()["model"],
        "batch_size": cfg.train.batch_size,
        "grad_accum_steps": cfg.train.grad_accum_steps,
        "grad_checkpointing": cfg.train.grad_checkpointing,
        "loss_chunk": cfg.train.loss_chunk,
        "levers": dataclasses.asdict(plan.levers),  # the speed levers resolved for the device (auto: today's path)
        "num_params": est.num_params,
        "micro_batch": est.micro_batch,
        "seq_len": est.seq_len,
        "precision": est.precision,
        "compiled": est.compiled,  # train.compile resolved for the device (auto: on for CUDA)
        "tokens_per_step": est.tokens_per_step,
        "flops_per_token": est.flops_per_token,
        "peak_phase": est.peak_phase,
        "total_bytes": est.total_bytes,
        "allocated_bytes": est.allocated_bytes,
        "eval_multiple": est.eval_multiple,  # training micro-batches an evaluation batch holds
        "rows": est.rows,
        "gpus": rows,
        "ram": ram,  # --device cpu: the verdict against this machine's RAM (no GPU table then)
        "dataset": sizes_json(target[2]) if target else None,
        "time": target[1] if target else None,  # on the target: the CPU with --device cpu, or --gpu
        "quality": quality_json(guide) if guide else None,
    }


def _count(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def print_report(plan: RunPlan, est: MemoryEstimate, rows: list[dict[str, Any]], target: Target = None,
                 ram: dict[str, Any] | None = None, guide: QualityGuide | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg, world_size = plan.config, plan.world_size
    m, t = cfg.model, cfg.train
    console.print(
        f"[bold]{model_label(*config_model(cfg))}[/]: {_count(est.num_params)} parameters, "
        f"batch_size {t.batch_size} = {t.grad_accum_steps} micro-step(s) x {world_size} rank(s) x "
        f"{est.micro_batch} sequences x {est.seq_len} tokens, {est.precision}, {m.attention} attention, "
        f"checkpointing {'on' if t.grad_checkpointing else 'off'}, "
        f"{f'loss in chunks of {t.loss_chunk} tokens, ' if t.loss_chunk and plan.levers.fused_loss == 'off' else ''}"
        f"{'torch.compile' if est.compiled else 'eager'}"
    )
    console.print(f"speed levers: {plan.levers.describe()}")
    if ram:  # --device cpu: the verdict on this machine first
        console.print(f"On this machine's RAM ({format_bytes(ram['memory_bytes'])}): "
                      f"[{verdict_style(ram['verdict'])}]{ram['verdict']}[/], "
                      f"largest batch_size {ram['max_batch_size'] or '-'}")
    where = "in RAM" if ram else "per GPU"
    console.print(f"Estimated peak {where}: [bold]{format_bytes(est.total_bytes)}[/] (at {est.peak_phase})")
    table = Table()
    table.add_column("row")
    table.add_column("memory", justify="right")
    table.add_column("share", justify="right")
    for name, size in est.rows.items():
        share = f"{100 * size / est.total_bytes:.1f}%" if est.total_bytes else "-"
        if size == 0:  # not allocated at this moment (gradients) or not used (fp32 has no copies)
            table.add_row(name, "-", "-", style="dim")
            continue
        table.add_row(name, format_bytes(size), share)
    table.add_row("total", format_bytes(est.total_bytes), "100%", style="bold")
    console.print(table)
    if est.rows.get("gradients") == 0:
        console.print(f"[dim]gradients ({format_bytes(est.gradient_bytes)}) are only allocated during backward, "
                      f"after this moment.[/]")
    console.print(f"parameters {est.num_params:,}   tokens/step {est.tokens_per_step:,}   "
                  f"FLOPs/token {est.flops_per_token:,} ({_count(est.flops_per_token)})")
    if rows:
        console.print("Does it fit?")
        gpus = Table()
        for col, just in (("GPU", "left"), ("memory", "right"), ("precision", "left"), ("verdict", "left"),
                          ("max batch_size", "right")):
            gpus.add_column(col, justify=just, no_wrap=True)
        for r in rows:
            gpus.add_row(r["name"], format_bytes(r["memory_bytes"]), r["precision"],
                         f"[{verdict_style(r['verdict'])}]{r['verdict']}[/]", str(r["max_batch_size"] or "-"))
        console.print(gpus)
    timed = [r for r in rows if r.get("time")]
    if timed:
        console.print("How long, where it fits:")
        console.print(time_table(timed))
    if target:
        for line in time_lines(*target):
            console.print(line, highlight=False, markup=False)
    for line in quality_lines(guide) if guide else []:
        console.print(line, highlight=False, markup=False)


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag already reported by Parser
        return int(e.code or 0)
    try:
        if args.world_size < 1:
            raise ConfigError(f"--world_size must be a positive integer, got {args.world_size}")
        cfg = build_config(None, args.config, overrides_from(args))
        # The vocabulary is the data section's (--vocab_size, or GPT-2's for --tokenizer gpt2).
        plan = plan_run(cfg, world_size=args.world_size, device=DeviceInfo.kind(args.device))
        if plan.errors:
            raise ConfigError(plan.errors[0])
        gpus = [find_gpu(args.gpu)] if args.gpu else list(GPU_CATALOGUE)
    except ConfigError as e:
        print(f"tui-lm estimate: error: {e}", file=sys.stderr)
        return 2
    if args.measure:
        try:
            measured_on = measure_here(cfg, args.device, args.json)
        except UserError as e:
            print(f"tui-lm estimate: error: {e}", file=sys.stderr)
            return 2
        if args.device == "cuda":
            gpus = [g for g in GPU_CATALOGUE if g.name == measured_on] or gpus
            args.gpu = args.gpu or measured_on
    est = estimate_memory(cfg, plan=plan)
    sizes = split_sizes(cfg.data)
    # On the CPU the run's memory is this machine's RAM: no GPU table unless --gpu asks for one.
    rows = gpu_rows(cfg, gpus, args.world_size, sizes) if args.device == "cuda" or args.gpu else []
    ram = ram_row(plan, est) if args.device == "cpu" else None
    target = None
    if args.device == "cpu":
        target = ("this CPU", time_of(timed_plan(cfg, args.world_size, DeviceInfo("cpu"), sizes), est, None, sizes),
                  sizes)
    elif args.gpu:
        target = (gpus[0].name, rows[0]["time"] or gpu_time(cfg, gpus[0], args.world_size, sizes), sizes)
    # Tokens per parameter and epochs need the steps, and so the training split's size.
    guide = quality_guide(timed_plan(cfg, args.world_size, plan.device, sizes), est.num_params,
                          sizes.train if sizes else None)
    if args.json:
        print(json.dumps(as_json(plan, est, rows, target, ram, guide)))
    else:
        print_report(plan, est, rows, target, ram, guide)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
