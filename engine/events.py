"""Typed events the trainer publishes; the dashboard and headless mode consume the same ones.

A sink is any callable taking one event. Events are frozen dataclasses of plain
values (no tensors), so they can cross threads and be written to JSON as-is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.config.schedule import LRSchedule


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Log(Event):
    """A line of progress text (data preparation, tokenizer training, warnings)."""

    message: str
    level: str = "info"  # "info" | "warning"


@dataclass(frozen=True)
class RunStarted(Event):
    """The run's plan (engine.config.plan.RunPlan) as the trainer resolved it; readers take numbers from here."""

    run_dir: str
    num_params: int
    total_steps: int
    start_step: int  # > 0 when resuming
    steps_per_epoch: int
    tokens_per_step: int
    device: str
    precision: str
    world_size: int = 1
    resumed_from: str = ""  # checkpoint path when resuming
    preset_params: dict[str, int] = field(default_factory=dict)  # preset name -> parameter count
    vocab_size: int = 0  # the tokenizer's real vocabulary, which the model was built with
    micro_batch: int = 0  # sequences per forward on one rank
    compiled: bool = False  # torch.compile on
    compile_s: float = 0.0  # compilation time before the first step (not counted as training time)
    schedule: LRSchedule | None = None  # the learning rate at every step
    estimated_bytes: int = 0  # the memory estimate of this plan (engine.memory.estimate)
    levers: dict[str, str] = field(default_factory=dict)  # the resolved speed levers (engine.config.levers.Levers)


@dataclass(frozen=True)
class SettingsChanged(Event):
    """Settings a resume changed (only those the resume policy calls safe), from `step` on."""

    step: int
    changes: dict[str, list[Any]]  # "section.name" -> [old, new]


@dataclass(frozen=True)
class Shown:
    """How a step metric is shown, declared on its field: the headless line, the metrics panel, TensorBoard.

    `line` is a format template for the headless line ("loss {:.4f}"); `label`,
    `spec` and `priority` make its metrics-panel row (priority 0 rows lead the
    panel, the others follow the evaluation's rows; higher numbers drop first on
    a small terminal); `tb` is its TensorBoard tag under "train/". A metric whose
    value is None (MFU without a known peak) is left out everywhere.
    """

    line: str = ""
    label: str = ""
    spec: str = ""
    priority: int = 3
    tb: str = ""


def shown(default: Any = dataclasses.MISSING, **how: Any) -> Any:
    """A dataclass field with its presentation (`Shown`) attached."""
    return field(default=default, metadata={"shown": Shown(**how)})


def shown_fields(cls: type[Event]) -> list[tuple[str, Shown, bool]]:
    """(name, presentation, optional) of each shown field of an event class, in declaration order.

    An optional field (default None) is shown only once it has a value.
    """
    return [(f.name, f.metadata["shown"], f.default is None) for f in dataclasses.fields(cls)
            if "shown" in f.metadata]


@dataclass(frozen=True)
class StepMetrics(Event):
    """A logging step. A new metric is one `shown(...)` field here and its value in the trainer."""

    step: int  # optimizer steps completed
    total_steps: int
    epoch: int  # 0-based epoch the step belongs to
    # mean training loss over the steps since the last log
    loss: float = shown(line="loss {:.4f}", label="train loss", spec=".4f", priority=0, tb="loss")
    lr: float = shown(line="lr {:.2e}", label="learning rate", spec=".2e", tb="lr")
    grad_norm: float = shown(line="grad {:.2f}", label="grad norm", spec=".3f", tb="grad_norm")  # before clipping
    tokens_per_s: float = shown(line="{:,.0f} tok/s", tb="tokens_per_s")
    step_time_s: float  # mean wall time per step since the last log
    elapsed_s: float  # training wall time of this run, compile and eval excluded
    tokens_seen: int
    # Model FLOPs utilisation: FLOPs per token x tokens/s over the devices' dense
    # peak (engine.memory.gpus); None on the CPU or a GPU the catalogue lacks.
    mfu: float | None = shown(None, line="MFU {:.1%}", label="MFU", spec=".1%", tb="mfu")


@dataclass(frozen=True)
class EvalResult(Event):
    step: int
    split: str  # "valid" | "test"
    loss: float  # mean NLL per token (nats)
    perplexity: float  # token-level
    word_perplexity: float  # exp(total NLL / words), comparable across tokenizers
    bits_per_byte: float
    tokens: int  # tokens scored
    partial: bool  # True when only a subset of the split was scored (word ppl then extrapolated)
    best: bool = False  # new best validation loss


@dataclass(frozen=True)
class EvalProgress(Event):
    """An evaluation under way: a few a second (engine.train.evaluate.EvalProgressReporter), and at its end."""

    step: int
    split: str  # "valid" | "test"
    done: int  # batches scored so far, all ranks, in train.eval_batches' unit (training micro-batches)
    total: int
    elapsed_s: float
    eta_s: float  # nan until a batch is done
    partial: bool = False  # a bounded evaluation (only the split's first batches)


@dataclass(frozen=True)
class SampleGenerated(Event):
    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    path: str
    reason: str  # "interval" | "pause" | "stop" | "final" | "best"


@dataclass(frozen=True)
class Paused(Event):
    step: int
    checkpoint: str


@dataclass(frozen=True)
class Resumed(Event):
    step: int


@dataclass(frozen=True)
class MemorySample(Event):
    """Live memory figures from the monitor (GPU through NVML/torch.cuda, else the process)."""

    kind: str  # "cuda" | "cpu"
    used_bytes: int  # GPU memory used on the device (NVML) or process RSS
    total_bytes: int  # GPU capacity or system RAM
    allocated_bytes: int = 0  # torch.cuda.memory_allocated
    reserved_bytes: int = 0  # torch.cuda.memory_reserved
    peak_bytes: int = 0  # torch.cuda.max_memory_allocated since training began (reset after warm-up), or peak RSS
    utilization: float = -1.0  # GPU utilisation percent; -1 when unknown
    label: str = ""  # "NVIDIA H100 80GB HBM3" or "process memory (no GPU)"


@dataclass(frozen=True)
class Finished(Event):
    step: int
    run_dir: str
    stopped: bool  # True when stopped early by the user, False when the schedule completed
    model_dir: str = ""  # final weights, empty when stopped early
    best_val_loss: float = float("inf")
    test: EvalResult | None = None


@dataclass(frozen=True)
class Failed(Event):
    message: str
    step: int
    kind: str  # "oom" | "nan" | "data" | "config" | "io" (disk full...) | "busy" (run folder locked) | "error"
    checkpoint: str = ""  # last good checkpoint, kept on disk
    traceback: str = ""


EventSink = Callable[[Event], None]
