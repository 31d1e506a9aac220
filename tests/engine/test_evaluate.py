"""Word-level perplexity uses the right word count; the loader's batches are reproducible and disjoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config.loading import build_config
from engine.config.plan import RunPlan, plan_run
from engine.config.run_config import DataConfig, ModelConfig
from engine.data.loader import TrainLoader
from engine.data.token_cache import prepare_data
from engine.model.gpt import GPT
from engine.runs.checkpoints import LOADER
from engine.train.evaluate import eval_metrics, eval_windows, score_tokens


def test_word_perplexity_of_a_uniform_model_on_known_text(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train.txt").write_text("a b c d e f g\n" * 50)
    # 3 + 0 + 2 whitespace words and 3 lines: 8 words
    (folder / "valid.txt").write_text("a b c\n\n d  e \n")
    data = prepare_data(DataConfig(dataset=str(folder), vocab_size=300))
    assert (data.valid.n_words, data.valid.n_lines, data.valid.n_bytes) == (8, 3, 14)
    model = GPT(ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_seq_len=4, dropout=0.0,
                            vocab_size=data.vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # zero logits: uniform over the padded vocabulary
    scored_tokens = len(data.valid.ids) - 1
    nll, count = score_tokens(model, data.valid.ids, seq_len=4, batch_size=2, device=torch.device("cpu"))
    assert count == scored_tokens
    vocab = model.cfg.padded_vocab_size
    assert nll == pytest.approx(scored_tokens * math.log(vocab), rel=1e-5)
    m = eval_metrics(nll, count, scored_tokens, data.valid.n_words, data.valid.n_bytes)
    assert m.word_perplexity == pytest.approx(vocab ** (scored_tokens / 8), rel=1e-4)
    assert m.perplexity == pytest.approx(vocab, rel=1e-4)
    assert m.bits_per_byte == pytest.approx(scored_tokens * math.log2(vocab) / 14, rel=1e-4)
    assert not m.partial


def test_evaluation_windows_score_every_target_once() -> None:
    ids = np.arange(24)  # 23 targets in windows of 4: five whole and a short one of 3
    assert (eval_windows(24, 4), eval_windows(21, 4)) == (6, 5)
    model = GPT(ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_seq_len=4, vocab_size=64))
    cpu = torch.device("cpu")
    assert score_tokens(model, ids, seq_len=4, batch_size=4, device=cpu)[1] == 23
    assert score_tokens(model, ids, seq_len=4, batch_size=4, device=cpu, max_windows=2)[1] == 8
    assert score_tokens(model, ids, seq_len=4, batch_size=4, device=cpu, max_windows=6)[1] == 23


def test_partial_evaluation_extrapolates_and_says_so() -> None:
    m = eval_metrics(nll_sum=20.0, scored=10, total_tokens=100, n_words=50, n_bytes=400)
    assert m.partial and m.loss == 2.0
    assert m.word_perplexity == pytest.approx(math.exp(2.0 * 100 / 50))


def loader_plan(tokens: np.ndarray, seq_len: int, world_size: int = 1, **train) -> RunPlan:
    cfg = build_config("tiny", None, {"model": {"max_seq_len": seq_len}, "train": train})
    return plan_run(cfg, world_size=world_size, vocab_size=300, train_tokens=len(tokens))


def test_loader_ranks_read_disjoint_slices_of_the_same_global_batch() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    single = TrainLoader(tokens, loader_plan(tokens, 8, batch_size=8, grad_accum_steps=2, seed=3))
    two = loader_plan(tokens, 8, world_size=2, batch_size=8, seed=3)
    assert (single.micro_batch, TrainLoader(tokens, two).micro_batch) == (4, 4)
    ranks = [TrainLoader(tokens, two, rank=r) for r in range(2)]
    for _ in range(5):
        whole = torch.cat([x for x, _ in single.next_step()])
        parts = torch.cat([x for loader in ranks for x, _ in loader.next_step()])
        assert torch.equal(whole, parts)
    first_rank = ranks[0].next_step()[0][0]
    second_rank = ranks[1].next_step()[0][0]
    assert not set(first_rank[:, 0].tolist()) & set(second_rank[:, 0].tolist())


def test_loader_resumes_from_its_state_and_changes_order_each_epoch() -> None:
    tokens = np.arange(2_000, dtype=np.uint16)
    plan = loader_plan(tokens, 10, batch_size=4, seed=1)
    assert (plan.train_windows, plan.steps_per_epoch) == (199, 49)
    a = TrainLoader(tokens, plan)
    epoch0 = [a.next_step()[0][0] for _ in range(plan.steps_per_epoch)]  # the plan's epoch is the loader's
    assert a.state.epoch == 0 and a.epoch == 1
    assert len({int(w) for x in epoch0 for w in x[:, 0]}) == 4 * 49  # every window at most once
    state = LOADER.take(a.state)
    nxt = a.next_step()[0][0]
    assert a.state.epoch == 1 and not torch.equal(nxt, epoch0[0])
    b = TrainLoader(tokens, plan)
    LOADER.put(b.state, state)
    assert torch.equal(b.next_step()[0][0], nxt)
    with pytest.raises(ValueError, match="plan was made for 2000 training tokens, not 1999"):
        TrainLoader(tokens[1:], plan)
    x, y = a.next_step()[0]
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one


def test_evaluation_reports_progress_and_the_final_one_can_be_bounded_or_skipped(corpus: Path, tmp_path: Path) -> None:
    """EvalProgress from 0 to total batches for every evaluation; train.final_eval_batches bounds the final
    evaluation (results marked partial) or skips it (-1)."""
    from engine import events as ev
    from engine.train.trainer import Trainer
    from tests.conftest import tiny_config

    def train(name: str, **train_overrides) -> list[ev.Event]:
        seen: list[ev.Event] = []
        cfg = tiny_config(corpus, tmp_path / name, max_steps=8, eval_interval=4, eval_batches=2, **train_overrides)
        assert isinstance(Trainer(cfg, seen.append).run(), ev.Finished)
        return seen

    events = train("whole")
    progress = [e for e in events if isinstance(e, ev.EvalProgress)]
    results = [e for e in events if isinstance(e, ev.EvalResult)]
    assert [(e.split, e.step) for e in results] == [("valid", 4), ("valid", 8), ("test", 8)]
    for r in results:  # each evaluation: a first report at 0 batches, a last one at total, before its result
        mine = [p for p in progress if (p.split, p.step) == (r.split, r.step)]
        assert mine[0].done == 0 and mine[-1].done == mine[-1].total > 0
        assert events.index(mine[-1]) < events.index(r)
    periodic, final = results[0], results[1]
    assert periodic.partial and not final.partial and not results[2].partial
    assert not [p for p in progress if p.step == 8][0].partial

    bounded = [e for e in train("bounded", final_eval_batches=1) if isinstance(e, ev.EvalResult) and e.step == 8]
    assert [e.split for e in bounded] == ["valid", "test"] and all(e.partial for e in bounded)
    assert bounded[0].tokens < final.tokens

    skipped = train("skipped", final_eval_batches=-1)
    assert not [e for e in skipped if isinstance(e, ev.EvalResult) and e.step == 8]
    assert skipped[-1].test is None and any("final evaluation skipped" in getattr(e, "message", "") for e in skipped)


def test_evaluation_batch_stays_within_the_training_peak_and_scores_the_same() -> None:
    """A larger evaluation micro-batch (inference mode, chunked cross-entropy) gives the same NLL."""
    from engine.config.loading import build_config
    from engine.memory.estimate import EVAL_MULTIPLE_MAX, estimate_memory

    medium = build_config("medium")
    est = estimate_memory(medium, compiled=False)
    assert 1 < est.eval_multiple <= EVAL_MULTIPLE_MAX and est.peak_phase != "evaluation"
    # A compiled half-precision step holds no fp32 log-probs: no room for a bigger batch.
    assert estimate_memory(build_config("tiny"), compiled=True).eval_multiple == 1
    torch.manual_seed(0)
    model = GPT(ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_seq_len=8, dropout=0.0, vocab_size=50))
    ids = np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint16)
    one = score_tokens(model, ids, seq_len=8, batch_size=2, device=torch.device("cpu"))
    big = score_tokens(model, ids, seq_len=8, batch_size=16, device=torch.device("cpu"), loss_rows=2)
    assert one[1] == big[1] and big[0] == pytest.approx(one[0], rel=1e-5)


@pytest.mark.parametrize("loss_chunk", [0, 8])
def test_evaluation_waits_for_the_device_once_and_scores_as_before(loss_chunk: int, monkeypatch) -> None:
    """The per-batch sums stay on the device (one host sync per evaluation), and the figures are exactly those
    of summing each batch on the host as it is scored."""
    import sys

    import torch.nn.functional as F

    torch.manual_seed(0)
    model = GPT(ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_seq_len=8, dropout=0.0, vocab_size=50),
                loss_chunk=loss_chunk).eval()
    ids = np.random.default_rng(0).integers(0, 50, 8 * 20 + 1).astype(np.uint16)
    expected = 0.0
    with torch.inference_mode():
        for first in range(0, 20, 2):  # batches of 2 windows of 8 targets, each summed on the host
            rows = torch.from_numpy(np.stack([ids[s:s + 9] for s in (8 * first, 8 * first + 8)]).astype(np.int64))
            if loss_chunk:
                expected += float(model(rows[:, :-1], rows[:, 1:])[1]) * 16
            else:
                logits = model(rows[:, :-1])[0]
                expected += float(F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), reduction="sum"))
    syncs: list[str] = []
    for name in ("item", "tolist", "__float__", "cpu"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            if sys._getframe(1).f_code.co_filename.endswith("evaluate.py"):
                syncs.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    nll, count = score_tokens(model, ids, seq_len=8, batch_size=2, device=torch.device("cpu"))
    assert syncs == ["tolist"]
    assert count == 160 and nll == expected


def test_evaluation_batches_reach_a_gpu_from_pinned_memory(monkeypatch) -> None:
    from engine.train import evaluate

    calls: list[tuple] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin",)) or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append(("to", *a, k)) or self)
    evaluate._to_device(np.zeros((2, 9), dtype=np.int64), torch.device("cuda", 0))
    assert calls == [("pin",), ("to", torch.device("cuda", 0), {"non_blocking": True})]
    calls.clear()
    evaluate._to_device(np.zeros((2, 9), dtype=np.int64), torch.device("cpu"))
    assert calls == [("to", torch.device("cpu"), {})]  # pinning needs a GPU
