"""Run configuration: the settings, declared once, and their validation.

A run is described by one `RunConfig` with four sections (`model`, `train`,
`data`, `run`) that map one-to-one onto the tables of a `run.toml` file. Every
field is a setting declared with `engine.config.schema.setting(...)`: its help,
label, flags, bounds, form group and resume policy live on that one line, and
the CLI, the setup form, `tui-lm estimate`, TOML and validation are generated
from them (see engine/config/schema.py).

Presets, TOML files and the merge of defaults < preset < run file < flags are
in engine/config/loading.py. `validate()` checks a merged config and raises
`ConfigError` naming the field, the bad value and what is allowed. Nothing
here mutates a config it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from engine.config.levers import ATTENTION_BACKENDS, COMPILE_MODES, FP8_MODULES, FP8_RECIPES, FUSED_LOSSES, LEVER_AUTO
from engine.config.schema import Setting, setting, settings_of, value_problem
from engine.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTENTION = ("fused", "math")
TOKENIZERS = ("bpe", "gpt2")
COMPILE = ("auto", "on", "off")
ARCHS = ("gpt2", "modern")
OPTIMIZERS = ("adamw", "muon")
VOCAB_MULTIPLE = 64  # embedding rows are padded to this for fast matmuls
GPT2_VOCAB = 50257
MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy's generator take any non-negative 64-bit int


def _device_ok(device: str) -> bool:
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, index = device.partition(":")
    return head == "cuda" and index.isdigit()


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds of "90s", "45m", "2h" or "1.5h"; ValueError otherwise (a bare number is refused: which unit?)."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        seconds = float(value) * _DURATION_UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"not a duration: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"not a positive duration: {text!r}")
    return seconds


def _duration_ok(text: str) -> bool:
    if not text:
        return True
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def _plain_name(name: str) -> bool:
    return "/" not in name and "\\" not in name and name not in (".", "..")


# Form groups; "picker" settings are chosen by the setup screen's preset/profile picker.
MODEL, TRAINING, DATA, ADVANCED, PICKER = "Model", "Training", "Data and output", "Advanced", "picker"


@dataclass
class ModelConfig:
    """Shape of the decoder-only GPT."""

    d_model: int = setting(256, "width of the residual stream", gt=0, group=MODEL, estimate=True)
    num_heads: int = setting(4, "attention heads; must divide d_model", label="heads", gt=0, group=MODEL,
                             estimate=True)
    num_layers: int = setting(4, "transformer blocks", label="layers", gt=0, group=MODEL, estimate=True)
    d_ff: int = setting(1024, "hidden width of each block's MLP", label="d_ff (MLP width)", gt=0, group=MODEL,
                        estimate=True)
    max_seq_len: int = setting(256, "context length (learned positions)", label="sequence length",
                               flags=("--max_seq_len", "--seq_len"), unit="tokens", gt=0, group=MODEL,
                               estimate=True)
    dropout: float = setting(0.1, "dropout on embeddings, attention output and MLP output", ge=0, lt=1,
                             group=MODEL, estimate=True)
    # Not a user setting: the tokenizer's real size, filled in by the trainer
    # (engine.config.plan) and recorded in run.toml so a saved model can be rebuilt.
    # The vocabulary a user chooses is data.vocab_size.
    vocab_size: int = setting(50257, "the tokenizer's real vocabulary (set by the trainer)", gt=0, derived=True,
                              resume="ignore")
    attention: str = setting("fused", "fused: scaled_dot_product_attention; math: the explicit matrix",
                             choices=ATTENTION, group=ADVANCED, estimate=True)
    layer_norm_eps: float = setting(1e-5, "LayerNorm (RMSNorm in arch modern) epsilon; 1e-5 is GPT-2's, so "
                                          "exports match exactly",
                                    label="layer norm eps", gt=0, group=ADVANCED)
    arch: str = setting("gpt2", "block: gpt2 (GPT-2's, exports to GPT2LMHeadModel) or modern (RoPE, RMSNorm, "
                                "SwiGLU, QK-norm, no biases: lower perplexity; exports to Qwen3ForCausalLM)",
                        label="architecture", choices=ARCHS, group=MODEL, estimate=True)
    tie_embeddings: bool = setting(True, "share the input embedding with the output head (false: a separate "
                                         "head, more parameters, same FLOPs)", label="tie embeddings",
                                   group=MODEL, estimate=True)
    rope_theta: float = setting(10000.0, "rotary position base wavelength (arch modern only)", label="rope theta",
                                gt=0, group=ADVANCED)

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass
class TrainConfig:
    """Optimisation and loop settings; defaults are the seed project's."""

    epochs: int = setting(20, "passes over the training split (ignored when max_steps > 0)", ge=0,
                          resume="safe", group=TRAINING, estimate="time")
    max_steps: int = setting(0, "optimizer steps to run", label="max steps", ge=0, zero="use epochs",
                             unit="steps", placeholder="0 = from epochs", resume="safe", group=TRAINING,
                             estimate="time")
    time_budget: str = setting("", "train for this long: the run measures its speed over its first steps and "
                                   "fixes its number of steps so that training, evaluations and the final "
                                   "evaluation end within it (epochs and max_steps are then ignored)",
                               label="time budget", metavar="DURATION",
                               placeholder="e.g. 90s, 45m, 2h; empty = off", valid=_duration_ok,
                               allowed="a duration like 90s, 45m or 2h", group=TRAINING, estimate="time")
    # Not a user setting: the total the time budget fixed, recorded so a resume continues to exactly it.
    budget_steps: int = setting(0, "the steps the time budget fixed (set by the trainer; 0 = not yet)", ge=0,
                                derived=True, resume="ignore")
    batch_size: int = setting(32, "sequences per optimizer step, over all GPUs and accumulation micro-steps",
                              label="batch size", unit="sequences", gt=0, group=TRAINING, estimate=True)
    grad_accum_steps: int = setting(1, "micro-steps per optimizer step (each forward sees "
                                       "batch_size / (grad_accum_steps x GPUs) sequences)",
                                    label="grad accumulation", flags=("--grad_accum_steps", "--grad_accum"),
                                    gt=0, group=ADVANCED, estimate=True)
    lr: float = setting(3e-4, "peak learning rate", label="learning rate", gt=0, group=TRAINING)
    warmup_steps: int = setting(1000, "linear warmup from 0 to lr", label="warmup steps",
                                flags=("--warmup_steps", "--warmup"), unit="steps", ge=0, group=TRAINING)
    min_lr_ratio: float = setting(0.1, "the cosine decays to lr x min_lr_ratio", label="min lr ratio", ge=0, le=1,
                                  group=TRAINING)
    weight_decay: float = setting(0.1, "AdamW weight decay, applied to matrices only", label="weight decay", ge=0,
                                  group=TRAINING)
    optimizer: str = setting("adamw", "adamw for every weight, or muon: Muon for the blocks' matrices (faster "
                                      "learning per step) and AdamW at lr for embeddings, head, norms and biases",
                             choices=OPTIMIZERS, group=TRAINING, estimate=True)
    muon_lr: float = setting(0.02, "Muon's peak learning rate (optimizer muon); the schedule scales it like lr",
                             label="Muon lr", gt=0, group=TRAINING)
    muon_momentum: float = setting(0.95, "Muon's Nesterov momentum (optimizer muon)", label="Muon momentum", ge=0,
                                   lt=1, group=ADVANCED)
    beta1: float = setting(0.9, "AdamW beta1", label="beta1", ge=0, lt=1, group=ADVANCED)
    beta2: float = setting(0.95, "AdamW beta2", label="beta2", ge=0, lt=1, group=ADVANCED)
    grad_clip: float = setting(1.0, "max global gradient norm", label="grad clip", ge=0, zero="off",
                               placeholder="0 = off", group=TRAINING)
    grad_checkpointing: bool = setting(False, "recompute each block in backward to save activation memory",
                                       label="grad checkpointing", resume="safe", group=TRAINING, estimate=True)
    loss_chunk: int = setting(0, "compute the loss this many tokens at a time, so the (tokens x vocab) "
                                 "logits never exist whole: lower peak memory, the same loss and gradients",
                              label="loss chunk", unit="tokens", ge=0, zero="off", placeholder="0 = off",
                              resume="safe", group=ADVANCED, estimate=True)
    precision: str = setting("auto", "auto: bf16 on GPUs with native bf16, fp16 on older GPUs, fp32 on the CPU",
                             choices=PRECISIONS, group=TRAINING, estimate=True)
    compile: str = setting("auto", "torch.compile the model: auto = on for CUDA, off elsewhere", choices=COMPILE,
                           resume="safe", group=ADVANCED, estimate=True)
    # Speed levers (engine.config.levers); LEVER_AUTO: auto is today's path until a GPU run shows a win.
    fused_loss: str = setting("auto", f"CUDA: linear + cross-entropy without logits, liger or cce; {LEVER_AUTO}",
                              label="fused loss", choices=FUSED_LOSSES, resume="safe", group=ADVANCED,
                              estimate=True)
    attention_backend: str = setting("auto", f"SDPA kernel: flash, cudnn, efficient, math; {LEVER_AUTO}",
                                     label="attention kernel", choices=ATTENTION_BACKENDS, resume="safe",
                                     group=ADVANCED)
    fp8: str = setting("auto", f"torchao FP8 training (compute capability 8.9+); {LEVER_AUTO}", label="FP8",
                       choices=FP8_RECIPES, resume="safe", group=ADVANCED)
    fp8_modules: str = setting("mlp+head", "the Linear layers train.fp8 converts", label="FP8 layers",
                               choices=FP8_MODULES, resume="safe", group=ADVANCED)
    compile_mode: str = setting("auto", f"torch.compile mode; {LEVER_AUTO}", label="compile mode",
                                choices=COMPILE_MODES, resume="safe", group=ADVANCED)
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps", metavar="DEVICE", valid=_device_ok,
                          allowed="auto, cpu, cuda, cuda:N or mps", resume="safe", group=ADVANCED)
    seed: int = setting(1337, "random seed (weights, dropout, data order)", ge=0, le=MAX_SEED, group=ADVANCED)
    log_interval: int = setting(10, "steps between logged training metrics", label="log interval", unit="steps",
                                gt=0, resume="safe", group=ADVANCED)
    eval_interval: int = setting(250, "steps between validation runs", label="eval interval", unit="steps", ge=0,
                                 zero="end only", resume="safe", group=TRAINING, estimate="time")
    eval_batches: int = setting(50, "batches per periodic validation (a batch: the training micro-batch's "
                                    "sequences)", label="eval batches", ge=0,
                                zero="whole split", resume="safe", group=ADVANCED, estimate="time")
    final_eval_batches: int = setting(0, "batches of the final validation and test evaluation (a batch: the "
                                         "training micro-batch's sequences); -1 skips it "
                                         "(for smoke runs); a bounded one is marked partial",
                                      label="final eval batches", ge=-1, zero="whole split",
                                      placeholder="0 = whole split, -1 = skip", resume="safe", group=ADVANCED,
                                      estimate="time")
    save_interval: int = setting(500, "steps between checkpoints", label="save interval", unit="steps", ge=0,
                                 zero="only on pause, stop and end", resume="safe", group=ADVANCED)
    keep_checkpoints: int = setting(3, "newest checkpoints kept, besides the best one", label="keep checkpoints",
                                    ge=1, resume="safe", group=ADVANCED)
    sample_tokens: int = setting(48, "tokens generated from sample_prompt at each evaluation",
                                 label="sample tokens", ge=0, zero="off", resume="safe", group=ADVANCED)
    sample_prompt: str = setting("The history of", "prompt of the evaluation samples", label="sample prompt",
                                 resume="safe", group=ADVANCED)
    sample_temperature: float = setting(0.8, "temperature of the evaluation samples", label="sample temperature",
                                        ge=0, zero="greedy", resume="safe", group=ADVANCED)
    sample_top_k: int = setting(50, "evaluation samples draw from the k likeliest tokens", label="sample top-k",
                                ge=0, zero="all tokens", resume="safe", group=ADVANCED)


