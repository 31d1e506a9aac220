"""engine.model.losses: the chunked linear + cross-entropy equals the plain one, and holds less memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.model.losses import chunked_linear_cross_entropy
from tests.memory_probe import LiveTensors


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
                                         (2048, 128, 1024, 128), (512, 256, 2048, 32)])
def test_estimate_rows_match_the_measured_peak(precision, n, c, v, chunk):
    from engine.memory.head import chunked_head_bytes

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


def test_without_gradients_only_the_loss_is_computed():
    h, w, t = _inputs(200, 16, 300, seed=4)
    ref = F.cross_entropy(F.linear(h, w), t)
    with torch.inference_mode():
        loss = chunked_linear_cross_entropy(h, w, t, chunk=64)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    mode = LiveTensors()
    with mode, torch.no_grad():
        for x in (h, w, t):
            mode.track(x)
        base = mode.live
        chunked_linear_cross_entropy(h, w, t, chunk=64)
    assert mode.peak - base < 4 * 64 * 300 + 4 * 200 * 16  # one chunk's logits; no gradient buffers


# Whole training steps (plus an evaluation batch) with the chunked loss, against the CPU allocator's
# events: each peaks at another moment. A bf16 step is held to the live tensors instead (what a CUDA
# allocator would hold): CPU kernels copy a half operand to fp32 for a mixed-dtype subtraction or sum,
# where CUDA kernels cast as they read.
CHUNKED_STEPS = [
    # model, batch, seq, accumulation, precision, checkpointing, chunk, compiled, the estimate's peak phase
    ({"num_layers": 2}, 4, 128, 1, "fp32", False, 256, False, "start of backward"),
    ({"num_layers": 1}, 1, 16, 1, "fp32", False, 16, False, "end of backward"),  # tied gradients summed
    ({"num_layers": 1}, 4, 128, 2, "fp32", False, 64, False, "start of backward"),
    ({"num_layers": 2, "arch": "modern", "tie_embeddings": False}, 4, 128, 1, "fp32", True, 256, False,
     "end of backward"),
    ({"num_layers": 2}, 4, 128, 1, "bf16", False, 512, False, "end of forward"),
    ({"num_layers": 2}, 4, 128, 1, "fp32", False, 256, True, "start of backward"),
    ({"num_layers": 2}, 8, 128, 1, "fp32", True, 256, True, "end of backward"),
]


@pytest.mark.parametrize("model,batch,seq,accum,precision,ckpt,chunk,compiled,phase", CHUNKED_STEPS)
def test_whole_step_with_a_chunked_loss_matches_the_allocator(model, batch, seq, accum, precision, ckpt, chunk,
                                                              compiled, phase):
    from engine.memory.estimate import estimate_memory
    from tests.engine.test_memory import cfg_with
    from tests.memory_probe import measure_peak, measure_peak_profiled

    cfg = cfg_with("tiny", model={**model, "max_seq_len": seq, "dropout": 0.0},
                   train={"batch_size": batch, "grad_accum_steps": accum, "precision": precision,
                          "grad_checkpointing": ckpt, "loss_chunk": chunk})
    est = estimate_memory(cfg, device="cpu", compiled=compiled)
    assert est.peak_phase == phase
    assert est.eval_multiple == 8  # the chunked evaluation no longer bounds its batch
    if precision == "fp32":
        measured = measure_peak_profiled(cfg, precision, compiled=compiled, evaluate=True,
                                         eval_multiple=est.eval_multiple)
    else:
        measured = measure_peak(cfg, precision)
    assert abs(est.allocated_bytes - measured) <= 0.03 * measured, (est.phases, measured)
    plain = estimate_memory(cfg, device="cpu", compiled=compiled, loss_chunk=0)
    assert est.allocated_bytes < plain.allocated_bytes


def test_the_estimate_with_a_chunked_loss_is_far_smaller():
    from engine.config.loading import build_config
    from engine.memory.estimate import estimate_memory

    cfg = build_config("small", None, {"train": {"batch_size": 16}})
    full = estimate_memory(cfg, compiled=False)
    chunked = estimate_memory(cfg, compiled=False, loss_chunk=4096)
    assert full.peak_phase == "start of backward"
    assert chunked.allocated_bytes < 0.6 * full.allocated_bytes
    assert chunked.eval_multiple > full.eval_multiple
