"""engine.memory.monitor on a machine without a GPU: process memory, the sampling thread, NVML failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import engine.memory.monitor as monitor_mod
from engine.events import MemorySample
from engine.memory.monitor import CPU_LABEL, MemoryMonitor


@pytest.fixture
def no_cuda(monkeypatch):
    """Make the CUDA path fall through even where a GPU exists, so these tests mean the same everywhere."""
    monkeypatch.setattr(monitor_mod, "_torch_cuda", lambda: None)


def test_cpu_sample_reports_process_and_system_memory():
    sample = MemoryMonitor(lambda e: None, device="cpu").sample()
    assert isinstance(sample, MemorySample)
    assert sample.kind == "cpu" and sample.label == CPU_LABEL
    assert sample.used_bytes > 10 * 2**20  # a Python process with pytest loaded
    assert sample.total_bytes > sample.used_bytes
    assert sample.peak_bytes >= sample.used_bytes
    assert sample.utilization == -1.0


def test_start_emits_within_a_second_and_stop_ends_the_thread():
    got: list[MemorySample] = []
    first = threading.Event()

    def emit(event):
        got.append(event)
        first.set()

    mon = MemoryMonitor(emit, device="cpu", interval_s=0.05)
    mon.start()
    try:
        assert first.wait(1.0)
        time.sleep(0.2)
    finally:
        mon.stop()
    assert len(got) >= 2 and all(e.kind == "cpu" for e in got)
    assert mon._thread is None
    count = len(got)
    time.sleep(0.15)
    assert len(got) == count  # nothing after stop()


def test_sampling_thread_survives_a_failing_sink():
    calls = []

    def emit(event):
        calls.append(event)
        raise RuntimeError("the UI went away")

    mon = MemoryMonitor(emit, device="cpu", interval_s=0.02)
    mon.start()
    time.sleep(0.3)
    mon.stop()
    assert len(calls) >= 3


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "auto"])
def test_nvml_failure_degrades_to_cpu_figures(monkeypatch, no_cuda, device):
    import pynvml

    def broken():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    mon = MemoryMonitor(lambda e: None, device=device)
    sample = mon.sample()
    assert sample.kind == "cpu" and sample.used_bytes > 0 and sample.label == CPU_LABEL
    assert mon.sample().kind == "cpu"  # and keeps working without retrying NVML each time
    mon.stop()


def test_sample_never_raises_even_without_psutil(monkeypatch):
    import psutil

    def broken(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr(psutil, "Process", broken)
    monkeypatch.setattr(psutil, "virtual_memory", broken)
    sample = MemoryMonitor(lambda e: None, device="cpu").sample()
    assert sample.kind == "cpu" and sample.used_bytes > 0 and sample.total_bytes > 0


def test_cpu_device_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; from engine.memory.monitor import MemoryMonitor; "
            "MemoryMonitor(lambda e: None, 'cpu').sample(); print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
