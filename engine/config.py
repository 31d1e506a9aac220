"""Run configuration: plain dataclasses, presets, TOML files and validation.

A run is described by one `RunConfig` with four sections (`model`, `train`,
`data`, `run`) that map one-to-one onto the tables of a `run.toml` file.
Values are merged in this order, later wins: dataclass defaults < preset <
run file < command-line flags. `validate()` checks the merged result and
raises `ConfigError` naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from engine.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTENTION = ("fused", "math")
TOKENIZERS = ("bpe", "gpt2")
COMPILE = ("auto", "on", "off")
ARCHS = ("gpt2", "modern")
OPTIMIZERS = ("adamw", "muon")
VOCAB_MULTIPLE = 64  # embedding rows are padded to this for fast matmuls


@dataclass
class ModelConfig:
    """Shape of the decoder-only GPT."""

    d_model: int = 256  # width of the residual stream
    num_heads: int = 4  # attention heads; d_model must divide evenly
    num_layers: int = 4  # transformer blocks
    d_ff: int = 1024  # hidden width of each block's MLP
    max_seq_len: int = 256  # context length (learned positions)
    dropout: float = 0.1  # on embeddings, attention output and MLP output
    vocab_size: int = 50257  # tokenizer size; set from the trained tokenizer
    attention: str = "fused"  # "fused": scaled_dot_product_attention; "math": explicit matrix
    grad_checkpointing: bool = False  # recompute each block in backward to save memory
    layer_norm_eps: float = 1e-5  # GPT-2's value, so exported models match exactly (RMSNorm's eps in "modern")
    # "gpt2": the 2019 block (learned positions, LayerNorm, GELU MLP, biases), exports to GPT2LMHeadModel;
    # "modern": RoPE, RMSNorm, SwiGLU, QK-norm, no biases (lower perplexity), exports to Qwen3ForCausalLM.
    arch: str = "gpt2"
    tie_embeddings: bool = True  # share the input embedding with the output head (False: a separate head)
    rope_theta: float = 10000.0  # rotary base wavelength ("modern" only)

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass
class TrainConfig:
    """Optimisation and loop settings; defaults are the seed project's."""

    epochs: int = 20  # passes over the training split (ignored when max_steps > 0)
    max_steps: int = 0  # optimizer steps to run; 0 = derive from epochs
    batch_size: int = 32  # sequences per optimizer step, over all ranks and micro-steps
    grad_accum_steps: int = 1  # micro-steps per optimizer step; batch_size / grad_accum per forward
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 1000  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only
    # "adamw" for every weight, or "muon": Muon (orthogonalised momentum) for the blocks' 2-D
    # weights and AdamW at train.lr for embeddings, head, norms and biases.
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # Muon's peak LR; the schedule scales it like train.lr (same warmup and decay)
    muon_momentum: float = 0.95  # Muon's Nesterov momentum
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    precision: str = "auto"  # auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU
    compile: str = "auto"  # torch.compile the model: auto = on for CUDA, off elsewhere
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", "mps"
    seed: int = 1337
    log_interval: int = 10  # steps between logged training metrics
    eval_interval: int = 250  # steps between validation runs; 0 = only at the end
    eval_batches: int = 50  # batches per periodic validation; 0 = the whole split
    save_interval: int = 500  # steps between checkpoints; 0 = only on pause/stop/end
    keep_checkpoints: int = 3  # newest checkpoints kept, besides the best one
    sample_tokens: int = 48  # tokens generated from sample_prompt at each eval; 0 = off
    sample_prompt: str = "The history of"


@dataclass
class DataConfig:
    """Where the text comes from and how it is tokenized."""

    dataset: str = "wikitext-2"  # wikitext-2, wikitext-103 (-raw), a folder or a .txt file
    max_samples: int = 0  # limit training documents/lines; 0 = all
    tokenizer: str = "bpe"  # "bpe": trained on the training split; "gpt2": GPT-2's own (hub)
    vocab_size: int = 50257  # target vocabulary of the trained BPE
    valid_fraction: float = 0.05  # share of a single text file carved off for validation


@dataclass
class RunSection:
    """Where the run lives and what it started from."""

    preset: str = "tiny"  # preset the model section started from ("" = none)
    out_dir: str = ""  # parent folder of run folders; "" = lm_<dataset>
    run_name: str = ""  # run folder name; "" = <preset>-<timestamp>


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "run": RunSection}


