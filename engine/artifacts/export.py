"""Export a trained GPT as a Hugging Face folder that loads with no custom code.

`export_hf` writes what `AutoModelForCausalLM.from_pretrained(out)` and
`AutoTokenizer.from_pretrained(out)` read: config.json, model.safetensors
under the Hugging Face class's key names, tokenizer.json and its two small
config files. Everything is plain JSON and safetensors, so exporting needs no
`transformers` install.

Decisions:
- `arch = "gpt2"` exports to GPT2LMHeadModel. The engine's layers follow
  GPT-2's layout, so names map one-to-one under a `transformer.` prefix.
  GPT-2's Conv1D keeps weights as (in, out) where nn.Linear keeps (out, in),
  so the four projection matrices are transposed.
- `arch = "modern"` exports to Qwen3ForCausalLM, the standard class with
  exactly RoPE (rotate_half layout) + RMSNorm + SwiGLU + per-head QK RMSNorm
  and no biases; keys are renamed, no tensor changes.
- A tied lm_head.weight is not written: config.json says
  tie_word_embeddings, and `save_pretrained` writes exactly the same key set.
- The embedding (and an untied head) is sliced to the real vocabulary (the
  padded rows only exist for fast matmuls). The exported model then has
  exactly len(tokenizer) outputs, so Hugging Face `generate` cannot produce
  ids the tokenizer cannot decode; its logits equal the engine's on every
  real row.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save

from engine.config.costs import swiglu_hidden
from engine.errors import UserError
from engine.files import copy_file, ensure_folder, write_bytes, write_json
from engine.model.gpt import GPT

EOT = "<|endoftext|>"
# Linear layers whose weights GPT-2 stores transposed (Conv1D).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# The Hugging Face class each architecture exports to (config.json's "architectures").
HF_CLASS = {"gpt2": "GPT2LMHeadModel", "modern": "Qwen3ForCausalLM"}


def _hf_name(name: str, arch: str) -> str:
    """The Hugging Face key of an engine parameter."""
    if name == "lm_head.weight":
        return name
    if arch == "gpt2":
        return f"transformer.{name}"
    for ours, theirs in _QWEN3_NAMES:
        name = name.replace(ours, theirs)
    return f"model.{name}"


# Engine -> Qwen3 name pieces, applied in order.
_QWEN3_NAMES = (("wte.", "embed_tokens."), ("ln_f.", "norm."), ("h.", "layers."), (".norm_1.", ".input_layernorm."),
                (".norm_2.", ".post_attention_layernorm."), (".attn.", ".self_attn."))


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face names, real vocabulary only, as contiguous CPU tensors."""
    cfg = model.cfg
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # tied to wte; the config's tie_word_embeddings restores it
        t = t.detach().to("cpu", torch.float32)
        if name in ("wte.weight", "lm_head.weight"):
            t = t[:cfg.vocab_size]
        elif cfg.arch == "gpt2" and name.endswith(_CONV1D):
            t = t.t()
        # clone: safetensors refuses tensors that share storage, and slices/views do.
        out[_hf_name(name, cfg.arch)] = t.contiguous().clone()
    return out


def hf_config(model: GPT, eot_id: int) -> dict:
    cfg = model.cfg
    common = {
        "vocab_size": cfg.vocab_size,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if cfg.arch == "modern":
        return {
            "model_type": "qwen3",
            "architectures": [HF_CLASS["modern"]],
            "hidden_size": cfg.d_model,
            "intermediate_size": swiglu_hidden(cfg.d_ff),
            "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_heads,
            "head_dim": cfg.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": cfg.max_seq_len,
            "rms_norm_eps": cfg.layer_norm_eps,
            # Both spellings: transformers >= 5 reads rope_parameters, older releases rope_theta.
            "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": False,
            "attention_dropout": cfg.dropout,
            "use_sliding_window": False,
            **common,
        }
    return {
        "model_type": "gpt2",
        "architectures": [HF_CLASS["gpt2"]],
        "n_positions": cfg.max_seq_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": cfg.d_ff,
        "activation_function": "gelu_new",  # tanh GELU, as nn.GELU(approximate="tanh")
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        **common,
    }


def export_hf(model: GPT, tokenizer_path: Path, out_dir: Path) -> Path:
    """Write a Hugging Face folder (GPT-2 or Qwen3) for `model` and its tokenizer.json; returns `out_dir`."""
    from tokenizers import Tokenizer

    tokenizer_path, out_dir = Path(tokenizer_path), Path(out_dir)
    if not tokenizer_path.is_file():
        raise UserError(f"tokenizer {tokenizer_path} does not exist")
    tok = Tokenizer.from_file(str(tokenizer_path))
    eot_id = tok.token_to_id(EOT)
    if eot_id is None:
        raise UserError(f"tokenizer {tokenizer_path} has no {EOT} token")
    # More model rows than tokens is harmless (they are never produced); fewer is not.
    if tok.get_vocab_size(with_added_tokens=True) > model.cfg.vocab_size:
        raise UserError(
            f"tokenizer {tokenizer_path} has {tok.get_vocab_size(with_added_tokens=True)} tokens "
            f"but the model was built for {model.cfg.vocab_size}"
        )
    ensure_folder(out_dir)

    # "format": "pt" is what transformers checks to accept a safetensors file as PyTorch weights.
    write_bytes(out_dir / "model.safetensors", save(hf_state_dict(model), metadata={"format": "pt"}))
    _write_json(out_dir / "config.json", hf_config(model, eot_id))
    _write_json(out_dir / "generation_config.json",
                {"bos_token_id": eot_id, "eos_token_id": eot_id})

    copy_file(tokenizer_path, out_dir / "tokenizer.json")
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    # PreTrainedTokenizerFast runs tokenizer.json exactly as written; GPT2TokenizerFast
    # may rebuild the pipeline from vocab + merges in newer transformers releases.
    _write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": model.cfg.max_seq_len,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    })
    _write_json(out_dir / "special_tokens_map.json", special)
    return out_dir


def _write_json(path: Path, data: dict) -> None:
    write_json(path, data)  # atomic, never through a symlink (engine.files)
