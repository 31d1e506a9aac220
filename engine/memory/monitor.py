"""Live memory sampling on a daemon thread, off the training hot path.

On a GPU: NVML's used/total/utilisation for the training device plus this
process's torch.cuda allocator figures (allocated, reserved, peak). Without a
GPU, or when NVML fails: the process's resident memory (peak from getrusage)
against the machine's RAM, labelled so the UI can say it is not GPU memory.
Sampling never raises into the caller or the trainer; a failing source
degrades to the next one (NVML -> torch.cuda alone -> process memory).
torch is imported only for CUDA devices, where the trainer has loaded it.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

from engine.events import MemorySample

CPU_LABEL = "process memory (no GPU)"


def _peak_rss() -> int:
    """This process's peak resident set size; 0 where nothing says.

    Linux: VmHWM, the peak of this process's own memory. (Its ru_maxrss
    keeps the peak of the process it was started from across fork + exec:
    a trainer launched from a large Python process would report that one's.)
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no procfs: macOS, Windows
        pass
    try:
        import resource

        # ru_maxrss is KiB on Linux, bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except Exception:  # Windows has no resource module
        return 0


def _rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process."""
    peak = _peak_rss()
    try:
        import psutil

        rss = int(psutil.Process().memory_info().rss)
    except Exception:
        try:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except Exception:
            rss = peak
    return rss, max(peak, rss)


def _system_memory() -> tuple[int, int]:
    """(total, available) RAM of the machine."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception:
        try:
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            return int(pages), 0
        except Exception:
            return 0, 0


def _cuda_index(device: str) -> int | None:
    """The CUDA ordinal `device` names, or None for a non-CUDA device."""
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        return int(index) if index.isdigit() else 0
    return None


class MemoryMonitor:
    """Emits a MemorySample every `interval_s` seconds from a daemon thread."""

    def __init__(self, emit: Callable[[MemorySample], None], device: str = "cpu", interval_s: float = 2.0) -> None:
        self.emit = emit
        self.device = device
        self.interval_s = max(0.05, float(interval_s))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None  # the pynvml module once initialised, False after a failure
        self._nvml_handle: Any = None
        self._label = ""
        self._peak_rss = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="memory-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, 2 * self.interval_s))
        if self._nvml:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
        self._nvml = self._nvml_handle = None

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.sample()
            try:
                self.emit(sample)
            except Exception:  # a UI that went away must not kill the thread noisily
                pass
            if self._stop.wait(self.interval_s):
                break

    # ------------------------------------------------------------------ sampling

    def sample(self) -> MemorySample:
        """One reading; never raises."""
        try:
            index = self._device_index()
            if index is not None:
                got = self._cuda_sample(index)
                if got is not None:
                    return got
        except Exception:
            pass
        return self._cpu_sample()

    def _device_index(self) -> int | None:
        if self.device == "auto":  # the trainer picks CUDA when it has one
            self._init_nvml()
            if self._nvml and self._nvml.nvmlDeviceGetCount() > 0:
                return 0
            return None
        return _cuda_index(self.device)

    def _init_nvml(self) -> None:
        if self._nvml is not None:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # no driver or no library: remember, do not retry every sample
            self._nvml = False

    def _cuda_sample(self, index: int) -> MemorySample | None:
        torch = _torch_cuda()
        allocated = reserved = peak = 0
        if torch is not None:
            try:
                allocated = torch.cuda.memory_allocated(index)
                reserved = torch.cuda.memory_reserved(index)
                peak = torch.cuda.max_memory_allocated(index)
            except Exception:
                torch = None
        self._init_nvml()
        if self._nvml:
            try:
                handle = self._handle(index, torch)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                try:
                    util = float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                except Exception:
                    util = -1.0
                return MemorySample(kind="cuda", used_bytes=int(mem.used), total_bytes=int(mem.total),
                                    allocated_bytes=allocated, reserved_bytes=reserved, peak_bytes=peak,
                                    utilization=util, label=self._label)
            except Exception:
                pass
        if torch is not None:  # NVML failed but the allocator answers: device-wide figures from CUDA
            try:
                free, total = torch.cuda.mem_get_info(index)
                return MemorySample(kind="cuda", used_bytes=int(total - free), total_bytes=int(total),
                                    allocated_bytes=allocated, reserved_bytes=reserved, peak_bytes=peak,
                                    label=f"{torch.cuda.get_device_name(index)} (no NVML)")
            except Exception:
                pass
        return None

    def _handle(self, index: int, torch: Any) -> Any:
        """NVML handle of CUDA device `index`, matched by UUID (CUDA_VISIBLE_DEVICES renumbers)."""
        if self._nvml_handle is not None:
            return self._nvml_handle
        nvml = self._nvml
        handle = None
        if torch is not None:
            try:
                uuid = str(torch.cuda.get_device_properties(index).uuid)
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except Exception:
                handle = None
        if handle is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            physical = int(ids[index]) if index < len(ids) and ids[index].isdigit() else index
            handle = nvml.nvmlDeviceGetHandleByIndex(physical)
        name = nvml.nvmlDeviceGetName(handle)
        self._label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        self._nvml_handle = handle
        return handle

    def _cpu_sample(self) -> MemorySample:
        try:
            rss, peak = _rss_bytes()
            self._peak_rss = max(self._peak_rss, peak)
            total, _available = _system_memory()
            return MemorySample(kind="cpu", used_bytes=rss, total_bytes=total, peak_bytes=self._peak_rss,
                                label=CPU_LABEL)
        except Exception:
            return MemorySample(kind="cpu", used_bytes=0, total_bytes=0, label=CPU_LABEL)


def _torch_cuda() -> Any:
    """torch, if CUDA works in this process; imported lazily (the trainer has usually loaded it)."""
    try:
        import torch

        return torch if torch.cuda.is_available() else None
    except Exception:
        return None
