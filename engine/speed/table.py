"""Measured training throughput: the rows the time model is read from, and the rule for the rest.

Each row is one run of the engine's real Trainer that somebody measured and
wrote down (bench/README.md): the shape, micro-batch, sequence length,
compile, precision, arch and optimizer that decide the speed, and the
tokens/s it reached. From a row comes its efficiency: on a GPU the MFU
(FLOPs per token x tokens/s / the catalogue peak for the precision), which
carries to other GPUs; on the CPU, which has no catalogued peak, the achieved
FLOP/s itself, which carries only to machines like the one measured.

The rule for a combination nobody measured (`nearest_row`): among the rows of
the same device kind, the one at the smallest distance, where distance =
|log| of the FLOPs-per-token ratio + |log| of the tokens-per-micro-batch
ratio + 1 for each of compile, arch, optimizer and half-vs-full precision
that differs. Its efficiency is used as it is, labelled "extrapolated from"
that row (what differs named); an exact match is "measured on" its device.

A step also costs a fixed time whatever its size (`OVERHEAD`: the optimizer
step, the Python loop, a small model's kernel launches), which dominates tiny
shapes: the time model adds it to each step, and a row's efficiency is
taken on the rest of its step (`compute_flops`), so a measured row still gives
back its own speed. It is seeded per device kind, each with its source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config.run_config import ModelConfig
from engine.memory.estimate import flops_per_token
from engine.memory.gpus import GPU, find_gpu

MISMATCH = 1.0  # distance of one differing category: as far as a shape e (2.7x) times larger
WIKITEXT2_BPE_VOCAB = 47610  # the vocabulary every row below trained with (BPE on WikiText-2, target 50257)


@dataclass(frozen=True)
class SpeedRow:
    """One measured run."""

    device: str  # "NVIDIA H200", or "cpu" for the development machine
    d_model: int
    num_layers: int
    d_ff: int
    seq_len: int
    micro_batch: int
    compile: bool
    precision: str  # fp32 | bf16 | fp16
    tokens_per_s: float
    compile_s: float = 0.0  # the torch.compile warm-up of the run (0 for eager rows)
    arch: str = "gpt2"
    optimizer: str = "adamw"
    source: str = ""  # where the number is written down

    @property
    def kind(self) -> str:
        return "cpu" if self.device == "cpu" else "cuda"

    @property
    def flops_per_token(self) -> int:
        m = ModelConfig(d_model=self.d_model, num_layers=self.num_layers, d_ff=self.d_ff,
                        max_seq_len=self.seq_len, vocab_size=WIKITEXT2_BPE_VOCAB, arch=self.arch)
        return flops_per_token(m)

    @property
    def achieved_flops(self) -> float:
        """FLOP/s the run reached (6N + attention per token, as MFU counts it)."""
        return self.flops_per_token * self.tokens_per_s

    def describe(self) -> str:
        where = "the development CPU" if self.device == "cpu" else self.device
        return (f"{where}: d_model {self.d_model} x {self.num_layers} layers, {self.micro_batch} x {self.seq_len} "
                f"tokens, {self.precision}, {'compiled' if self.compile else 'eager'}, {self.arch}+{self.optimizer}")


@dataclass(frozen=True)
class StepOverhead:
    seconds: float  # per optimizer step
    source: str


OVERHEAD = {
    # bench/plan_accuracy.py --seed-overhead: d_model 32 x 1 layer, seq 32, micro-batches 1 and 32, the fastest
    # of 2 interleaved runs each, fitted to step = overhead + tokens x per-token time (20.1 and 487.6 ms a step;
    # at a load average of 6 the same fit gave 400 ms: oversubscribed threads make every small op slow)
    "cpu": StepOverhead(0.005, "bench/plan_accuracy.py --seed-overhead, development machine, 2026-12-06"),
    # the H200 quality rows, tiny gpt2+adamw compiled at micro-batch 8 (7.78 ms a step) and 64 (8.81 ms)
    "cuda": StepOverhead(0.00763, "fitted to the H200 quality rows (tiny, compiled, batch 8 and 64)"),
}

_H200_THROUGHPUT = "bench/README.md, gpu_check throughput, H200, 2026-11-26"
_H200_QUALITY = "bench/README.md, quality at equal budget, H200"
_CPU = "bench/README.md, development machine (2 shared threads), torch 2.13 CPU"
_CPU_COMPILED = ("bench/README.md, development machine: throughput.py --presets tiny --compile both, 2026-12-04, "
                 "load average 7.6")
_CPU_SEED = ("bench/README.md, development machine: plan_accuracy.py --seed-overhead, 2026-12-06, load average "
             "2, the fastest of 2 runs")
_TINY, _SMALL, _MEDIUM = (256, 4, 1024, 256), (512, 6, 2048, 512), (768, 12, 3072, 1024)

ROWS: tuple[SpeedRow, ...] = (
    # bench/throughput.py through gpu_check (the honest clock, evaluation off)
    SpeedRow("NVIDIA H200", *_MEDIUM, 16, True, "bf16", 436_096, 26.8, source=_H200_THROUGHPUT),
    SpeedRow("NVIDIA H200", *_SMALL, 16, True, "bf16", 678_674, 13.2, source=_H200_THROUGHPUT),
    SpeedRow("NVIDIA H200", *_TINY, 32, True, "bf16", 800_719, 11.6, source=_H200_THROUGHPUT),
    SpeedRow("NVIDIA H200", *_MEDIUM, 16, False, "bf16", 329_370, source=_H200_THROUGHPUT),
    SpeedRow("NVIDIA H200", *_SMALL, 16, False, "bf16", 548_215, source=_H200_THROUGHPUT),
    SpeedRow("NVIDIA H200", *_TINY, 32, False, "bf16", 743_545, source=_H200_THROUGHPUT),
    # bench/quality.py: the tiny shape's arch x optimizer rows (median logged window)
    SpeedRow("NVIDIA H200", *_TINY, 8, False, "bf16", 207_946, source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 8, False, "bf16", 159_633, optimizer="muon", source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 8, False, "bf16", 127_749, arch="modern", source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 8, False, "bf16", 127_684, arch="modern", optimizer="muon",
             source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 8, True, "bf16", 263_184, source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 8, True, "bf16", 182_309, arch="modern", optimizer="muon",
             source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 64, True, "bf16", 1_858_895, source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 64, True, "bf16", 1_891_769, arch="modern", source=_H200_QUALITY),
    SpeedRow("NVIDIA H200", *_TINY, 64, True, "bf16", 1_541_921, arch="modern", optimizer="muon",
             source=_H200_QUALITY),
    # bench/throughput.py on the development machine
    # --seed-overhead measured 378 tokens/s for this row on 2026-12-06 at a load average of 3-3.7: kept at the
    # quiet figure, which rises with the shape as the quiet small-shape rows below do (20, 42, 96, 99 GFLOP/s)
    SpeedRow("cpu", *_TINY, 8, False, "fp32", 1_043, source=_CPU),
    SpeedRow("cpu", *_SMALL, 4, False, "fp32", 382, source=_CPU),
    SpeedRow("cpu", *_TINY, 8, True, "fp32", 88, 103.5, source=_CPU_COMPILED),
    # bench/plan_accuracy.py --seed-overhead's larger point and a d_model 128 shape (the fastest of 2 runs of
    # 10 steps): small shapes, where the vocabulary's softmax and the loop's fixed costs weigh more
    SpeedRow("cpu", 32, 1, 64, 32, 32, False, "fp32", 2_100.2, source=_CPU_SEED),
    SpeedRow("cpu", 128, 2, 512, 128, 8, False, "fp32", 1_073.7, source=_CPU_SEED),
)


def peak_flops(gpu: GPU, precision: str, tf32: bool = True) -> float:
    """The catalogue GPU's dense peak FLOP/s for a precision.

    fp32 runs on TF32 tensor cores where the card has them (the runtime
    enables TF32), at half the bf16 rate; without `tf32`, plain FP32.
    """
    return gpu.peak_tflops(precision, tf32) * 1e12


def row_mfu(row: SpeedRow) -> float:
    """A GPU row's model FLOPs utilisation against its card's catalogue peak (its whole step, as measured)."""
    return row.achieved_flops / peak_flops(find_gpu(row.device), row.precision)


def compute_flops(row: SpeedRow) -> float:
    """FLOP/s of the row's step without its fixed overhead (OVERHEAD): the rate the time model scales.

    The overhead is taken out up to 90% of the step: a row faster than the seeded overhead says the
    overhead is smaller there, not that its compute took no time.
    """
    tokens = row.micro_batch * row.seq_len
    step_s = tokens / row.tokens_per_s
    return row.flops_per_token * tokens / max(step_s - OVERHEAD[row.kind].seconds, 0.1 * step_s)


def _differs(row: SpeedRow, compile: bool, arch: str, optimizer: str, precision: str) -> list[str]:
    half = precision in ("bf16", "fp16")
    return [name for name, same in (("compile", row.compile == compile), ("arch", row.arch == arch),
                                    ("optimizer", row.optimizer == optimizer),
                                    ("precision", (row.precision in ("bf16", "fp16")) == half)) if not same]


def nearest_row(kind: str, flops: int, micro_tokens: int, *, compile: bool, arch: str, optimizer: str,
                precision: str, rows: tuple[SpeedRow, ...] = ROWS) -> tuple[SpeedRow, list[str], float]:
    """(row, what differs, distance) of the measured row that stands in for this combination (module docstring)."""
    best: tuple[float, SpeedRow, list[str]] | None = None
    for row in rows:
        if row.kind != kind:
            continue
        differs = _differs(row, compile, arch, optimizer, precision)
        distance = (abs(math.log(flops / row.flops_per_token))
                    + abs(math.log(micro_tokens / (row.micro_batch * row.seq_len))) + MISMATCH * len(differs))
        if best is None or distance < best[0]:
            best = (distance, row, differs)
    if best is None:
        raise ValueError(f"no measured {kind} rows")
    return best[1], best[2], best[0]
