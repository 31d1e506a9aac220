"""Per-device measurements for the benches: peak memory (CUDA or process RSS) and the GPU's peak FLOP/s."""

from __future__ import annotations

import gc
import resource
import sys

import torch

from engine.errors import ConfigError
from engine.memory.gpus import GPU, find_gpu
from engine.speed.table import peak_flops as catalogue_peak


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the peak is the process's lifetime peak


def peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def release(device: torch.device) -> None:
    """Drop what an earlier run left behind: compiled graphs (and the models they hold), cached blocks."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def read_peak(device: torch.device) -> int:
    """torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on the CPU."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss()


def catalogue_gpu(device: torch.device) -> GPU | None:
    """The engine.memory.gpus entry of this CUDA device, looked up by name; None on the CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    try:
        return find_gpu(torch.cuda.get_device_name(device), torch.cuda.get_device_properties(device).total_memory)
    except ConfigError:
        return None


def peak_flops(gpu: GPU | None, precision: str, tf32: bool) -> float | None:
    """The catalogue GPU's dense peak FLOP/s for this precision (engine.speed's rule); None for no (or an unknown) GPU."""
    return None if gpu is None else catalogue_peak(gpu, precision, tf32)
