"""MFU: the device's peak from the GPU catalogue, in the step events, the headless line and TensorBoard.

There is no GPU here: the catalogue's peaks are checked as numbers, and a run on
the CPU is given a peak (as a CUDA device would get one) to follow the figure
from the honest clock's tokens/s to every place it is shown.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine import events as ev
from engine.memory.estimate import estimate_memory
from engine.memory.gpus import peak_flops_of
from engine.train.trainer import Trainer
from tests.conftest import tiny_config
from tui_lm.headless import format_event


@pytest.mark.parametrize("name,precision,tf32,tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", True, 989.4),
    ("NVIDIA H100 80GB HBM3", "fp32", True, 494.7),  # TF32 tensor cores: half the bf16 rate
    ("NVIDIA H100 80GB HBM3", "fp32", False, 66.9),
    ("Tesla T4", "fp16", True, 65.0),
    ("Tesla T4", "fp32", True, 8.1),  # Turing has no TF32: plain fp32
])
def test_peak_follows_the_precision_the_matmuls_run_in(name: str, precision: str, tf32: bool,
                                                       tflops: float) -> None:
    assert peak_flops_of(name, precision, tf32) == pytest.approx(tflops * 1e12)


def test_no_peak_on_the_cpu_or_an_unknown_card() -> None:
    assert peak_flops_of("", "fp32", False) is None
    assert peak_flops_of("Matrox Millennium", "bf16", True) is None


def test_cpu_runs_show_no_mfu(corpus: Path, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    Trainer(tiny_config(corpus, tmp_path, max_steps=2, log_interval=1, eval_interval=0), seen.append).run()
    steps = [e for e in seen if isinstance(e, ev.StepMetrics)]
    assert steps and all(e.mfu is None for e in steps)
    assert "MFU" not in format_event(steps[-1])


def test_mfu_is_model_flops_over_the_peak_everywhere_it_is_shown(corpus: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    peak = 2e9  # FLOP/s this "device" could do; the CPU's tiny run reaches a measurable share of it
    monkeypatch.setattr("engine.train.trainer.peak_flops_of", lambda name, precision, tf32: peak)
    seen: list[ev.Event] = []
    cfg = tiny_config(corpus, tmp_path, max_steps=4, log_interval=2, eval_interval=0)
    Trainer(cfg, seen.append).run()
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    model = dataclasses.replace(cfg.model, vocab_size=started.vocab_size)  # the tokenizer's real vocabulary
    flops = estimate_memory(dataclasses.replace(cfg, model=model), device="cpu").flops_per_token
    steps = [e for e in seen if isinstance(e, ev.StepMetrics)]
    assert [e.step for e in steps] == [2, 4]
    for e in steps:
        assert e.mfu == pytest.approx(flops * e.tokens_per_s / peak)
        assert f"MFU {e.mfu:.1%}" in format_event(e)
    tb = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    tb.Reload()
    assert [s.value for s in tb.Scalars("train/mfu")] == pytest.approx([e.mfu for e in steps])
