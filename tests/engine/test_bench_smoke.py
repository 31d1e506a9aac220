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
        variants=[{}, {"loss_chunk": 8}, {"attention_backend": "math"}],
    )
    assert [(r.loop, r.preset, r.variant if r.loop == "engine" else "") for r in rows] == [
        ("engine", "tiny", "plain"), ("reference", "tiny", ""), ("engine", "tiny", "loss_chunk=8"),
        ("engine", "tiny", "attention_backend=math")]
    assert rows[3].levers["attention_backend"] == "math"  # as the run resolved it
    assert (rows[1].precision, rows[1].compile) == ("fp32", False)  # the reference at the engine's settings
    for r in rows:
        assert not r.error
        assert r.tokens_per_s > 0 and r.step_ms > 0 and r.peak_bytes > 0
        assert (r.device, r.batch, r.seq, r.mfu) == ("cpu", 2, 16, None)
    engine = rows[0]
    assert engine.precision == "fp32" and engine.compile is False
    assert engine.compile_s is not None and engine.compile_s >= 0
    assert engine.flops_per_token > 6 * engine.num_params * 0.9

    table = throughput.format_table(rows).splitlines()
    assert table[0].split() == ["loop", "preset", "device", "precision", "compile", "variant", "batch", "seq",
                                "tokens/s", "MFU", "%", "step", "ms", "peak", "mem", "compile", "s"]
    assert len(table) == 6 and table[2].startswith("engine") and table[3].startswith("reference")
    assert "n/a" in table[2]  # no MFU on the CPU
    assert table[2].split()[5] == "plain" and table[4].split()[5] == "loss_chunk=8"

    lines = throughput.context_lines(rows, {"steps": 2})
    assert any(line.startswith("engine/reference, tiny on cpu (fp32 vs fp32 eager)") for line in lines)
    assert any(line.startswith("loss_chunk=8 / plain, tiny compile=off: tokens/s") for line in lines)
    assert any(line.startswith("attention_backend=math / plain, tiny compile=off: tokens/s") for line in lines)
    # The target line judges a medium/bf16/seq-1024 CUDA row against 450K tokens/s.
    medium = dict(preset="medium", seq=1024, precision="bf16", device="cuda:0 (NVIDIA H100 80GB HBM3)",
                  gpu="H100 80GB", compile=True)
    fast = dataclasses.replace(engine, tokens_per_s=500_000.0, **medium)
    slow = dataclasses.replace(engine, tokens_per_s=100_000.0, **medium)
    assert throughput.variant_label({"fused_loss": "liger"}, {"fused_loss": "off"}) == "fused_loss=liger (ran off)"
    assert throughput.variant_label({"fused_loss": "liger"}, {"fused_loss": "liger"}) == "fused_loss=liger"
    assert any("500,000 tok/s, meets the target" in line for line in throughput.context_lines([fast], {}))
    assert any("100,000 tok/s, below the target" in line for line in throughput.context_lines([slow], {}))


def test_reference_runs_as_nanogpt_compiled_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast and torch.compile (aot_eager here: inductor's CPU build is not what is checked)."""
    import torch

    monkeypatch.syspath_prepend(str(BENCH.parent))
    from reference_gpt import RefConfig, measure_reference

    compiled = []
    real = torch.compile

    def compile_(model, **kwargs):
        compiled.append(kwargs)
        return real(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_)
    cfg = RefConfig(vocab_size=300, d_model=32, num_heads=2, num_layers=2, d_ff=64, seq_len=16, dropout=0.0)
    r = measure_reference(cfg, batch_size=2, steps=2, warmup=1, precision="bf16", compile=True)
    assert compiled == [{}] and (r.precision, r.compiled) == ("bf16", True)
    assert r.tokens_per_s > 0 and 4.0 < r.final_loss < 7.0  # about ln(300) = 5.7 at the start


def test_throughput_lever_flag_is_checked(throughput, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        throughput.main(["--device", "cpu", "--lever", "fused_loss=fast"])
    assert e.value.code == 2
    assert "--lever 'fused_loss=fast': expected KEY=VALUE with KEY one of fused_loss, attention_backend" in \
        capsys.readouterr().err


def test_plan_accuracy_bench_tiny_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/plan_accuracy.py: predicted (model, --measure) and real seconds per step, and a budgeted run."""
    spec = importlib.util.spec_from_file_location("bench_plan_accuracy", BENCH.parent / "plan_accuracy.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_plan_accuracy", bench)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    corpus = make_corpus(tmp_path / "corpus")
    shape = bench._shape(16, 1, 2, 32, 16)
    rows = bench.run_bench([("d16", shape, {"batch_size": 2})], dataset=corpus, seconds=0, log=lambda _: None)
    (row,) = rows
    assert row.label == "d16" and row.tokens_per_step == 32
    assert row.model_s > 0 and row.measure_s > 0 and row.real_s > 0 and "development CPU" in row.source
    table = bench.format_table(rows).splitlines()
    assert table[0].split() == ["config", "tokens/step", "real", "s", "model", "s", "error", "measure", "s", "error"]
    assert table[1].startswith("d16") and table[2].startswith("median |error|: model")
    budget, wall, steps = bench.budget_run("2s", corpus, shape, {"batch_size": 2})
    assert budget == 2 and wall > 0 and steps >= bench.WARMUP
