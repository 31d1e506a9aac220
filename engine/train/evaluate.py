"""Evaluation: loss, token perplexity, word-level perplexity and bits per byte.

The split's token stream starts with one end-of-text token, so scoring every
later token exactly once (non-overlapping windows) scores the whole text.
Word-level perplexity is exp(total NLL / words), words being whitespace tokens
plus one end-of-line per line: the figure WikiText papers report, comparable
across tokenizers. When only the first `max_batches` batches are scored the
totals are extrapolated from the mean NLL, and the result says `partial`.
A `should_stop` callback is polled between batches, so a stop request ends an
evaluation of a large split at once (`EvalInterrupted`) instead of at its end.

Evaluation is a visible phase: `progress(done, total)` is called as batches
are scored, and `EvalProgressReporter` turns that into a few
`EvalProgress` events a second. It runs in inference mode with a batch of
several training micro-batches (engine.memory.estimate's `eval_multiple`: as many as
fit in the memory the training step itself needs at its peak), computing the
fp32 cross-entropy one micro-batch at a time (`loss_rows`), or with the
model's own chunked loss (train.loss_chunk), which never holds all the logits.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine import events as ev
from engine.config.plan import RunPlan
from engine.errors import ConfigError
from engine.memory.estimate import MemoryEstimate
from engine.memory.gpus import find_gpu
from engine.speed.model import SplitSizes, format_duration, scored_windows, short_source
from engine.speed.run_time import run_time

PROGRESS_EVERY_S = 0.5


class EvalInterrupted(Exception):
    """`should_stop` returned True during an evaluation; its partial sums are meaningless."""


@dataclass
class EvalTotals:
    loss: float
    perplexity: float
    word_perplexity: float
    bits_per_byte: float
    tokens: int
    partial: bool


def eval_metrics(nll_sum: float, scored: int, total_tokens: int, n_words: int, n_bytes: int) -> EvalTotals:
    """Turn a summed NLL over `scored` of the split's `total_tokens` targets into the reported figures."""
    mean = nll_sum / max(scored, 1)
    split_nll = mean * total_tokens  # == nll_sum when the whole split was scored
    return EvalTotals(
        loss=mean,
        perplexity=math.exp(min(mean, 700.0)),
        word_perplexity=math.exp(min(split_nll / max(n_words, 1), 700.0)),
        bits_per_byte=split_nll / (max(n_bytes, 1) * math.log(2)),
        tokens=scored,
        partial=scored < total_tokens,
    )


class EvalProgressReporter:
    """`progress(done, total)` for score_tokens, as EvalProgress events: first, every `every_s`, last.

    The events count `batches`, in the unit of train.eval_batches and final_eval_batches (batches of the
    training micro-batch's size, all ranks together), whatever batches score_tokens runs them in: the
    evaluation's own batches hold several micro-batches, and each rank scores its share."""

    def __init__(self, emit: ev.EventSink, step: int, split: str, *, batches: int, partial: bool = False,
                 every_s: float = PROGRESS_EVERY_S) -> None:
        self.emit, self.step, self.split, self.every_s, self.partial = emit, step, split, every_s, partial
        self.batches = batches
        self.start = self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == 0:
            self.start = now
        elif done < total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else math.nan
        shown = self.batches if done >= total else self.batches * done // max(total, 1)
        self.emit(ev.EvalProgress(step=self.step, split=self.split, done=shown, total=self.batches,
                                  elapsed_s=elapsed, eta_s=eta, partial=self.partial))


def eval_windows(tokens: int, seq_len: int) -> int:
    """Windows that score a split of `tokens` tokens: every target once, the last window maybe short."""
    return scored_windows(0, 1, seq_len, tokens)


