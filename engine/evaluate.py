"""Evaluation: loss, token perplexity, word-level perplexity and bits per byte.

The split's token stream starts with one end-of-text token, so scoring every
later token exactly once (non-overlapping windows) scores the whole text.
Word-level perplexity is exp(total NLL / words), words being whitespace tokens
plus one end-of-line per line: the figure WikiText papers report, comparable
across tokenizers. When only the first `max_batches` batches are scored the
totals are extrapolated from the mean NLL, and the result says `partial`.
A `should_stop` callback is polled between batches, so a stop request ends an
evaluation of a large split at once (`EvalInterrupted`) instead of at its end.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


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


@torch.no_grad()
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
) -> tuple[float, int]:
    """Summed NLL (nats) and number of scored targets over this rank's share of the windows."""
    n_targets = len(ids) - 1
    starts = list(range(0, n_targets, seq_len))
    batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    if max_batches:
        batches = batches[:max_batches]
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        for b in batches[rank::world_size]:
            if should_stop is not None and should_stop():
                raise EvalInterrupted()
            # The last window can be short; it goes in a batch of its own length.
            groups: dict[int, list[int]] = {}
            for s in b:
                groups.setdefault(min(seq_len, n_targets - s), []).append(s)
            for length, group in groups.items():
                rows = np.stack([ids[s:s + length + 1] for s in group]).astype(np.int64)
                data = torch.from_numpy(rows).to(device)
                with autocast or contextlib.nullcontext():
                    logits, _ = model(data[:, :-1])
                loss = F.cross_entropy(logits.float().flatten(0, 1), data[:, 1:].flatten(), reduction="sum")
                nll += loss.item()
                count += data[:, 1:].numel()
    finally:
        model.train(was_training)
    return nll, count