# ----------------------------------------------------------------------------- presets

def presets_dir() -> Path:
    """The preset folder: inside the package when installed, top level in a checkout."""
    packaged = Path(__file__).parent / "presets"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def load_preset(name: str) -> dict[str, dict[str, Any]]:
    path = presets_dir() / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"preset {name!r} does not exist; choose one of: {', '.join(preset_names())}"
        )
    return read_toml(path)


# ----------------------------------------------------------------------------- TOML + merging

def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def _check_type(where: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to the field's type, or raise naming the field."""
    tp = annotation
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{where} must be {tp.__name__}, got {type(value).__name__} {value!r}"
    )


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str) -> None:
    """Set values from a nested {section: {key: value}} mapping, checking names and types."""
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; allowed: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        target = getattr(cfg, section)
        types_ = typing.get_type_hints(type(target))
        for key, value in values.items():
            if key not in types_:
                raise ConfigError(
                    f"{source}: unknown key {section}.{key}; allowed in [{section}]: "
                    f"{', '.join(types_)}"
                )
            setattr(target, key, _check_type(f"{source}: {section}.{key}", value, types_[key]))


def build_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> RunConfig:
    """Merge defaults < preset < run file < overrides, then validate."""
    cfg = RunConfig()
    file_values = read_toml(file) if file else {}
    chosen = preset or file_values.get("run", {}).get("preset") or (None if file else "tiny")
    if chosen:
        apply_overrides(cfg, load_preset(chosen), f"preset {chosen}")
        cfg.run.preset = chosen
    if file_values:
        apply_overrides(cfg, file_values, str(file))
    if preset:
        cfg.run.preset = preset
    if overrides:
        apply_overrides(cfg, overrides, "command line")
    validate(cfg)
    return cfg


