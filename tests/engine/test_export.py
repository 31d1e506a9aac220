"""Tests for engine.artifacts.export (Hugging Face GPT-2 / Qwen3 export) and the `tui-lm export` command.

The export is checked by loading it with transformers itself: weights load
with no missing or unexpected keys, logits equal the engine's on every real
vocabulary row, and AutoTokenizer encodes like the run's tokenizer. Skipped
when transformers is not installed (it is a test extra).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

from engine.artifacts.export import export_hf
from engine.config.loading import write_toml
from engine.config.run_config import ModelConfig, RunConfig
from engine.data.token_cache import EOT, train_bpe
from engine.model.gpt import GPT
from engine.model.sampling import generate

WORDS = "the cat dog sat on a mat and ran to house river king history of music old new café 日本".split()
SENTENCES = [" The history of the cat, naïve café 日本!", "the king ran\n\nto  the river", "x<|endoftext|>y"]


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    return train_bpe(lines, 300)


@pytest.fixture(scope="module")
def tokenizer_path(tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def make_model(vocab_size: int, seed: int = 0, arch: str = "gpt2", tied: bool = True) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, num_heads=4, num_layers=2, d_ff=80, max_seq_len=24,
                      dropout=0.0, vocab_size=vocab_size, arch=arch, tie_embeddings=tied)
    model = GPT(cfg)
    with torch.no_grad():  # every weight non-trivial, so a swapped or untransposed one shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def load_hf(out: Path, cls=transformers.GPT2LMHeadModel):
    model, info = cls.from_pretrained(out, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(kind), f"{kind}: {info[kind]}"
    return model.eval()


def assert_same_logits(model: GPT, hf, vocab: int) -> None:
    ids = torch.randint(0, vocab, (2, model.cfg.max_seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    assert theirs.shape == (2, model.cfg.max_seq_len, vocab)
    torch.testing.assert_close(theirs, ours[..., :vocab], atol=1e-4, rtol=1e-4)


def test_export_loads_in_transformers(tmp_path, tokenizer, tokenizer_path):
    vocab = tokenizer.get_vocab_size()
    model = make_model(vocab)
    assert model.cfg.padded_vocab_size != vocab  # the padding is exercised
    out = export_hf(model, tokenizer_path, tmp_path / "hf")

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("transformer.wte.weight").shape == (vocab, 32)
        assert f.get_tensor("transformer.h.0.attn.c_attn.weight").shape == (32, 96)  # (in, out)
    assert "lm_head.weight" not in keys
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == vocab and config["n_inner"] == 80
    assert config["eos_token_id"] == config["bos_token_id"] == tokenizer.token_to_id(EOT)

    hf = load_hf(out)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied
    assert_same_logits(model, hf, vocab)


@pytest.mark.parametrize("arch,tied", [("modern", True), ("modern", False), ("gpt2", False)])
def test_export_of_other_layouts_loads_with_the_same_logits(tmp_path, tokenizer, tokenizer_path, arch, tied):
    # "modern" goes to Qwen3ForCausalLM: RoPE, RMSNorm, SwiGLU, QK-norm, no biases.
    vocab = tokenizer.get_vocab_size()
    model = make_model(vocab, arch=arch, tied=tied)
    out = export_hf(model, tokenizer_path, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied
    hf = load_hf(out, transformers.AutoModelForCausalLM)
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if arch == "modern" else "GPT2LMHeadModel")
    assert (hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()) is tied
    assert_same_logits(model, hf, vocab)


@pytest.mark.parametrize("arch", ["gpt2", "modern"])
def test_hf_greedy_generation_matches(tmp_path, tokenizer, tokenizer_path, arch):
    # With "modern", HF's cache applies RoPE at offset positions, as engine.model.sampling does.
    vocab = tokenizer.get_vocab_size()
    model = make_model(vocab, seed=1, arch=arch)
    hf = load_hf(export_hf(model, tokenizer_path, tmp_path / "hf"), transformers.AutoModelForCausalLM)
    ids = torch.tensor([tokenizer.encode("the cat sat").ids])
    ours = generate(model, ids, 10, temperature=0.0)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours, theirs)


def test_auto_tokenizer_matches(tmp_path, tokenizer, tokenizer_path):
    out = export_hf(make_model(tokenizer.get_vocab_size()), tokenizer_path, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert len(hf_tok) == tokenizer.get_vocab_size()
    assert hf_tok.eos_token == hf_tok.bos_token == EOT
    assert hf_tok.eos_token_id == tokenizer.token_to_id(EOT)
    assert hf_tok.model_max_length == 24
    for text in SENTENCES:
        ids = tokenizer.encode(text).ids
        assert hf_tok(text)["input_ids"] == ids
        assert hf_tok.decode(ids) == tokenizer.decode(ids, skip_special_tokens=False)


# ----------------------------------------------------------------------------- tui-lm export

def make_run(tmp_path: Path, tokenizer, final: bool = True, arch: str = "gpt2") -> tuple[Path, GPT]:
    """A run folder by hand: run.toml, models/{model.safetensors, config.toml, tokenizer.json},
    or with final=False a snapshots/step_0000300.pt checkpoint instead of the model files."""
    from engine.runs.checkpoints import MODEL_PARTS, checkpoint_path, save_checkpoint

    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    model = make_model(tokenizer.get_vocab_size(), seed=2, arch=arch)
    cfg = RunConfig(model=model.cfg)
    write_toml(cfg, run / "run.toml")
    tokenizer.save(str(run / "models" / "tokenizer.json"))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    if final:
        write_toml(cfg, run / "models" / "config.toml")
        save_file(state, str(run / "models" / "model.safetensors"))
    else:
        save_checkpoint(checkpoint_path(run, 300), {"model": model.state_dict(), "config": cfg.to_dict()},
                        {"step": 300}, parts=MODEL_PARTS)
    return run, model


@pytest.mark.parametrize("final,arch", [(True, "gpt2"), (False, "gpt2"), (True, "modern")])
def test_export_command(tmp_path, tokenizer, capsys, final, arch):
    from tui_lm.commands.export import main
    run, model = make_run(tmp_path, tokenizer, final=final, arch=arch)
    out = tmp_path / "hf"
    assert main([str(run), "--format", "hf", str(out)]) == 0
    printed = capsys.readouterr().out
    if final:
        assert "no final model" not in printed
    else:
        assert f"no final model in {run / 'models'}; exporting checkpoint snapshots/step_0000300.pt" in printed
    hf_class = "Qwen3ForCausalLM" if arch == "modern" else "GPT2LMHeadModel"  # the class the line names is the one that loads
    assert f"(Hugging Face {hf_class}, " in printed
    hf = load_hf(out, transformers.AutoModelForCausalLM)
    assert type(hf).__name__ == hf_class
    assert_same_logits(model, hf, tokenizer.get_vocab_size())
    assert transformers.AutoTokenizer.from_pretrained(out)("the cat")["input_ids"] == tokenizer.encode("the cat").ids


def test_export_command_errors(tmp_path, tokenizer, capsys):
    from tui_lm.commands.export import main
    assert main([str(tmp_path / "missing"), "--format", "hf", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("tui-lm export: error: run folder")
    run, _ = make_run(tmp_path, tokenizer)
    assert main([str(run), "--format", "onnx", str(tmp_path / "o")]) == 2
    assert "tui-lm export: error: unknown format 'onnx'" in capsys.readouterr().err
    assert main([str(run), "--format", "hf", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "tui-lm export: error: checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--format", "hf", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("tui-lm export: error: ")
