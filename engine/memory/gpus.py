"""A catalogue of common training GPUs, tolerant name matching, and NVML detection.

The catalogue feeds the memory estimate's "does it fit" table and, through the
peak TFLOPs, the MFU figure. Pure Python: NVML is reached through pynvml
(nvidia-ml-py) and everything degrades to "no GPUs" when it is missing, so
this module never imports torch and is cheap to import from the dashboard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ConfigError

GiB = 1024**3


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    bf16: bool  # native bfloat16 (Ampere and newer); others train in fp16 with a scaler
    peak_bf16_tflops: float  # dense half-precision tensor peak (fp16 where bf16 is missing)
    peak_fp32_tflops: float  # plain FP32 (no TF32), what an fp32 run gets without allow_tf32

    def peak_tflops(self, precision: str, tf32: bool) -> float:
        """The dense peak an MFU figure of a run in `precision` ("fp32", "bf16", "fp16") is measured against.

        Half precision: the tensor cores' bf16/fp16 rate. fp32 with `tf32`
        (engine.train.runtime turns TF32 matmuls on for CUDA, Ampere and newer:
        Runtime.tf32): the TF32 tensor cores, half the bf16 rate; an fp32 figure
        against plain FP32 would read above 100%. Otherwise plain FP32.
        """
        if precision in ("bf16", "fp16"):
            return self.peak_bf16_tflops
        if tf32 and self.bf16:
            return self.peak_bf16_tflops / 2
        return self.peak_fp32_tflops


# Capacities are the marketed size read as GiB (a "24 GB" card = 24 * 1024**3
# bytes), which is what the memory chips hold; the driver keeps a few hundred
# MiB of it, which the verdict's "tight" band absorbs. TFLOPs are dense (no 2:4
# sparsity) and, for GeForce cards, with fp32 accumulation (what PyTorch's
# matmuls use), which is half the marketed fp16-accumulate figure.
GPU_CATALOGUE: list[GPU] = [
    GPU("RTX 3060 8GB", 8 * GiB, True, 25.6, 12.7),
    GPU("RTX 3060 12GB", 12 * GiB, True, 25.6, 12.7),
    GPU("RTX 4070 12GB", 12 * GiB, True, 58.3, 29.1),
    GPU("RTX 4080 16GB", 16 * GiB, True, 97.5, 48.7),
    GPU("RTX A4000 16GB", 16 * GiB, True, 76.7, 19.2),
    GPU("T4 16GB", 16 * GiB, False, 65.0, 8.1),
    GPU("V100 16GB", 16 * GiB, False, 125.0, 15.7),
    GPU("V100 32GB", 32 * GiB, False, 125.0, 15.7),
    GPU("RTX 3090 24GB", 24 * GiB, True, 71.0, 35.6),
    GPU("RTX 4090 24GB", 24 * GiB, True, 165.2, 82.6),
    GPU("RTX A5000 24GB", 24 * GiB, True, 111.1, 27.8),
    GPU("A10 24GB", 24 * GiB, True, 125.0, 31.2),
    GPU("L4 24GB", 24 * GiB, True, 121.0, 30.3),
    GPU("RTX 5090 32GB", 32 * GiB, True, 209.5, 104.8),
    GPU("RTX A6000 48GB", 48 * GiB, True, 154.8, 38.7),
    GPU("L40S 48GB", 48 * GiB, True, 362.1, 91.6),
    GPU("A100 40GB", 40 * GiB, True, 312.0, 19.5),
    GPU("A100 80GB", 80 * GiB, True, 312.0, 19.5),
    GPU("H100 PCIe 80GB", 80 * GiB, True, 756.0, 51.2),
    GPU("H100 80GB", 80 * GiB, True, 989.4, 66.9),  # SXM, "NVIDIA H100 80GB HBM3"
    GPU("H100 NVL 94GB", 94 * GiB, True, 835.5, 60.0),  # "NVIDIA H100 NVL": PCIe card, lower clocks than SXM
    GPU("H800 80GB", 80 * GiB, True, 989.4, 66.9),  # SXM; export variant of the H100, same compute
    GPU("H800 PCIe 80GB", 80 * GiB, True, 756.0, 51.2),
    GPU("GH200 96GB", 96 * GiB, True, 989.4, 66.9),  # the Hopper GPU of a Grace Hopper superchip
    GPU("GH200 144GB", 144 * GiB, True, 989.4, 66.9),
    GPU("H200 141GB", 141 * GiB, True, 989.4, 66.9),
]

# Words that say nothing about which card it is.
_NOISE = {"nvidia", "geforce", "tesla", "rtx", "gtx", "quadro", "hbm3", "hbm3e", "hbm2e", "sxm", "sxm4",
          "sxm5", "gddr6", "gddr6x", "laptop", "gpu"}
_MEMORY = re.compile(r"^(\d+)(?:gb|gib|g)$")


def _tokens(text: str) -> list[str]:
    """Lower-case words and numbers: "NVIDIA A100-SXM4-80GB" -> ["nvidia", "a100", "sxm4", "80gb"]."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out: list[str] = []
    for i, w in enumerate(words):
        # "80 GB" written apart reads as one memory token
        if w in ("gb", "gib") and out and out[-1].isdigit():
            out[-1] += "gb"
            continue
        # "rtx4080" -> "4080"
        for prefix in ("rtx", "gtx"):
            if w.startswith(prefix) and len(w) > len(prefix) and any(c.isdigit() for c in w):
                w = w[len(prefix):]
        out.append(w)
    return out


