"""Smoke test of bench/throughput.py: the engine and reference rows come out, with positive rates.

Speed itself is measured by the benchmark, never asserted here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import make_corpus

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"


@pytest.fixture
def throughput(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_throughput", module)
    spec.loader.exec_module(module)
    return module


def test_throughput_bench_tiny_cpu(throughput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    corpus = make_corpus(tmp_path / "corpus")
    rows = throughput.run_bench(
        ["tiny"], device="cpu", steps=2, batch_size=2, seq_len=16, dataset=corpus, vocab_size=300,
        repeats=1, reference=["tiny"], threads=1, log=lambda _: None,  # 1 thread: steady on a busy machine
        loss_chunks=[0, 8],
    )
    assert [(r.loop, r.preset, r.loss_chunk) for r in rows] == [("engine", "tiny", 0), ("reference", "tiny", 0),
                                                                ("engine", "tiny", 8)]
    for r in rows:
        assert not r.error
        assert r.tokens_per_s > 0 and r.step_ms > 0 and r.peak_bytes > 0
        assert (r.device, r.batch, r.seq, r.mfu) == ("cpu", 2, 16, None)
    engine = rows[0]
    assert engine.precision == "fp32" and engine.compile is False
    assert engine.compile_s is not None and engine.compile_s >= 0
    assert engine.flops_per_token > 6 * engine.num_params * 0.9

    table = throughput.format_table(rows).splitlines()
    assert table[0].split() == ["loop", "preset", "device", "precision", "compile", "loss", "chunk", "batch", "seq",
                                "tokens/s", "MFU", "%", "step", "ms", "peak", "mem", "compile", "s"]
    assert len(table) == 5 and table[2].startswith("engine") and table[3].startswith("reference")
    assert "n/a" in table[2]  # no MFU on the CPU
    assert table[2].split()[5] == "off" and table[4].split()[5] == "8"

    lines = throughput.context_lines(rows, {"steps": 2})
    assert any(line.startswith("engine/reference, tiny on cpu") for line in lines)
    assert any(line.startswith("loss chunk 8 / plain loss, tiny compile=off: tokens/s") for line in lines)
    # The target line judges a medium/bf16/seq-1024 CUDA row against 450K tokens/s.
    medium = dict(preset="medium", seq=1024, precision="bf16", device="cuda:0 (NVIDIA H100 80GB HBM3)",
                  gpu="H100 80GB", compile=True)
    fast = dataclasses.replace(engine, tokens_per_s=500_000.0, **medium)
    slow = dataclasses.replace(engine, tokens_per_s=100_000.0, **medium)
    assert any("500,000 tok/s, meets the target" in line for line in throughput.context_lines([fast], {}))
    assert any("100,000 tok/s, below the target" in line for line in throughput.context_lines([slow], {}))
