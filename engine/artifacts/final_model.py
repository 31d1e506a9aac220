"""The final model of a run (`models/`) and loading a model to use it (sample, export).

`models/` holds `model.safetensors` (the tied embedding stored once),
`config.toml`, `tokenizer.json` and `checksums.json` (xxHash3-128 of each
file, checked on load). `load_model` takes the final model, or a given / the
newest good checkpoint when training has not finished, and refuses weights,
config and tokenizer that do not belong together (another run's checkpoint,
an edited config.toml) with one line instead of garbage output or a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save

from engine.config.loading import apply_overrides, read_toml
from engine.config.run_config import RunConfig, validate
from engine.errors import CheckpointError, ConfigError, FileError, short_reason
from engine.files import HASH_NAME, ensure_folder, hash_bytes, read_json_object, write_bytes, write_json
from engine.runs.checkpoints import (
    CONFIG,
    MODEL,
    MODEL_PARTS,
    load_checkpoint,
    load_latest_checkpoint,
    read_sidecar,
    sidecar_path,
)
from engine.runs.layout import MODELS, TOKENIZER

CHECKSUMS = "checksums.json"


def save_final_model(run_dir: Path, model: torch.nn.Module, cfg: RunConfig) -> Path:
    """models/: weights as safetensors, config, the run's tokenizer and their checksums (hashed from memory)."""
    out = ensure_folder(Path(run_dir) / MODELS)
    tokenizer_path = Path(run_dir) / TOKENIZER
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    try:
        tokenizer = Path(tokenizer_path).read_bytes()
    except OSError as e:
        raise FileError(f"cannot read {tokenizer_path}: {e.strerror}") from None
    sums = {
        "model.safetensors": write_bytes(out / "model.safetensors", save(state)),
        "config.toml": write_bytes(out / "config.toml", cfg.to_toml().encode("utf-8")),
        "tokenizer.json": write_bytes(out / "tokenizer.json", tokenizer),
    }
    write_json(out / CHECKSUMS, {"algorithm": HASH_NAME, "files": sums})
    return out


@dataclass
class LoadedModel:
    model: torch.nn.Module  # engine.model.gpt.GPT in eval mode
    config: RunConfig
    tokenizer: Any  # tokenizers.Tokenizer
    source: Path  # the weights file it came from
    from_checkpoint: bool  # True when the run had no final model
    tokenizer_path: Path


def _config_from(values: Any, where: str) -> RunConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: the config is not a table of settings")
    cfg = RunConfig()
    apply_overrides(cfg, values, where)
    validate(cfg)
    return cfg


def _read_verified(path: Path, sums: dict[str, Any]) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    expected = sums.get(path.name)
    if isinstance(expected, str) and hash_bytes(data) != expected:
        raise CheckpointError(f"{path} is corrupt (its checksum does not match the one recorded when it was saved)")
    return data


def _final_model(run_dir: Path) -> tuple[RunConfig, dict[str, torch.Tensor], Path, dict[str, Any]]:
    models = run_dir / MODELS
    sums: dict[str, Any] = {}
    if (models / CHECKSUMS).is_file():
        try:
            sums = read_json_object(models / CHECKSUMS).get("files") or {}
        except FileError as e:
            raise CheckpointError(str(e)) from None
        if not isinstance(sums, dict):
            raise CheckpointError(f"{models / CHECKSUMS} holds JSON of the wrong shape")
    weights = models / "model.safetensors"
    blob = _read_verified(weights, sums)
    _read_verified(models / "config.toml", sums)
    cfg = _config_from(read_toml(models / "config.toml"), str(models / "config.toml"))
    try:
        state = load_safetensors(blob)
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"{weights} is corrupt or unreadable ({short_reason(e)})") from None
    if "wte.weight" in state:
        state["lm_head.weight"] = state["wte.weight"]
    return cfg, state, weights, sums


def _check_fits(cfg: RunConfig, state: dict[str, torch.Tensor], source: Path, config_name: str) -> None:
    """Refuse a config that does not describe these weights before allocating anything."""
    from engine.model.gpt import GPT

    m = cfg.model
    wte = state.get("wte.weight")
    blocks = {k.split(".")[1] for k in state if k.startswith("h.")}
    if (not isinstance(wte, torch.Tensor) or wte.dim() != 2 or tuple(wte.shape) != (m.padded_vocab_size, m.d_model)
            or len(blocks) != m.num_layers):
        got = tuple(wte.shape) if isinstance(wte, torch.Tensor) else None
        raise CheckpointError(
            f"{config_name} does not describe the weights in {source} (embedding {got}, {len(blocks)} blocks; "
            f"the config says ({m.padded_vocab_size}, {m.d_model}) and {m.num_layers} blocks)")
    with torch.device("meta"):
        expected = GPT(m).state_dict()
    for key, t in expected.items():
        have = state.get(key)
        if not isinstance(have, torch.Tensor) or have.shape != t.shape:
            shape = tuple(have.shape) if isinstance(have, torch.Tensor) else "missing"
            raise CheckpointError(f"{config_name} does not describe the weights in {source} "
                                  f"({key}: {shape}, expected {tuple(t.shape)})")


def load_model(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu",
               warn: Callable[[str], None] = lambda _: None) -> LoadedModel:
    """The run's final model, or a given / the newest good checkpoint when there is none.

    Newer checkpoints that fail verification are reported through `warn`.
    """
    from tokenizers import Tokenizer

    from engine.model.gpt import GPT

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    expected_tok: str | None = None
    if checkpoint is None and (run_dir / MODELS / "model.safetensors").is_file():
        cfg, state, source, sums = _final_model(run_dir)
        config_name, from_ckpt = str(run_dir / MODELS / "config.toml"), False
        expected_tok = sums.get("tokenizer.json") if isinstance(sums.get("tokenizer.json"), str) else None
    else:
        if checkpoint is not None:
            source = Path(checkpoint)
            data = load_checkpoint(source, parts=MODEL_PARTS)
        else:
            source, data = load_latest_checkpoint(run_dir, warn=warn, parts=MODEL_PARTS)
        if sidecar_path(source).is_file():
            expected_tok = read_sidecar(source).get("tokenizer_" + HASH_NAME)
        cfg = _config_from(data[CONFIG.key], f"the config inside {source}")
        state, from_ckpt, config_name = data[MODEL.key], True, f"the config inside {source}"
    tok_file = run_dir / MODELS / "tokenizer.json"
    if not tok_file.is_file():
        tok_file = run_dir / TOKENIZER
    if not tok_file.is_file():
        raise CheckpointError(f"no tokenizer.json in {run_dir / MODELS} or {run_dir}")
    try:
        tok_bytes = tok_file.read_bytes()
        tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
    except Exception as e:  # OSError, UnicodeDecodeError, or the tokenizers parser's own exception
        raise CheckpointError(f"tokenizer {tok_file} is damaged or not a tokenizer ({short_reason(e)})") from None
    n_tokens = tokenizer.get_vocab_size()
    if isinstance(expected_tok, str) and hash_bytes(tok_bytes) != expected_tok:
        raise CheckpointError(f"{source} was trained with another tokenizer than {tok_file} "
                              "(it comes from another run, or the tokenizer was replaced)")
    if n_tokens != cfg.model.vocab_size:
        raise CheckpointError(f"{source} was trained with a {cfg.model.vocab_size:,}-token vocabulary but "
                              f"{tok_file} has {n_tokens:,} tokens: the weights come from another run")
    _check_fits(cfg, state, source, config_name)
    model = GPT(cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit its config: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    return LoadedModel(model, cfg, tokenizer, source, from_ckpt, tok_file)