@dataclass
class DataConfig:
    """Where the text comes from and how it is tokenized."""

    dataset: str = setting("wikitext-2", "wikitext-2, wikitext-103 (-raw), a folder with train/valid/test.txt, "
                                         "or a .txt file", metavar="NAME|PATH",
                           placeholder="wikitext-2, a folder or a .txt", group=DATA, estimate="time")
    max_samples: int = setting(0, "use only the first N training lines", label="max samples", ge=0, zero="all",
                               group=ADVANCED)
    tokenizer: str = setting("bpe", "bpe: trained on the training split; gpt2: GPT-2's own (from the hub)",
                             choices=TOKENIZERS, group=ADVANCED, estimate=True)
    vocab_size: int = setting(50257, "target vocabulary of the trained BPE (gpt2 has 50257)",
                              label="BPE vocabulary", unit="tokens", ge=257, le=2**20, group=DATA, estimate=True)
    valid_fraction: float = setting(0.05, "share of a single text file's lines carved off for validation",
                                    label="valid fraction", gt=0, lt=0.5, group=ADVANCED)


@dataclass
class RunSection:
    """Where the run lives and what it started from."""

    preset: str = setting("tiny", "model shape to start from: tiny, small or medium", flags=("--preset", "--model_preset"),
                          metavar="NAME", group=PICKER)
    out_dir: str = setting("", "parent folder of run folders", label="output folder", flags=("--out", "--out_dir"),
                           metavar="PATH", placeholder="lm_<dataset>", resume="ignore", group=DATA)
    run_name: str = setting("", "run folder name", label="run name", metavar="NAME", placeholder="<preset>-<time>",
                            valid=_plain_name, allowed="a plain folder name", resume="ignore", group=DATA)


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

    def get(self, key: str) -> Any:
        """The value of "section.name"."""
        section, name = key.split(".")
        return getattr(getattr(self, section), name)


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig, "run": RunSection}
# Every setting, in declaration order, and by "section.name".
SCHEMA: tuple[Setting, ...] = tuple(s for name, cls in SECTIONS.items() for s in settings_of(name, cls))
SETTINGS: dict[str, Setting] = {s.key: s for s in SCHEMA}
# Keys an older run.toml may hold, and where their value lives now.
LEGACY_KEYS = {"model.grad_checkpointing": "train.grad_checkpointing"}