def final_eval_notice(plan: RunPlan, est: MemoryEstimate, data, cuda_name: str) -> str:
    """The run's first lines say what the final evaluation will cost and how to bound it.

    Its batches per split (train.final_eval_batches' unit) and its time by engine.speed's time model
    (a measurement kept on this machine when there is one), on `cuda_name`'s card ("": the CPU).
    """
    limit = plan.config.train.final_eval_batches
    if limit < 0:
        return "final evaluation: skipped (--final_eval_batches -1): no final validation or test figures"
    micro, seq = plan.micro_batch, plan.seq_len
    splits = {"valid": data.valid, **({"test": data.test} if data.test is not None else {})}
    whole = {name: eval_windows(len(split.ids), seq) for name, split in splits.items()}
    scored = {name: scored_windows(limit, micro, seq, len(split.ids)) for name, split in splits.items()}
    batches = " + ".join(f"{-(-n // micro):,} {name}" for name, n in scored.items())
    if scored == whole:
        what = f"the whole {' and '.join(splits)} split{'s' if len(splits) > 1 else ''}"
    else:
        of = " + ".join(f"{-(-n // micro):,}" for n in whole.values())
        what = f"the first of {of}: partial figures"
    sizes = SplitSizes(train=len(data.train.ids), valid=len(data.valid.ids),
                       test=len(data.test.ids) if data.test is not None else 0, exact=True)
    try:
        te = run_time(plan, est, find_gpu(cuda_name) if cuda_name else None, sizes)
        cost = f", about {format_duration(te.final_eval_s)} ({short_source(te.throughput)})"
    except ConfigError:  # a card the catalogue does not know: no time, the batches still say it
        cost = ""
    return (f"final evaluation: {batches} batches of {micro} sequences ({what}){cost}; "
            f"--final_eval_batches N bounds it to N batches a split, -1 skips it")


def _summed_nll(model: torch.nn.Module, data: torch.Tensor, autocast, rows: int) -> tuple[torch.Tensor, int]:
    """Summed NLL of data[:, 1:] given data[:, :-1], as (fp32 value on the device, factor): the model's own
    chunked loss (model.loss_chunk, train.loss_chunk) where it has one (its mean, factor the target count),
    else its logits scored `rows` rows at a time (the sum, factor 1). Nothing waits for the device."""
    inputs, targets = data[:, :-1], data[:, 1:]
    with autocast or contextlib.nullcontext():
        if getattr(model, "loss_chunk", 0) > 0:  # never all the logits at once
            return model(inputs, targets)[1].float(), targets.numel()
        logits, _ = model(inputs)
    return sum(F.cross_entropy(logits[i:i + rows].float().flatten(0, 1), targets[i:i + rows].flatten(),
                               reduction="sum") for i in range(0, len(data), rows)), 1


def _to_device(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """A batch of token windows on the device: to a GPU from pinned memory, so the copy is asynchronous."""
    batch = torch.from_numpy(rows)
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def score_tokens(
    model: torch.nn.Module,
    ids: np.ndarray,
    *,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    max_batches: int = 0,
    autocast: contextlib.AbstractContextManager | None = None,
    rank: int = 0,
    world_size: int = 1,
    should_stop: Callable[[], bool] | None = None,
    max_windows: int = 0,
    progress: Callable[[int, int], None] | None = None,
    loss_rows: int = 0,
) -> tuple[float, int]:
    """Summed NLL (nats) and number of scored targets over this rank's share of the windows.

    `max_windows` > 0 scores only the split's first windows (of all ranks
    together); `progress(done, total)` is called with this rank's batches;
    `loss_rows` > 0 computes the cross-entropy that many rows at a time, so
    its fp32 copies exist for one chunk only.
    """
    n_targets = len(ids) - 1
    windows = eval_windows(len(ids), seq_len)
    starts = [i * seq_len for i in range(min(windows, max_windows) if max_windows else windows)]
    batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    if max_batches:
        batches = batches[:max_batches]
    mine = batches[rank::world_size]
    was_training = model.training
    model.eval()
    # Each batch's NLL stays on the device until the end: one host sync per
    # evaluation, not one per batch. Summed on the host in batch order, in double
    # precision, as the figures always were.
    sums: list[torch.Tensor] = []
    factors: list[int] = []
    count = 0
    try:
        for done, b in enumerate(mine):
            if progress is not None:
                progress(done, len(mine))
            if should_stop is not None and should_stop():
                raise EvalInterrupted()
            # The last window can be short; it goes in a batch of its own length.
            groups: dict[int, list[int]] = {}
            for s in b:
                groups.setdefault(min(seq_len, n_targets - s), []).append(s)
            for length, group in groups.items():
                rows = np.stack([ids[s:s + length + 1] for s in group]).astype(np.int64)
                with torch.inference_mode():
                    value, factor = _summed_nll(model, _to_device(rows, device), autocast, loss_rows or len(group))
                sums.append(value)
                factors.append(factor)
                count += len(group) * length
        values = torch.stack(sums).tolist() if sums else []  # the one sync
        if progress is not None:
            progress(len(mine), len(mine))
    finally:
        model.train(was_training)
    nll = 0.0
    for value, factor in zip(values, factors):
        nll += value * factor
    return nll, count