def _memory_gib(tokens: list[str]) -> int | None:
    for t in tokens:
        m = _MEMORY.match(t)
        if m:
            return int(m.group(1))
    return None


def _parts(gpu: GPU) -> tuple[str, set[str], int]:
    """(model key, variant words, memory in GiB) of a catalogue entry."""
    tokens = [t for t in _tokens(gpu.name) if t not in _NOISE]
    words = [t for t in tokens if not _MEMORY.match(t)]
    return words[0], set(words[1:]), gpu.memory_bytes // GiB


def find_gpu(name: str, memory_bytes: int | None = None) -> GPU:
    """The catalogue entry `name` means: "4080", "rtx 4080", "NVIDIA H100 80GB HBM3" -> H100 80GB.

    Matching is on the model number ("4080", "a100", "t4"); the memory size in
    the name (or `memory_bytes`, e.g. from NVML) picks between variants, and
    without either the first (smallest) variant wins, the safe guess for a
    memory estimate.
    """
    tokens = [t for t in _tokens(name) if t not in _NOISE]
    named_gib = _memory_gib(tokens)
    # The card's own memory (NVML, torch) beats a size in the name: "NVIDIA GH200
    # 480GB" names the superchip's CPU + GPU memory, the GPU has 96 GB.
    want_gib = round(memory_bytes / GiB) if memory_bytes else named_gib
    best: tuple[float, int] | None = None
    for i, gpu in enumerate(GPU_CATALOGUE):
        key, variants, gib = _parts(gpu)
        if key not in tokens:
            continue
        score = sum(1.0 if v in tokens else -1.0 for v in variants)
        if want_gib is not None:
            # NVML reports a little less than the marketed size: allow 10%.
            if abs(gib - want_gib) <= 0.1 * gib:
                score += 2.0
            elif named_gib is not None and not memory_bytes:
                continue  # the name says another size: a different card
        if best is None or score > best[0]:
            best = (score, i)
    if best is None:
        known = ", ".join(g.name for g in GPU_CATALOGUE)
        raise ConfigError(f"unknown GPU {name!r}; known GPUs: {known}")
    return GPU_CATALOGUE[best[1]]


@dataclass(frozen=True)
class DetectedGPU:
    index: int  # NVML index (physical order, not CUDA_VISIBLE_DEVICES order)
    name: str
    total_bytes: int
    used_bytes: int
    utilization: float  # percent, -1 when NVML cannot say



def machine_ram() -> int:
    """This machine's RAM in bytes: what a CPU run's memory is judged against."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # psutil is a dependency; without it, POSIX's page count
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_flops_of(device_name: str, precision: str, tf32: bool) -> float | None:
    """Dense peak FLOP/s of the catalogue card a CUDA device name means; None for "" (the CPU) or an unknown card."""
    if not device_name:
        return None
    try:
        return find_gpu(device_name).peak_tflops(precision, tf32) * 1e12
    except ConfigError:
        return None


def detect_gpus() -> list[DetectedGPU]:
    """The GPUs NVML sees, with their current memory use; [] without NVML or a driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no library: a CPU machine
        return []
    found: list[DetectedGPU] = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):  # older bindings return bytes
                name = name.decode(errors="replace")
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # MIG slices and some vGPUs do not report it
                util = -1.0
            found.append(DetectedGPU(i, name, int(mem.total), int(mem.used), util))
    except Exception:
        return found
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return found
