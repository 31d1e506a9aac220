"""The run plan: every number a run is made of, worked out once.

`plan_run(config, world_size=, device=, vocab_size=, train_tokens=)` is a pure
function (no torch, no I/O) returning a frozen `RunPlan`: the resolved
precision and compile choice, micro-batch and accumulation, tokens per step,
steps per epoch, total steps, the bound LR schedule, the model as it will be
built (the tokenizer's real vocabulary), and what is wrong or doubtful with
the combination, and the speed levers' choices (engine.config.levers). The trainer, the memory estimator, `tui-lm estimate`, the
setup screen, the dashboard, headless mode and the bench read these numbers
from the plan; none of them work them out again.

The device is described by a `DeviceInfo` value: the torch side
(engine.train.runtime) fills it in for a real device, the estimators build one for a
catalogue GPU. Precision rule: on CUDA, "auto" is bf16 when the chosen
device's compute capability is 8.0 (Ampere) or newer, else fp16; elsewhere
fp32. Muon's Newton-Schulz iteration runs in bf16 by the same rule, in fp16 on
CUDA cards that only emulate bf16 (T4, V100).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from engine.config.levers import Levers, resolve_levers
from engine.config.run_config import RunConfig, tokenizer_vocab
from engine.config.schedule import LRSchedule
from engine.errors import DataError

BF16_CAPABILITY = (8, 0)  # Ampere: bf16 in hardware; older cards only emulate it


@dataclass(frozen=True)
class DeviceInfo:
    """What the plan needs to know about a device."""

    type: str = "cpu"  # "cuda" | "cpu" | "mps"
    index: int | None = None  # CUDA device index
    name: str = ""  # "NVIDIA H100 80GB HBM3"; "" for the CPU or a generic GPU
    capability: tuple[int, int] | None = None  # CUDA compute capability; None = unknown (taken as recent)
    # Optional kernel libraries installed (engine.config.levers.installed_kernels); None = unknown, taken as
    # installed (an estimate for a catalogue GPU describes that GPU's machine, not this one).
    kernels: frozenset[str] | None = None

    @classmethod
    def gpu(cls, name: str = "", bf16: bool = True) -> "DeviceInfo":
        """A GPU known only by name and whether it does bf16 (a catalogue entry)."""
        return cls("cuda", None, name, BF16_CAPABILITY if bf16 else (7, 5))

    @classmethod
    def kind(cls, device: str, bf16: bool = True) -> "DeviceInfo":
        """"cuda" / "auto" (a GPU, for estimates) or "cpu" / "mps"."""
        return cls.gpu(bf16=bf16) if device in ("cuda", "auto") or device.startswith("cuda:") else cls(device)

    @property
    def bf16_native(self) -> bool:
        return self.type == "cuda" and (self.capability is None or self.capability >= BF16_CAPABILITY)

    def describe(self) -> str:
        """"cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"."""
        where = self.type if self.index is None else f"{self.type}:{self.index}"
        return f"{where} ({self.name})" if self.name else where


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig  # the caller's config with model.vocab_size = vocab_size (what run.toml records)
    device: DeviceInfo
    world_size: int
    precision: str  # resolved: fp32 | bf16 | fp16
    compile: bool
    levers: Levers  # the speed levers as resolved for the device (engine.config.levers)
    batch_size: int  # sequences per optimizer step, all ranks and micro-steps
    grad_accum_steps: int
    micro_batch: int  # sequences per forward on one rank
    seq_len: int
    tokens_per_step: int
    vocab_size: int  # the tokenizer's real size, or the planned one before the data is prepared
    train_windows: int  # the training split's windows of seq_len + 1 tokens; 0 while its size is unknown
    steps_per_epoch: int  # 0 while the training split's size is unknown
    total_steps: int  # 0 while it depends on an unknown split size
    schedule: LRSchedule
    train_tokens: int | None = None  # the split size the plan was made for
    muon_dtype: str = "bf16"  # Muon's Newton-Schulz dtype: fp16 on a CUDA card that only emulates bf16
    warnings: tuple[str, ...] = ()  # doubtful but allowed: said on screen
    errors: tuple[str, ...] = ()  # the run cannot start like this (the estimators still show numbers)

    @property
    def model(self):
        """The model section as the model will be built."""
        return self.config.model


def resolve_precision(requested: str, device: DeviceInfo) -> tuple[str, str, str]:
    """(precision, error, warning) for `requested` ("auto", "fp32", "bf16", "fp16") on `device`."""
    if requested == "auto":
        if device.type == "cuda":
            return ("bf16" if device.bf16_native else "fp16"), "", ""
        return "fp32", "", ""
    if requested == "bf16" and device.type == "cuda" and not device.bf16_native:
        major, minor = device.capability or (0, 0)
        return requested, (f"train.precision bf16 is only emulated on {device.name or 'this GPU'} (compute "
                           f"capability {major}.{minor}, bf16 needs 8.0); use fp16 or auto"), ""
    if requested in ("bf16", "fp16") and device.type == "cpu":
        return requested, "", (f"train.precision {requested} on the CPU: autocast emulates it, which is "
                               f"usually slower than fp32")
    return requested, "", ""


def plan_run(cfg: RunConfig, *, world_size: int = 1, device: DeviceInfo = DeviceInfo(),
             vocab_size: int | None = None, train_tokens: int | None = None) -> RunPlan:
    """The plan of `cfg` on `world_size` ranks of `device` (see the module docstring).

    `vocab_size`: the tokenizer's real size (default: what the data section
    asks for); `train_tokens`: the training split's length, once known.
    Raises DataError when the split cannot fill one window; every other
    problem is listed in `errors`. `cfg` is not modified.
    """
    t, m = cfg.train, cfg.model
    world = max(1, world_size)
    vocab = vocab_size if vocab_size is not None else tokenizer_vocab(cfg.data)
    resolved = copy.deepcopy(cfg)
    resolved.model.vocab_size = vocab
    errors: list[str] = []
    warnings: list[str] = []

    precision, error, warning = resolve_precision(t.precision, device)
    errors += [error] if error else []
    warnings += [warning] if warning else []
    use_compile = t.compile == "on" or (t.compile == "auto" and device.type == "cuda")
    levers, lever_errors, lever_warnings = resolve_levers(cfg, device, use_compile)
    errors += lever_errors
    warnings += lever_warnings

    accum = max(1, t.grad_accum_steps)
    shards = accum * world
    if t.batch_size % shards:
        errors.append(f"train.batch_size ({t.batch_size}) must be divisible by grad_accum_steps × ranks "
                      f"({accum} × {world})")
    micro = max(1, -(-t.batch_size // shards))  # rounded up: an estimate of a bad split errs on the safe side
    seq = m.max_seq_len

    windows = steps_per_epoch = 0
    if train_tokens is not None:
        if train_tokens < seq + 1:
            raise DataError(f"the training split has only {train_tokens} tokens, fewer than one window of "
                            f"model.max_seq_len + 1 = {seq + 1}")
        windows = (train_tokens - 1) // seq
        steps_per_epoch = windows // t.batch_size
        if steps_per_epoch == 0:
            errors.append(f"train.batch_size ({t.batch_size}) is larger than the {windows} windows of {seq} "
                          f"tokens in the training split")
    # A time budget's total, once the trainer fixed it, is the run's length (engine.train.budget).
    total = t.budget_steps or t.max_steps or t.epochs * steps_per_epoch
    if total and 0 < total <= t.warmup_steps:
        warnings.append(f"train.warmup_steps ({t.warmup_steps}) is not below the run's {total:,} steps: the "
                        f"learning rate never leaves the warmup (peak {t.lr:g} is "
                        f"{'reached only at the last step' if total == t.warmup_steps else 'never reached'})")
    return RunPlan(
        config=resolved, device=device, world_size=world, precision=precision, compile=use_compile, levers=levers,
        batch_size=t.batch_size, grad_accum_steps=accum, micro_batch=micro, seq_len=seq,
        tokens_per_step=t.batch_size * seq, vocab_size=vocab, train_windows=windows, steps_per_epoch=steps_per_epoch,
        total_steps=total,
        schedule=LRSchedule(t.lr, t.warmup_steps, total, t.min_lr_ratio), train_tokens=train_tokens,
        muon_dtype="fp16" if device.type == "cuda" and not device.bf16_native else "bf16",
        warnings=tuple(warnings), errors=tuple(errors),
    )


def replan(plan: RunPlan, cfg: RunConfig) -> RunPlan:
    """The plan of another config (e.g. another batch size) for the same device, ranks, vocabulary and data."""
    return plan_run(cfg, world_size=plan.world_size, device=plan.device, vocab_size=plan.vocab_size,
                    train_tokens=plan.train_tokens)


def with_train(cfg: RunConfig, **train) -> RunConfig:
    """A copy of `cfg` with some train settings changed."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
