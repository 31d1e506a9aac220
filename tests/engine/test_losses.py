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
@pytest.mark.parametrize("grad_scale", [None, 4.0], ids=["unscaled", "announced-4"])
def test_loss_and_gradients_match_cross_entropy(n, chunk, grad_scale):
    """Also when the announced backward scale (fp16's loss scale) is not the one backward brings."""
    h, w, t = _inputs(n, 48, 301)
    ref = F.cross_entropy(F.linear(h, w).float(), t)
    gh, gw = torch.autograd.grad(ref * 3.0, (h, w))  # a scaled loss: backward must scale both gradients
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    scale = None if grad_scale is None else torch.tensor(grad_scale)
    loss = chunked_linear_cross_entropy(h2, w2, t, chunk=chunk, grad_scale=scale)
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


def _fp16_run(chunk: int, gain: float, steps: int) -> tuple[int, float]:
    """(steps GradScaler skipped, its final scale) of a small GPT trained in fp16 autocast on the CPU with
    the final norm's gain at `gain` (large hidden states: the head's fp16 gradients overflow)."""
    from engine.config.loading import build_config
    from engine.model.gpt import GPT
    from tests.memory_probe import real_batches, train_step

    cfg = build_config("tiny", None, {"model": {"d_model": 64, "num_heads": 2, "num_layers": 2, "d_ff": 128,
                                                "max_seq_len": 32, "vocab_size": 512, "dropout": 0.0},
                                      "train": {"batch_size": 8, "loss_chunk": chunk}})
    torch.manual_seed(0)
    model = GPT(cfg.model, loss_chunk=chunk)
    with torch.no_grad():
        model.ln_f.weight.fill_(gain)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    skipped = 0
    for step in range(steps):
        before = scaler.get_scale()
        train_step(model, opt, scaler, real_batches(cfg, seed=step), "fp16")  # the trainer's step
        skipped += scaler.get_scale() < before
    return skipped, scaler.get_scale()


def test_fp16_chunked_loss_skips_no_more_steps_than_the_plain_loss():
    """The chunked loss makes the head's gradients in the forward: in fp16 they carry GradScaler's scale
    (engine.model.losses.backward_scale), so they overflow where the plain loss's backward would and
    shrink with the scale. Before, unscaled, they overflowed at any scale: with the gain at 3000, 23 (chunks
    of 64) and 28 (one chunk) of 30 steps were skipped and the scale fell to 2^-12, against 12 and 16 for
    the plain loss; now 11 and 12."""
    plain_skipped, plain_scale = _fp16_run(0, 3000.0, 30)
    assert 0 < plain_skipped < 20  # the setup overflows, and GradScaler finds a scale that does not
    for chunk in (64, 256):
        skipped, scale = _fp16_run(chunk, 3000.0, 30)
        assert skipped <= plain_skipped and scale >= plain_scale, (chunk, skipped, scale, plain_skipped, plain_scale)


def test_fp16_chunked_gradients_equal_the_plain_ones_when_nothing_overflows():
    """One fp16 step at loss scale 1024, nothing overflowing: every gradient of the chunked loss equals the
    plain loss's within fp16's precision."""
    from engine.config.loading import build_config
    from engine.model.gpt import GPT
    from tests.memory_probe import real_batches

    cfg = build_config("tiny", None, {"model": {"d_model": 64, "num_heads": 2, "num_layers": 2, "d_ff": 128,
                                                "max_seq_len": 32, "vocab_size": 512, "dropout": 0.0},
                                      "train": {"batch_size": 8}})
    (x, y), = real_batches(cfg)
    grads = {}
    for chunk in (0, 64):
        torch.manual_seed(0)
        model = GPT(cfg.model, loss_chunk=chunk)
        scale = torch.tensor(1024.0)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(x, y, grad_scale=scale)[1]
        (loss * scale).backward()
        grads[chunk] = {name: p.grad / scale for name, p in model.named_parameters()}
        assert all(torch.isfinite(g).all() for g in grads[chunk].values())
    for name, plain in grads[0].items():
        torch.testing.assert_close(grads[64][name], plain, rtol=2e-2, atol=2e-3 * plain.abs().max().item(),
                                   msg=name)
