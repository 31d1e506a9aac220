"""Tests for engine.model.sampling (generate, sample_text) and the `tui-lm sample` command.

Models are small random GPTs built here; their weights are re-drawn with a
large spread so logits have clear winners and float noise between the cached
and uncached paths cannot flip a choice. The tokenizer is a byte-level BPE
trained on a few hundred generated lines.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.config.loading import write_toml
from engine.config.run_config import ModelConfig, RunConfig
from engine.data.token_cache import EOT, train_bpe
from engine.model.gpt import GPT, KVCache
from engine.model.sampling import generate, sample_text

WORDS = "the cat dog sat on a mat and ran to house river king history of music old new".split()


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    return train_bpe(lines, 300)


def make_model(vocab_size: int = 300, max_seq_len: int = 16, attention: str = "fused", seed: int = 0,
               arch: str = "gpt2") -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, num_heads=4, num_layers=2, d_ff=64, max_seq_len=max_seq_len,
                      dropout=0.0, vocab_size=vocab_size, attention=attention, arch=arch)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "norm_1.weight",
                                  "norm_2.weight", "q_norm.weight", "k_norm.weight")):
                p.normal_(0.0, 0.5)
    return model.eval()


def prompt_ids(n: int, vocab: int = 300, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=g)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- KV cache

@pytest.mark.parametrize("arch", ["gpt2", "modern"])
@pytest.mark.parametrize("attention", ["fused", "math"])
def test_cached_logits_match_full_forward(attention, arch):
    # For "modern" this checks that cached tokens are rotated by their true position.
    model = make_model(attention=attention, arch=arch)
    ids = prompt_ids(12)
    full, _ = model(ids)
    cache = KVCache(model.cfg, 1, ids.device, torch.float32)
    first, _ = model(ids[:, :5], cache=cache)
    steps = [model(ids[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    stepped = torch.cat([first, *steps], dim=1)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
@pytest.mark.parametrize("attention", ["fused", "math"])
@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.8, 20)])
@pytest.mark.parametrize("prompt_len,new", [(1, 10), (6, 9), (6, 30), (20, 8)])
def test_cache_and_no_cache_pick_the_same_tokens(attention, temperature, top_k, prompt_len, new, arch):
    # (6, 30) and (20, 8) run past max_seq_len = 16: the sliding-window fallback.
    model = make_model(attention=attention, arch=arch)
    ids = prompt_ids(prompt_len)
    a = generate(model, ids, new, temperature=temperature, top_k=top_k, generator=gen(7), use_cache=True)
    b = generate(model, ids, new, temperature=temperature, top_k=top_k, generator=gen(7), use_cache=False)
    assert a.shape == (1, prompt_len + new)
    assert torch.equal(a[:, :prompt_len], ids)
    assert torch.equal(a, b)


def test_context_overflow_keeps_generating():
    model = make_model(max_seq_len=8)
    out = generate(model, prompt_ids(5), 40, temperature=1.0, generator=gen(0))
    assert out.shape == (1, 45)
    assert int(out.max()) < model.cfg.vocab_size


# ----------------------------------------------------------------------------- randomness

def test_same_seed_same_text_different_seed_different(tokenizer):
    model = make_model(vocab_size=tokenizer.get_vocab_size())
    kw = dict(max_new_tokens=30, temperature=1.0, top_k=None, device="cpu")
    a = sample_text(model, tokenizer, "the cat", seed=1, **kw)
    b = sample_text(model, tokenizer, "the cat", seed=1, **kw)
    c = sample_text(model, tokenizer, "the cat", seed=2, **kw)
    assert a == b
    assert a != c
    assert a.startswith("the cat") and c.startswith("the cat")


def test_global_rng_untouched():
    model = make_model()
    before = torch.get_rng_state()
    generate(model, prompt_ids(4), 10, temperature=1.0, generator=gen(3))
    generate(model, prompt_ids(4), 10, temperature=1.0)  # no generator: a private one
    generate(model, prompt_ids(4), 10, temperature=0.0)
    assert torch.equal(torch.get_rng_state(), before)


def test_greedy_is_deterministic_without_generator():
    model = make_model()
    assert torch.equal(generate(model, prompt_ids(3), 12, temperature=0.0),
                       generate(model, prompt_ids(3), 12, temperature=0.0))


def test_training_mode_restored():
    model = make_model()
    model.train()
    generate(model, prompt_ids(3), 4, generator=gen(0))
    assert model.training
    model.eval()
    generate(model, prompt_ids(3), 4, generator=gen(0))
    assert not model.training


# ----------------------------------------------------------------------------- vocabulary

def force_token(model: GPT, rows: slice | int) -> None:
    """Make `rows` of the (tied) output layer win by a huge margin at every position."""
    with torch.no_grad():
        direction = torch.randn(model.cfg.d_model, generator=gen(5))
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(direction)  # ln_f's output is now `direction` everywhere
        model.wte.weight[rows] = 100.0 * direction


def test_padded_rows_never_sampled():
    model = make_model(vocab_size=300)
    assert model.cfg.padded_vocab_size == 320
    force_token(model, slice(300, None))
    logits, _ = model(prompt_ids(4))
    assert int(logits[0, -1].argmax()) >= 300  # unmasked, the padding would win
    for temperature in (0.0, 1.0, 5.0):
        out = generate(model, prompt_ids(4), 30, temperature=temperature, top_k=None, generator=gen(1))
        assert int(out[:, 4:].max()) < 300


def test_stops_at_eot(tokenizer):
    model = make_model(vocab_size=tokenizer.get_vocab_size())
    eot = tokenizer.token_to_id(EOT)
    force_token(model, eot)
    out = generate(model, prompt_ids(4), 20, temperature=1.0, generator=gen(0), eot_id=eot)
    assert out.shape == (1, 5) and int(out[0, -1]) == eot
    assert generate(model, prompt_ids(4), 20, temperature=1.0, generator=gen(0)).shape == (1, 24)
    text = sample_text(model, tokenizer, "the dog", 20, 1.0, 50, seed=0, device="cpu")
    assert text == "the dog"  # the end-of-text token itself is not part of the text


def test_empty_prompt_starts_from_eot(tokenizer):
    model = make_model(vocab_size=tokenizer.get_vocab_size())
    text = sample_text(model, tokenizer, "", 10, 1.0, 50, seed=0, device="cpu")
    assert isinstance(text, str) and text


# ----------------------------------------------------------------------------- tui-lm sample

def make_run(tmp_path: Path, tokenizer) -> Path:
    """A run folder in the layout the trainer writes: run.toml, models/{model.safetensors, config.toml, tokenizer.json}."""
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    model = make_model(vocab_size=tokenizer.get_vocab_size())
    cfg = RunConfig(model=model.cfg)
    write_toml(cfg, run / "run.toml")
    write_toml(cfg, run / "models" / "config.toml")
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(run / "models" / "model.safetensors"))
    tokenizer.save(str(run / "models" / "tokenizer.json"))
    return run


def test_sample_command(tmp_path, tokenizer, capsys):
    from tui_lm.commands.sample import main

    run = make_run(tmp_path, tokenizer)
    args = [str(run), "--prompt", "the king", "--temperature", "0.9", "--seed", "3", "--device", "cpu"]
    assert main(args + ["--max-new-tokens", "12"]) == 0
    first = capsys.readouterr().out
    assert main(args + ["--max_new_tokens", "12", "--top-k", "50"]) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("the king")
    greedy = [str(run), "--prompt", "the king", "--temperature", "0", "--max-new-tokens", "20"]
    assert main(greedy) == 0
    cached = capsys.readouterr().out
    assert main(greedy + ["--no-cache"]) == 0
    assert capsys.readouterr().out == cached


def test_sample_command_errors(tmp_path, tokenizer, capsys):
    from tui_lm.commands.sample import main

    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("tui-lm sample: error: run folder")
    run = make_run(tmp_path, tokenizer)
    assert main([str(run), "--temperature", "-1"]) == 2
    assert "tui-lm sample: error: --temperature" in capsys.readouterr().err
    assert main([str(run), "--bogus"]) == 2
