"""Smoke test of bench/quality.py: every row trains, is scored and lands in the table and the JSON.

The quality numbers themselves are measured by the benchmark, never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quality.py"


def test_quality_bench_smoke(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    assert spec and spec.loader
    quality = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_quality", quality)
    spec.loader.exec_module(quality)
    out = tmp_path / "q.json"
    quality.main(["--steps", "2", "--seeds", "1", "--rows", "gpt2+adamw,modern+muon+untied", "--seq-len", "16",
                  "--batch-size", "4", "--eval-batches", "1", "--log-interval", "1", "--device", "cpu",
                  "--threads", "1", "--dataset", str(corpus), "--json", str(out)])
    table = capsys.readouterr().out
    assert "| gpt2+adamw |" in table and "| modern+muon+untied |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["gpt2+adamw", "modern+muon+untied"]
    for r in rows:
        assert r["valid_word_ppl_mean"] > 1 and r["tokens_per_s_mean"] > 0 and r["peak_bytes_mean"] > 0
    # The untied head adds a second vocabulary x d_model matrix.
    assert rows[1]["params"] > rows[0]["params"]
