"""The quality guide beside the time (engine.speed.quality): tokens per parameter, epochs, references, and a
perplexity only for a run this project measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.loading import build_config, write_toml
from engine.config.plan import DeviceInfo, plan_run
from engine.memory.estimate import estimate_memory
from engine.speed.quality import REPEAT_EPOCHS, quality_guide
from tui_lm.commands import estimate

TRAIN_TOKENS = 2_224_629  # WikiText-2's training split in its BPE tokens
# bench/quality.py's issue-budget row (bench/README.md): tiny, 300 steps x 8 x 256, lr 1e-3, warmup 30
QUALITY_RUN = {"model": {"d_model": 256, "num_layers": 4, "num_heads": 4, "d_ff": 1024, "max_seq_len": 256,
                         "dropout": 0.1},
               "train": {"batch_size": 8, "max_steps": 300, "warmup_steps": 30, "lr": 1e-3},
               "data": {"dataset": "wikitext-2"}}


def _guide(overrides: dict):
    cfg = build_config(None, None, overrides)
    plan = plan_run(cfg, device=DeviceInfo("cpu"), train_tokens=TRAIN_TOKENS)
    return quality_guide(plan, estimate_memory(cfg, plan=plan).num_params, TRAIN_TOKENS), plan


def test_tokens_per_parameter_and_epochs_of_the_planned_run() -> None:
    g, plan = _guide({"train": {"batch_size": 8, "max_steps": 1000}})
    assert g.tokens == 1000 * 8 * plan.seq_len
    assert g.tokens_per_param == pytest.approx(g.tokens / g.params)
    assert g.epochs == pytest.approx(g.tokens / TRAIN_TOKENS) and g.epochs < REPEAT_EPOCHS
    assert g.repeat_warning == "" and "fewer than compute-optimal" in g.data_verdict
    # The default 20 epochs repeat the data past the threshold: warned.
    many, _ = _guide({"train": {"epochs": 20}})
    assert many.epochs == pytest.approx(20, rel=0.01)
    assert "overfitting is likely (Muennighoff et al. 2023)" in many.repeat_warning
    # Unknown split size: no epochs, no warning.
    cfg = build_config(None, None, {"train": {"epochs": 20}})
    plan = plan_run(cfg, device=DeviceInfo("cpu"))
    unknown = quality_guide(plan, 1, None)
    assert unknown.epochs is None and unknown.tokens_per_param is None and not unknown.repeat_warning


def test_a_perplexity_only_for_the_very_run_this_project_measured() -> None:
    g, _ = _guide(QUALITY_RUN)
    assert g.measured is not None and g.measured.word_ppl == 588.1 and g.measured.seeds == 2
    muon, _ = _guide({**QUALITY_RUN, "train": {**QUALITY_RUN["train"], "optimizer": "muon"}})
    assert muon.measured is not None and muon.measured.word_ppl == 536.8
    # One setting away from it (more steps, another LR, another shape): none.
    for train in ({"max_steps": 600}, {"lr": 3e-4}):
        other, _ = _guide({**QUALITY_RUN, "train": {**QUALITY_RUN["train"], **train}})
        assert other.measured is None
    other, _ = _guide({**QUALITY_RUN, "model": {**QUALITY_RUN["model"], "num_layers": 6}})
    assert other.measured is None


def _estimate_json(capsys, *argv: str) -> dict:
    assert estimate.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_prints_and_carries_the_quality_guide(capsys, tmp_path: Path) -> None:
    out = _estimate_json(capsys, "--preset", "tiny", "--max_steps", "1000", "--batch_size", "8")
    q = out["quality"]
    assert q["tokens"] == 1000 * 8 * 256 and q["params"] == out["num_params"]
    assert q["tokens_per_param"] == pytest.approx(q["tokens"] / q["params"])
    assert q["compute_optimal_tokens_per_param"] == 20
    assert q["expected_word_perplexity"] is None  # nothing measured like it
    assert [(r["model"], r["params"], r["dataset"], r["test_word_ppl"]) for r in q["references"]] == [
        ("AWD-LSTM", 33e6, "WikiText-2", 65.8), ("linear Transformer (fast weights)", 44e6, "WikiText-103", 34.1),
        ("GPT-2 small, zero-shot", 117e6, "WikiText-103", 37.5), ("Transformer-XL", 151e6, "WikiText-103", 24.0)]
    assert "not a prediction" in q["references_note"]
    # The run bench/quality.py measured (lr and warmup are not flags of estimate: a run file).
    path = tmp_path / "q.toml"
    write_toml(build_config(None, None, QUALITY_RUN), path)
    q = _estimate_json(capsys, "--config", str(path))["quality"]
    assert q["expected_word_perplexity"]["valid_word_ppl"] == 588.1
    assert "bench/quality.py" in q["expected_word_perplexity"]["source"]
    assert estimate.main(["--config", str(path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "expected validation word perplexity ~588: measured by this project for exactly this run" in printed
    assert "65.8 33M on WikiText-2 AWD-LSTM (Merity et al. 2017)" in printed
    assert "tokens per parameter (compute-optimal ~20, Hoffmann et al. 2022)" in printed
