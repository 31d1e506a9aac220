"""Shared fixtures: a small generated corpus and a tiny config that trains in seconds on a CPU."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.config.loading import build_config
from engine.config.run_config import RunConfig


WORDS = ("the cat dog sat on a mat and ran to house tree river city king queen war peace "
         "history of music film game north south east west old new great small").split()


def make_corpus(folder: Path, lines: int = 400, seed: int = 0) -> Path:
    """train/valid/test.txt of generated sentences, WikiText-style (blank lines between paragraphs)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", lines), ("valid", lines // 8), ("test", lines // 8)):
        rows = []
        for i in range(n):
            rows.append("" if i % 5 == 4 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + " .")
        (folder / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    return make_corpus(tmp_path / "corpus")


def tiny_overrides(corpus: Path, out: Path, **train) -> dict:
    return {
        "model": {"d_model": 32, "num_heads": 2, "num_layers": 2, "d_ff": 64, "max_seq_len": 16, "dropout": 0.1},
        "data": {"dataset": str(corpus), "vocab_size": 300},
        "train": {"batch_size": 4, "max_steps": 12, "warmup_steps": 3, "lr": 3e-3, "log_interval": 1,
                  "eval_interval": 4, "eval_batches": 2, "save_interval": 0, "sample_tokens": 0,
                  "device": "cpu", **train},
        "run": {"out_dir": str(out), "run_name": "r"},
    }


def tiny_config(corpus: Path, out: Path, **train) -> RunConfig:
    return build_config("tiny", None, tiny_overrides(corpus, out, **train))


def stopped_run(corpus: Path, out: Path, at: int = 6, **train) -> Path:
    """A tiny run stopped by the user at step `at` (a checkpoint written): its run folder."""
    from engine import events as ev
    from engine.control import TrainingControl
    from engine.train.trainer import Trainer

    control = TrainingControl()

    def sink(e: ev.Event) -> None:
        if isinstance(e, ev.StepMetrics) and e.step == at:
            control.stop()

    result = Trainer(tiny_config(corpus, out, **train), sink, control).run()
    assert isinstance(result, ev.Finished) and result.stopped and result.step == at
    return out / "r"
