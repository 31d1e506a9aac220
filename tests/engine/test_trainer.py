"""Real tiny training runs on the CPU: exact resumption, control, and the run folder on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine import events as ev
from engine.config.loading import build_config, read_toml
from engine.control import TrainingControl
from engine.runs.checkpoints import load_checkpoint
from engine.train.trainer import Trainer
from tests.conftest import stopped_run, tiny_config


def losses(events: list[ev.Event]) -> list[float]:
    return [e.loss for e in events if isinstance(e, ev.StepMetrics)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "models" / "model.safetensors")


@pytest.mark.parametrize("arch,optimizer", [("gpt2", "adamw"), ("modern", "muon")])
def test_resumed_run_is_bit_identical_to_uninterrupted(corpus: Path, tmp_path: Path, arch: str,
                                                       optimizer: str) -> None:
    def config(out: Path):
        cfg = tiny_config(corpus, out, optimizer=optimizer)
        cfg.model.arch = arch
        return cfg

    straight: list[ev.Event] = []
    done = Trainer(config(tmp_path / "a"), straight.append).run()
    assert isinstance(done, ev.Finished) and not done.stopped

    first: list[ev.Event] = []
    control = TrainingControl()

    def stop_at_6(e: ev.Event) -> None:
        first.append(e)
        if isinstance(e, ev.StepMetrics) and e.step == 6:
            control.stop()

    stopped = Trainer(config(tmp_path / "b"), stop_at_6, control).run()
    assert isinstance(stopped, ev.Finished) and stopped.stopped and stopped.step == 6
    run_dir = tmp_path / "b" / "r"
    assert not (run_dir / "models").exists()
    assert json.loads((run_dir / "state.json").read_text())["status"] == "stopped"

    second: list[ev.Event] = []
    cfg = build_config(None, run_dir / "run.toml")
    resumed = Trainer(cfg, second.append, run_dir=run_dir, resume=True).run()
    assert isinstance(resumed, ev.Finished) and not resumed.stopped
    started = next(e for e in second if isinstance(e, ev.RunStarted))
    assert started.start_step == 6 and started.resumed_from.endswith("step_0000006.pt")

    assert losses(first) + losses(second) == losses(straight)  # bit-identical, dropout included
    a, b = weights(tmp_path / "a" / "r"), weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_chunked_loss_trains_the_same_model_and_can_be_switched_on_resume(corpus: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.model.gpt

    calls: list[int] = []
    chunked_loss = engine.model.gpt.chunked_linear_cross_entropy
    monkeypatch.setattr(engine.model.gpt, "chunked_linear_cross_entropy",
                        lambda h, w, t, chunk, *scale: calls.append(chunk) or chunked_loss(h, w, t, chunk, *scale))

    def run(out: Path, **train) -> list[ev.Event]:
        seen: list[ev.Event] = []
        assert isinstance(Trainer(tiny_config(corpus, out, **train), seen.append).run(), ev.Finished)
        return seen

    def valid(seen: list[ev.Event]) -> list[float]:
        return [e.loss for e in seen if isinstance(e, ev.EvalResult)]

    plain, chunked = run(tmp_path / "a"), run(tmp_path / "b", loss_chunk=24)  # 64 tokens a step: 24 + 24 + 16
    assert calls and set(calls) == {24}  # training and evaluation
    assert any(isinstance(e, ev.Log) and "loss computed in chunks of 24 tokens" in e.message for e in chunked)
    assert losses(chunked) == pytest.approx(losses(plain), rel=1e-4)
    assert valid(chunked) == pytest.approx(valid(plain), rel=1e-4) and len(valid(plain)) >= 3
    a, b = weights(tmp_path / "a" / "r"), weights(tmp_path / "b" / "r")
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)

    # How the loss is computed may change when a run is resumed (a memory fix); the run goes on the same.
    run_dir = stopped_run(corpus, tmp_path / "c")
    cfg = build_config(None, run_dir / "run.toml", {"train": {"loss_chunk": 16}})
    second: list[ev.Event] = []
    assert isinstance(Trainer(cfg, second.append, run_dir=run_dir, resume=True).run(), ev.Finished)
    assert read_toml(run_dir / "run.toml")["train"]["loss_chunk"] == 16
    assert losses(second) == pytest.approx(losses(plain)[6:], rel=1e-4)


def test_pause_writes_checkpoint_then_waits_for_resume(corpus: Path, tmp_path: Path) -> None:
    control = TrainingControl()
    seen: list[ev.Event] = []

    def sink(e: ev.Event) -> None:
        seen.append(e)
        if isinstance(e, ev.StepMetrics) and e.step == 3:
            control.pause()
        if isinstance(e, ev.Paused):
            # The checkpoint exists on disk while the loop waits.
            assert Path(e.checkpoint).is_file()
            assert json.loads((tmp_path / "r" / "r" / "state.json").read_text())["status"] == "paused"
            control.resume()

    result = Trainer(tiny_config(corpus, tmp_path / "r"), sink, control).run()
    assert isinstance(result, ev.Finished) and result.step == 12
    kinds = [type(e).__name__ for e in seen]
    assert kinds.index("Paused") < kinds.index("Resumed")
    paused = next(e for e in seen if isinstance(e, ev.Paused))
    assert paused.step == 3


def test_run_folder_holds_everything(corpus: Path, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    cfg = tiny_config(corpus, tmp_path / "out", save_interval=4, keep_checkpoints=2, sample_tokens=0)
    result = Trainer(cfg, seen.append).run()
    assert isinstance(result, ev.Finished)
    run_dir = tmp_path / "out" / "r"
    assert read_toml(run_dir / "run.toml")["train"]["save_interval"] == 4
    # The model is built with the tokenizer's real vocabulary, published in RunStarted and recorded
    # in run.toml; the caller's config is left as it was (the dashboard reads it from another thread).
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert 256 < started.vocab_size <= 300 and read_toml(run_dir / "run.toml")["model"]["vocab_size"] == started.vocab_size
    assert cfg == tiny_config(corpus, tmp_path / "out", save_interval=4, keep_checkpoints=2, sample_tokens=0)
    snaps = sorted(p.name for p in (run_dir / "snapshots").glob("*.pt"))
    # keep_checkpoints=2 newest plus the best one
    assert "step_0000012.pt" in snaps and len(snaps) <= 3
    # Format 1, as every checkpoint written before: these entries and counters (what a resume reads).
    last = load_checkpoint(run_dir / "snapshots" / "step_0000012.pt")
    assert set(last) == {"format_version", "model", "optimizer", "scaler", "rng", "loader", "trainer", "config"}
    assert set(last["trainer"]) == {"step", "tokens_seen", "best_val_loss", "elapsed_s"}
    assert (last["trainer"]["step"], last["trainer"]["tokens_seen"]) == (12, 12 * 64) and last["trainer"]["elapsed_s"] > 0
    assert set(last["loader"]) == {"epoch", "step_in_epoch"} and last["scaler"] == {} and len(last["rng"]) == 1
    assert last["config"] == read_toml(run_dir / "run.toml")
    assert {"model.safetensors", "config.toml", "tokenizer.json"} <= {p.name for p in (run_dir / "models").iterdir()}
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [d["step"] for d in lines if d["event"] == "StepMetrics"]
    assert steps == list(range(1, 13))
    # The LR each step reports is the schedule's curve the dashboard plots (AdamW's peak times the multiplier).
    reported = [e.lr for e in seen if isinstance(e, ev.StepMetrics)]
    assert reported == [started.schedule.at(step) for step in range(12)] and max(reported) == cfg.train.lr
    evals = [d for d in lines if d["event"] == "EvalResult"]
    assert {d["split"] for d in evals} == {"valid", "test"}
    final_valid = [d for d in evals if d["split"] == "valid"][-1]
    assert final_valid["partial"] is False and final_valid["word_perplexity"] > final_valid["perplexity"] > 1
    # the loss goes down on this tiny corpus
    assert losses(seen)[-1] < losses(seen)[0]


def test_missing_dataset_fails_cleanly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(tmp_path / "does-not-exist", tmp_path / "out")
    seen: list[ev.Event] = []
    result = Trainer(cfg, seen.append).run()
    assert isinstance(result, ev.Failed) and result.kind == "data"
    assert "does-not-exist" in result.message


def test_nan_loss_reports_and_keeps_checkpoint(corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(corpus, tmp_path / "out", lr=1e6, save_interval=1, grad_clip=0.0)
    result = Trainer(cfg).run()
    assert isinstance(result, ev.Failed) and result.kind == "nan"
    assert "loss is nan" in result.message.lower() or "loss is inf" in result.message.lower()
    assert result.checkpoint and Path(result.checkpoint).is_file()
    state = json.loads((tmp_path / "out" / "r" / "state.json").read_text())
    assert state["status"] == "crashed"


def test_out_of_memory_keeps_checkpoint_and_advises(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from engine.model.gpt import GPT

    real_forward = GPT.forward
    calls = {"n": 0}

    def forward(self, idx, targets=None, cache=None, **kw):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                raise torch.OutOfMemoryError("tried to allocate 20.00 GiB")
        return real_forward(self, idx, targets, cache, **kw)

    monkeypatch.setattr(GPT, "forward", forward)
    from collections import namedtuple

    import psutil

    # The advice estimates the CPU run (fp32, eager): under 1 MiB for this model at batch 4.
    small_machine = namedtuple("vm", "total available")(600 * 2**10, 100 * 2**10)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: small_machine)
    result = Trainer(tiny_config(corpus, tmp_path / "out", save_interval=2)).run()
    assert isinstance(result, ev.Failed) and result.kind == "oom"
    assert "tried to allocate 20.00 GiB" in result.message
    assert "600.00 KiB" in result.message and "batch_size" in result.message
    assert result.checkpoint.endswith("step_0000002.pt") and Path(result.checkpoint).is_file()


def test_memory_samples_reach_the_sink(corpus: Path, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    Trainer(tiny_config(corpus, tmp_path / "out"), seen.append).run()
    samples = [e for e in seen if isinstance(e, ev.MemorySample)]
    assert samples and samples[0].kind == "cpu" and samples[0].used_bytes > 0


@pytest.mark.parametrize("save", ["interval", "stop"])
def test_no_checkpoint_holds_weights_a_nan_step_made(corpus: Path, tmp_path: Path, monkeypatch, save: str) -> None:
    """save_interval 3 with log_interval 4 (and a stop between logging steps): the loss is checked before the save."""
    from engine.runs.checkpoints import list_checkpoints

    control = TrainingControl()
    real_step = Trainer._train_step

    def train_step(self, batches):
        out = real_step(self, batches)
        if self.progress.step + 1 == 2:  # step 2's update leaves NaN weights: step 3's loss is NaN
            with torch.no_grad():
                next(self.s.raw_model.parameters()).fill_(float("nan"))
        if save == "stop" and self.progress.step + 1 == 3:
            control.stop()
        return out

    monkeypatch.setattr(Trainer, "_train_step", train_step)
    cfg = tiny_config(corpus, tmp_path, log_interval=4, save_interval=3 if save == "interval" else 0, eval_interval=0)
    result = Trainer(cfg, control=control).run()
    assert isinstance(result, ev.Failed) and result.kind == "nan" and "at step 3" in result.message
    assert list_checkpoints(tmp_path / "r") == [] and result.checkpoint == ""