def tokenizer_vocab(data: DataConfig) -> int:
    """The vocabulary the data section asks for: GPT-2's for its tokenizer, else the BPE target.

    The real size is known once the tokenizer is trained (it can come out
    smaller on little data); until then this is the number to plan with.
    """
    return GPT2_VOCAB if data.tokenizer == "gpt2" else data.vocab_size


def user_settings() -> list[Setting]:
    """The settings a user sets (flags, form, TOML); without the derived ones."""
    return [s for s in SCHEMA if not s.derived]


# ----------------------------------------------------------------------------- validation

def validation_errors(cfg: RunConfig) -> dict[str, str]:
    """Every problem in `cfg` as {"section.field": message}; empty when valid.

    Per-field checks (finite, bounds, choices) come from the declarations; the
    checks between fields are below. The dashboard calls this on each
    keystroke to mark fields; `validate` raises the first one.
    """
    errors: dict[str, str] = {}
    for s in SCHEMA:
        problem = value_problem(s, cfg.get(s.key))
        if problem:
            errors[s.key] = problem
    m, t, d = cfg.model, cfg.train, cfg.data
    between = [
        ("model.d_model", m.num_heads <= 0 or m.d_model % m.num_heads == 0,
         f"model.d_model ({m.d_model}) must be divisible by model.num_heads ({m.num_heads})"),
        ("model.num_heads", m.arch != "modern" or m.num_heads <= 0 or m.d_model % m.num_heads
         or (m.d_model // m.num_heads) % 2 == 0,
         f"model.arch modern needs an even head size (d_model / num_heads), got {m.d_model} / {m.num_heads}"),
        ("train.batch_size", t.grad_accum_steps <= 0 or t.batch_size % t.grad_accum_steps == 0,
         f"train.batch_size ({t.batch_size}) must be divisible by train.grad_accum_steps ({t.grad_accum_steps})"),
        ("train.epochs", t.epochs > 0 or t.max_steps > 0,
         f"train.epochs must be a positive integer (or set train.max_steps), got {t.epochs}"),
        ("data.dataset", bool(d.dataset.strip()), "data.dataset must not be empty"),
    ]
    for key, ok, message in between:
        if not ok:
            errors.setdefault(key, message)
    return errors


def validate(cfg: RunConfig) -> None:
    errors = validation_errors(cfg)
    if errors:
        raise ConfigError(next(iter(errors.values())))
