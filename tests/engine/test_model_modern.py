"""The "modern" architecture (RoPE, RMSNorm, SwiGLU, QK-norm, no biases) with the engine's other features.

torch.compile runs with the aot_eager backend (the graph capture and autograd
tracing of the real thing, no C++ compiler needed); its numbers must equal
eager mode's. Export, the KV cache and exact resume are covered in
test_export, test_sampling and test_trainer.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from engine import events as ev
from engine.config.costs import count_params, flops_per_token, swiglu_hidden
from engine.config.loading import build_config
from engine.config.run_config import ModelConfig
from engine.model.gpt import GPT
from engine.train.trainer import Trainer
from tests.conftest import tiny_config


def small(arch: str = "modern", **kw) -> ModelConfig:
    return ModelConfig(d_model=32, num_heads=2, num_layers=2, d_ff=64, max_seq_len=16, vocab_size=100,
                       dropout=0.0, arch=arch, **kw)


def loss_and_grads(model: torch.nn.Module, raw: GPT, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    raw.zero_grad(set_to_none=True)
    loss = model(x, x)[1]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in raw.named_parameters()}


def test_compiled_and_checkpointed_match_eager() -> None:
    torch.manual_seed(0)
    eager = GPT(small())
    x = torch.randint(0, 100, (2, 16))
    loss, grads = loss_and_grads(eager, eager, x)
    torch._dynamo.reset()
    compiled = torch.compile(eager, backend="aot_eager")
    c_loss, c_grads = loss_and_grads(compiled, eager, x)
    torch._dynamo.reset()
    ckpt = GPT(small(), grad_checkpointing=True)
    ckpt.load_state_dict(eager.state_dict())
    k_loss, k_grads = loss_and_grads(ckpt.train(), ckpt, x)
    for other_loss, other in ((c_loss, c_grads), (k_loss, k_grads)):
        torch.testing.assert_close(other_loss, loss, rtol=1e-6, atol=1e-6)
        for n in grads:
            torch.testing.assert_close(other[n], grads[n], rtol=1e-5, atol=1e-6)


def test_no_biases_no_positions_and_the_gpt2_parameter_budget() -> None:
    names = [n for n, _ in GPT(small()).named_parameters()]
    assert not any(n.endswith(".bias") for n in names) and "wpe.weight" not in names
    # SwiGLU's three matrices hold about as many weights as the GPT-2 MLP's two.
    for d_ff in (1024, 2048, 3072):
        assert abs(3 * swiglu_hidden(d_ff) - 2 * d_ff) / (2 * d_ff) < 0.05
    for preset in ("tiny", "small", "medium"):
        g, m = build_config(preset).model, build_config(preset, overrides={"model": {"arch": "modern"}}).model
        # (modern has no position table, and the SwiGLU width is rounded to a multiple of 64)
        assert abs(count_params(m) / count_params(g) - 1) < 0.02
        assert abs(flops_per_token(m) / flops_per_token(g) - 1) < 0.02


def test_untied_head_adds_parameters_not_flops() -> None:
    tied, untied = small(), small(tie_embeddings=False)
    assert count_params(untied) - count_params(tied) == tied.padded_vocab_size * tied.d_model
    assert flops_per_token(untied) == flops_per_token(tied)


def test_modern_muon_trains_compiled_with_checkpointing(corpus: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    cfg = tiny_config(corpus, tmp_path, max_steps=6, eval_interval=0, compile="on", optimizer="muon",
                      grad_checkpointing=True)
    cfg.model.arch = "modern"
    seen: list[ev.Event] = []
    done = Trainer(cfg, seen.append).run()
    torch._dynamo.reset()
    assert isinstance(done, ev.Finished) and not done.stopped, done
    losses = [e.loss for e in seen if isinstance(e, ev.StepMetrics)]
    assert losses[-1] < losses[0]