def write_toml(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(cfg.to_toml())


# ----------------------------------------------------------------------------- validation

def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validation_errors(cfg: RunConfig) -> dict[str, str]:
    """Every problem in `cfg` as {"section.field": message}; empty when valid.

    The dashboard calls this on each keystroke to mark fields; `validate`
    raises the first one.
    """
    m, t, d = cfg.model, cfg.train, cfg.data
    checks: list[tuple[str, bool, str]] = [
        ("model.d_model", m.d_model > 0, f"model.d_model must be a positive integer, got {m.d_model}"),
        ("model.num_heads", m.num_heads > 0, f"model.num_heads must be a positive integer, got {m.num_heads}"),
        ("model.d_model", m.num_heads <= 0 or m.d_model % m.num_heads == 0,
         f"model.d_model ({m.d_model}) must be divisible by model.num_heads ({m.num_heads})"),
        ("model.num_layers", m.num_layers > 0, f"model.num_layers must be a positive integer, got {m.num_layers}"),
        ("model.d_ff", m.d_ff > 0, f"model.d_ff must be a positive integer, got {m.d_ff}"),
        ("model.max_seq_len", m.max_seq_len > 0,
         f"model.max_seq_len must be a positive integer, got {m.max_seq_len}"),
        ("model.dropout", 0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}"),
        ("model.vocab_size", m.vocab_size > 0, f"model.vocab_size must be positive, got {m.vocab_size}"),
        ("model.attention", m.attention in ATTENTION,
         f"model.attention must be one of {', '.join(ATTENTION)}, got {m.attention!r}"),
        ("model.arch", m.arch in ARCHS, f"model.arch must be one of {', '.join(ARCHS)}, got {m.arch!r}"),
        ("model.rope_theta", m.rope_theta > 0, f"model.rope_theta must be positive, got {m.rope_theta}"),
        ("model.num_heads", m.arch != "modern" or m.num_heads <= 0 or m.d_model % m.num_heads
         or (m.d_model // m.num_heads) % 2 == 0,
         f"model.arch modern needs an even head size (d_model / num_heads), got {m.d_model} / {m.num_heads}"),
        ("model.layer_norm_eps", m.layer_norm_eps > 0, f"model.layer_norm_eps must be positive, got {m.layer_norm_eps}"),
        ("train.epochs", t.epochs > 0 or t.max_steps > 0,
         f"train.epochs must be a positive integer (or set train.max_steps), got {t.epochs}"),
        ("train.max_steps", t.max_steps >= 0, f"train.max_steps must be 0 (use epochs) or positive, got {t.max_steps}"),
        ("train.batch_size", t.batch_size > 0, f"train.batch_size must be a positive integer, got {t.batch_size}"),
        ("train.grad_accum_steps", t.grad_accum_steps > 0,
         f"train.grad_accum_steps must be a positive integer, got {t.grad_accum_steps}"),
        ("train.batch_size", t.grad_accum_steps <= 0 or t.batch_size % t.grad_accum_steps == 0,
         f"train.batch_size ({t.batch_size}) must be divisible by train.grad_accum_steps ({t.grad_accum_steps})"),
        ("train.lr", t.lr > 0, f"train.lr must be positive, got {t.lr}"),
        ("train.warmup_steps", t.warmup_steps >= 0, f"train.warmup_steps must be 0 or positive, got {t.warmup_steps}"),
        ("train.min_lr_ratio", 0.0 <= t.min_lr_ratio <= 1.0,
         f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}"),
        ("train.weight_decay", t.weight_decay >= 0, f"train.weight_decay must be 0 or positive, got {t.weight_decay}"),
        ("train.optimizer", t.optimizer in OPTIMIZERS,
         f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}"),
        ("train.muon_lr", t.muon_lr > 0, f"train.muon_lr must be positive, got {t.muon_lr}"),
        ("train.muon_momentum", 0.0 <= t.muon_momentum < 1.0,
         f"train.muon_momentum must be in [0, 1), got {t.muon_momentum}"),
        ("train.beta1", 0.0 <= t.beta1 < 1.0, f"train.beta1 must be in [0, 1), got {t.beta1}"),
        ("train.beta2", 0.0 <= t.beta2 < 1.0, f"train.beta2 must be in [0, 1), got {t.beta2}"),
        ("train.grad_clip", t.grad_clip >= 0, f"train.grad_clip must be 0 (off) or positive, got {t.grad_clip}"),
        ("train.precision", t.precision in PRECISIONS,
         f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}"),
        ("train.compile", t.compile in COMPILE, f"train.compile must be one of {', '.join(COMPILE)}, got {t.compile!r}"),
        ("train.device", _device_ok(t.device),
         f"train.device must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}"),
        ("train.log_interval", t.log_interval > 0, f"train.log_interval must be a positive integer, got {t.log_interval}"),
        ("train.eval_interval", t.eval_interval >= 0, f"train.eval_interval must be 0 (end only) or positive, got {t.eval_interval}"),
        ("train.eval_batches", t.eval_batches >= 0, f"train.eval_batches must be 0 (whole split) or positive, got {t.eval_batches}"),
        ("train.save_interval", t.save_interval >= 0, f"train.save_interval must be 0 or positive, got {t.save_interval}"),
        ("train.keep_checkpoints", t.keep_checkpoints > 0,
         f"train.keep_checkpoints must be at least 1, got {t.keep_checkpoints}"),
        ("train.sample_tokens", t.sample_tokens >= 0, f"train.sample_tokens must be 0 (off) or positive, got {t.sample_tokens}"),
        ("data.dataset", bool(d.dataset.strip()), "data.dataset must not be empty"),
        ("data.max_samples", d.max_samples >= 0, f"data.max_samples must be 0 (all) or positive, got {d.max_samples}"),
        ("data.tokenizer", d.tokenizer in TOKENIZERS,
         f"data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {d.tokenizer!r}"),
        ("data.vocab_size", 256 < d.vocab_size <= 2**20,
         f"data.vocab_size must be between 257 and 1048576, got {d.vocab_size}"),
        ("data.valid_fraction", 0.0 < d.valid_fraction < 0.5,
         f"data.valid_fraction must be in (0, 0.5), got {d.valid_fraction}"),
        ("run.run_name", "/" not in cfg.run.run_name and cfg.run.run_name not in (".", ".."),
         f"run.run_name must be a plain folder name, got {cfg.run.run_name!r}"),
    ]
    errors: dict[str, str] = {}
    for key, ok, message in checks:
        if not ok and key not in errors:
            errors[key] = message
    return errors


def _device_ok(device: str) -> bool:
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, index = device.partition(":")
    return head == "cuda" and index.isdigit()


def validate(cfg: RunConfig) -> None:
    errors = validation_errors(cfg)
    if errors:
        raise ConfigError(next(iter(errors.values())))
