"""Rows, table and context lines of bench/throughput.py: what a measurement looks like when printed."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import torch

from engine.memory.estimate import format_bytes

COLUMNS = ("loop", "preset", "device", "precision", "compile", "variant", "batch", "seq", "tokens/s", "MFU %",
           "step ms", "peak mem", "compile s")

# Published single-GPU rates for GPT-2 124M (the "medium" preset), for context.
CONTEXT = (
    "reference GPU rates (GPT-2 124M, seq 1024, bf16): pure-PyTorch speed runs ~460K tok/s on one H100; "
    "llm.c ~470K tok/s per H100",
    "target: medium, seq 1024, bf16, one H100: >= 450K tok/s (~40% MFU)",
)
TARGET = {"preset": "medium", "seq": 1024, "precision": "bf16", "tokens_per_s": 450_000, "gpu": "H100 80GB"}


@dataclass
class Row:
    loop: str  # "engine" (the real Trainer) or "reference" (bench/reference_gpt.py)
    preset: str
    device: str  # Runtime.describe(): "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
    precision: str  # as resolved: fp32 | bf16 | fp16 (tf32 noted for fp32 on CUDA)
    compile: bool
    batch: int
    seq: int
    tokens_per_s: float = 0.0
    mfu: float | None = None  # fraction of the GPU's peak; None on the CPU or an unknown GPU
    step_ms: float = 0.0
    peak_bytes: int = 0
    compile_s: float | None = None  # compile_logged_s + first_window_excess_s
    compile_logged_s: float = 0.0  # the trainer's own "torch.compile: compiled in X s" (before the clock)
    first_window_excess_s: float = 0.0  # first window minus as many steady steps: warm-up, recompiles
    gpu: str = ""  # engine.memory.gpus catalogue entry of the device, "" on the CPU or an unknown GPU
    num_params: int = 0
    flops_per_token: int = 0
    runs: list[float] = field(default_factory=list)  # tokens/s of each repeat, in run order
    error: str = ""
    variant: str = "plain"  # the train settings measured beside the plain path ("loss_chunk=4096", "fp8=rowwise")
    levers: dict = field(default_factory=dict)  # the speed levers as the run resolved them (RunStarted.levers)

    def cells(self) -> list[str]:
        head = [self.loop, self.preset, self.device, self.precision, "on" if self.compile else "off",
                self.variant if self.loop == "engine" else "", str(self.batch), str(self.seq)]
        if self.error:
            return head + ["failed", "", "", "", ""]
        return head + [
            f"{self.tokens_per_s:,.0f}",
            "n/a" if self.mfu is None else f"{100 * self.mfu:.1f}",
            f"{self.step_ms:,.0f}", format_bytes(self.peak_bytes) if self.peak_bytes else "n/a",
            "" if self.compile_s is None else f"{self.compile_s:.1f}",
        ]


def format_table(rows: list[Row]) -> str:
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {"batch", "seq", "tokens/s", "MFU %", "step ms", "peak mem", "compile s"}

    def line(cs: list[str]) -> str:
        return "  ".join(c.rjust(w) if name in right else c.ljust(w)
                         for c, w, name in zip(cs, widths, COLUMNS)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out)


def ratios(rows: list[Row]) -> list[tuple[Row, Row, float, list[float]]]:
    """(engine row, reference row, median of per-pair engine/reference ratios, the pair ratios)."""
    out = []
    for eng, ref in zip(rows, rows[1:]):  # a reference row follows the engine row it ran interleaved with
        if ref.loop != "reference" or eng.loop != "engine" or eng.error:
            continue
        pairs = [e / f for e, f in zip(eng.runs, ref.runs) if f > 0]
        if pairs:
            out.append((eng, ref, statistics.median(pairs), pairs))
    return out


def variant_ratios(rows: list[Row]) -> list[tuple[Row, Row, float, list[float]]]:
    """(plain row, variant row of the same preset and compile, median per-pair tokens/s ratio, the pairs)."""
    out = []
    plain = {(r.preset, r.compile, r.precision): r for r in rows if r.loop == "engine" and r.variant == "plain"}
    for r in rows:
        base = plain.get((r.preset, r.compile, r.precision))
        if r.loop == "engine" and r.variant != "plain" and base and not (r.error or base.error):
            pairs = [c / b for c, b in zip(r.runs, base.runs) if b > 0]
            out.append((base, r, statistics.median(pairs), pairs))
    return out


def context_lines(rows: list[Row], settings: dict) -> list[str]:
    lines = []
    for eng, ref, ratio, pairs in ratios(rows):
        lines.append(f"engine/reference, {eng.preset} on {eng.device} ({eng.precision} vs {ref.precision} "
                     f"{'compiled' if ref.compile else 'eager'}): {ratio:.2f}x "
                     f"(median of per-pair ratios {', '.join(f'{p:.2f}' for p in pairs)})")
    for base, other, ratio, pairs in variant_ratios(rows):
        lines.append(f"{other.variant} / plain, {base.preset} compile="
                     f"{'on' if base.compile else 'off'}: tokens/s {ratio:.2f}x (pairs "
                     f"{', '.join(f'{p:.2f}' for p in pairs)}), peak mem {format_bytes(other.peak_bytes)} vs "
                     f"{format_bytes(base.peak_bytes)} ({other.peak_bytes / max(1, base.peak_bytes):.2f}x)")
    for r in rows:
        if r.loop == "engine" and not r.error and r.compile:
            lines.append(f"compile s, engine {r.preset}: {r.compile_logged_s:.1f} logged by the trainer's compile "
                         f"warm-up + {r.first_window_excess_s:.1f} in the first timed window (recompiles, warm-up)")
    for r in rows:
        if r.error:
            lines.append(f"{r.loop} {r.preset} compile={'on' if r.compile else 'off'} failed: {r.error}")
    lines.extend(CONTEXT)
    for r in rows:
        if (r.loop == "engine" and not r.error and r.preset == TARGET["preset"] and r.seq == TARGET["seq"]
                and r.precision == TARGET["precision"] and r.device.startswith("cuda")):
            verdict = "meets" if r.tokens_per_s >= TARGET["tokens_per_s"] else "below"
            where = "" if r.gpu == TARGET["gpu"] else f" (measured on {r.device}, target is for one H100 SXM)"
            lines.append(f"medium bf16 compile={'on' if r.compile else 'off'}: {r.tokens_per_s:,.0f} tok/s, "
                         f"{verdict} the target{where}")
    lines.append("MFU = flops_per_token(seq) x tokens/s / peak (engine.memory.gpus, by torch.cuda.get_device_name()); "
                 "n/a on the CPU. compile s = logged torch.compile warm-up + first window's excess over steady.")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"settings: {settings}; host: {os.cpu_count()} CPU threads, torch {torch.__version__}, "
                 f"load average {load:.1f} at the end (other processes share the CPU: figures are medians "
                 f"of interleaved runs)")
    return lines
