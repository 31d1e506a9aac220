"""engine.losses: the chunked linear + cross-entropy equals the plain one, and holds less memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.losses import chunked_linear_cross_entropy
from engine.memory_probe import LiveTensors


def _inputs(n: int, c: int, v: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=g, dtype=torch.float64).float().requires_grad_()
    w = (0.2 * torch.randn(v, c, generator=g)).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    return h, w, t


@pytest.mark.parametrize("n,chunk", [(96, 32), (100, 32), (37, 1000), (64, 1)])
def test_loss_and_gradients_match_cross_entropy(n, chunk):
    h, w, t = _inputs(n, 48, 301)
    ref = F.cross_entropy(F.linear(h, w).float(), t)
    gh, gw = torch.autograd.grad(ref * 3.0, (h, w))  # a scaled loss: backward must scale both gradients
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    loss = chunked_linear_cross_entropy(h2, w2, t, chunk=chunk)
    (loss * 3.0).backward()
    assert abs(loss.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
    torch.testing.assert_close(h2.grad, gh, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w2.grad, gw, rtol=1e-5, atol=1e-5)


def test_batched_shapes_and_autocast_follow_the_model():
    h, w, t = _inputs(2 * 24, 32, 200, seed=1)
    h3, t2 = h.detach().view(2, 24, 32).requires_grad_(), t.view(2, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(h3, w).float().flatten(0, 1), t2.flatten())
        loss = chunked_linear_cross_entropy(h3, w, t2, chunk=10)
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) < 2e-2
    loss.backward()
    assert h3.grad.shape == h3.shape and h3.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_never_holds_the_full_logits():
    n, c, v = 512, 32, 4096  # logits 8 MiB in fp32; h 64 KiB, the weight 512 KiB
    peaks = {}
    for name in ("full", "chunked"):
        h, w, t = _inputs(n, c, v, seed=2)
        mode = LiveTensors()
        with mode:
            for x in (h, w, t):
                mode.track(x)
            if name == "full":
                loss = F.cross_entropy(F.linear(h, w).float(), t)
            else:
                loss = chunked_linear_cross_entropy(h, w, t, chunk=64)
            loss.backward()
        peaks[name] = mode.peak
    logits = 4 * n * v
    assert peaks["full"] > 2 * logits  # log-probs and their gradients: several full copies
    assert peaks["chunked"] < logits / 2  # one chunk's buffers and the two gradients


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("n,c,v,chunk", [(512, 32, 4096, 64), (1024, 64, 2048, 256), (300, 48, 1000, 1000),
                                         (2048, 128, 1024, 128)])
def test_estimate_rows_match_the_measured_peak(precision, n, c, v, chunk):
    from engine.memory import chunked_head_bytes

    h, w, t = _inputs(n, c, v, seed=3)
    mode = LiveTensors()
    with mode:
        for x in (h, w, t):
            mode.track(x)
        base = mode.live
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = chunked_linear_cross_entropy(h, w, t, chunk=chunk)
        loss.backward()
    want = max(chunked_head_bytes(n, v, c, chunk, precision == "bf16"))
    got = mode.peak - base
    assert abs(want - got) <= 0.01 * got, (want, got)


def test_the_estimate_with_a_chunked_loss_is_far_smaller():
    from engine.config import build_config
    from engine.memory import estimate_memory

    cfg = build_config("small", None, {"train": {"batch_size": 16}})
    full = estimate_memory(cfg, compiled=False)
    chunked = estimate_memory(cfg, compiled=False, loss_chunk=4096)
    assert full.peak_phase == "start of backward"
    step = {k: v for k, v in chunked.phases.items() if k != "evaluation"}  # evaluation still scores whole logits
    assert max(step.values()) < 0.6 * max(v for k, v in full.phases.items() if k != "evaluation")
