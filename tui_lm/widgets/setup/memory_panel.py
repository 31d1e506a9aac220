"""Live memory estimate of the current settings against a chosen target, with fixes when it does not fit.

Recomputed on every form change: `engine.memory.estimate` is pure arithmetic (no torch),
so an estimate costs microseconds and the panel can follow each keystroke.

The target is honest about the machine: a detected GPU is the default; with
none, the panel says "no GPU detected" and defaults to this machine's RAM
(where training would then run); any catalogue GPU can be chosen to ask
"would this fit on an H100?". While a field is invalid the panel estimates
nothing and says which field it waits for. When the run does not fit it
offers the fixes the estimator can check (largest batch, gradient
accumulation, chunked loss, checkpointing, bf16), one key each (the setup
screen's F6-F10).
Above the breakdown, the three presets side by side on the same target. Beside
the verdict, how long the run takes there (tui_lm/widgets/setup/time_estimate.py),
and the presets table has a time row.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Select, Static

from engine.config.loading import preset_names, with_preset
from engine.config.plan import DeviceInfo, RunPlan, plan_run
from engine.config.run_config import DataConfig, RunConfig, tokenizer_vocab
from engine.memory import estimate as _memory
from engine.memory import gpus as _gpus
from engine.memory.advice import memory_fixes
from tui_lm.widgets.common.format import bar, human_bytes, human_count
from tui_lm.widgets.setup.messages import label, waiting_for
from tui_lm.widgets.setup.time_estimate import (UnknownCard, guide_on, quality_parts, short_total, target_gpu,
                                                time_lines, time_on)

_VERDICT_STYLE = {"fits": "bold green", "tight": "bold yellow", "does not fit": "bold red"}
SHORT_VERDICT = {"does not fit": "too big"}  # a narrow column
CPU = "cpu"  # the Select value of "this machine (CPU RAM)"
FIX_KEYS = ("f6", "f7", "f8", "f9", "f10")


@dataclass(frozen=True)
class Target:
    """What the estimate is checked against."""

    name: str  # shown: "NVIDIA H100 80GB HBM3", "this machine (CPU RAM)"
    capacity: int  # bytes
    device: DeviceInfo


@dataclass(frozen=True)
class Fix:
    """One change the estimator says makes the run fit (or fit better), for one key."""

    key: str  # "f6"
    what: str  # "batch size 64 → 24"
    changes: dict[str, Any]  # {"train.batch_size": 24}
    total_bytes: int
    verdict: str


def short_bytes(n: int) -> str:
    """'17.7G', '512M': a size in a narrow column."""
    value = human_bytes(n)
    number, unit = value.split()
    return number + unit[0].replace("B", "") if unit != "B" else value


def machine_ram() -> int:
    """This machine's RAM: the capacity of the CPU target (a function, so tests can fix it)."""
    return _gpus.machine_ram()


def _bf16(name: str) -> bool:
    """Whether a detected card does bf16 (sets what precision "auto" becomes)."""
    try:
        return _gpus.find_gpu(name).bf16
    except Exception:  # an unknown card: assume a recent one
        return True


def targets() -> tuple[list[tuple[str, str]], str, dict[str, Target], bool]:
    """Select options, the default value, {value: Target}, and whether a GPU was detected."""
    options: list[tuple[str, str]] = []
    found: dict[str, Target] = {}
    try:
        detected = _gpus.detect_gpus()
    except Exception:  # a broken driver must not break the setup screen
        detected = []
    for d in detected:
        value = f"detected:{d.index}"
        options.append((f"GPU {d.index}: {d.name} ({human_bytes(d.total_bytes)}, this machine)", value))
        found[value] = Target(d.name, d.total_bytes, DeviceInfo.gpu(d.name, _bf16(d.name)))
    ram = machine_ram()
    options.append((f"this machine: {human_bytes(ram)} RAM", CPU))
    found[CPU] = Target("this machine (CPU RAM)", ram, DeviceInfo("cpu"))
    for g in _gpus.GPU_CATALOGUE:
        value = f"catalogue:{g.name}"
        options.append((f"{g.name} ({human_bytes(g.memory_bytes)})", value))
        found[value] = Target(g.name, g.memory_bytes, DeviceInfo.gpu(g.name, g.bf16))
    default = options[0][1] if detected else CPU
    return options, default, found, bool(detected)


def planned_vocab(data: DataConfig) -> tuple[int, str]:
    """(vocabulary to plan with, where it comes from): the prepared tokenizer's real size when the
    data is already tokenized with these settings ("tokenizer"), else the vocabulary asked for."""
    try:
        from engine.data.token_cache import cached_vocab_size

        real = cached_vocab_size(data)
    except Exception:  # an unreadable cache only costs the exact number
        real = None
    if real is not None:
        return real, "tokenizer"
    return tokenizer_vocab(data), "GPT-2" if data.tokenizer == "gpt2" else "typed"


def estimate(cfg: RunConfig, device: DeviceInfo, vocab: int) -> tuple[RunPlan, Any]:
    plan = plan_run(cfg, device=device, vocab_size=vocab)
    return plan, _memory.estimate_memory(cfg, plan=plan)


def fixes(cfg: RunConfig, target: Target, plan: RunPlan) -> list[Fix]:
    """engine.memory.advice's fixes for the target, in the user's words, one key each."""
    t = cfg.train
    out = []
    for key, f in zip(FIX_KEYS, memory_fixes(cfg, target.capacity, plan)):
        (name, value), = f.changes.items()
        if name == "batch_size":
            what = f"{label('train.batch_size')} {t.batch_size} → {value}"
        elif name == "grad_accum_steps":
            what = f"{label('train.grad_accum_steps')} {t.grad_accum_steps} → {value} (same {t.batch_size} sequences a step)"
        elif name == "grad_checkpointing":
            what = f"{label('train.grad_checkpointing')} on"
        elif name == "loss_chunk":
            what = f"{label('train.loss_chunk')} {value} tokens (the same loss, no whole logits)"
        else:
            what = f"precision {value}"
        out.append(Fix(key, what, {f"train.{name}": value}, f.total_bytes,
                       _memory.verdict(f.total_bytes, target.capacity)))
    return out


class MemoryPanel(VerticalScroll):
    class Redrawn(Message):
        """The estimate was redone (a form change or another target): the screen's status follows it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._options, self._default, self._targets, self.gpu_detected = targets()
        self.config: RunConfig | None = None
        self.waiting: dict[str, str] = {}  # invalid fields: no estimate until they are fixed
        self.estimate: Any = None  # the last MemoryEstimate
        self.fixes: list[Fix] = []
        self._vocab: tuple[DataConfig, tuple[int, str]] | None = None  # the last lookup, per data section
        self._sizes: tuple[DataConfig, Any] | None = None  # the splits' sizes, per data section
        self.time: Any = None  # the last TimeEstimate on the target (None: no catalogued card)
        self.guide: Any = None  # the last QualityGuide (engine.speed.quality)

    def compose(self) -> ComposeResult:
        if not self.gpu_detected:
            yield Static(Text("no GPU detected: training would run on this machine's CPU", style="yellow"),
                         id="gpu-note")
        yield Select(self._options, value=self._default, allow_blank=False, id="gpu-select", compact=True)
        yield Static(id="memory-body")

    def on_mount(self) -> None:
        self.border_title = "memory estimate"

    def on_resize(self) -> None:
        self._redraw()  # the bar is as wide as the panel

    @on(Select.Changed, "#gpu-select")
    def _gpu_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._redraw()

    def show(self, cfg: RunConfig, errors: dict[str, str] | None = None) -> None:
        """The settings to estimate; while `errors` ({field key: message}) is not empty, no estimate."""
        self.config = cfg
        self.waiting = dict(errors or {})
        self._redraw()

    @property
    def target(self) -> Target:
        return self._targets[str(self.query_one("#gpu-select", Select).value)]

    @property
    def here_device(self) -> str | None:
        """The train.device that trains on the target on this machine ("cpu", "cuda:N"); None for a catalogue card."""
        value = str(self.query_one("#gpu-select", Select).value)
        if value == CPU:
            return "cpu"
        return f"cuda:{value.split(':', 1)[1]}" if value.startswith("detected:") else None

    @property
    def gpu(self) -> tuple[str, int, bool] | None:
        """(name, bytes, bf16) of a GPU target; None for the CPU."""
        t = self.target
        return None if t.device.type == "cpu" else (t.name, t.capacity, t.device.bf16_native)

    def redraw(self) -> None:
        """Estimate again with the same settings (a measurement kept since changes the time)."""
        self._redraw()

    def _redraw(self) -> None:
        body = self.query_one("#memory-body", Static)
        cfg = self.config
        if cfg is None:
            return
        self.estimate, self.fixes, self.time = None, [], None
        self.post_message(self.Redrawn())  # after the attributes are set: messages are handled later
        if self.waiting:
            # Never an estimate from a value that is not the one typed (batch -3, seq 0, "abc").
            body.update(Text(f"no estimate until these are fixed: {waiting_for(self.waiting)}", style="yellow"))
            return
        target = self.target
        try:
            vocab, origin = self._vocabulary(cfg.data)
            plan, est = estimate(cfg, target.device, vocab)
            if plan.errors:
                raise ValueError(plan.errors[0])
            found = fixes(cfg, target, plan) if est.total_bytes > target.capacity else []
            sizes = self._split_sizes(cfg.data)
            presets = self._presets(cfg, target, vocab, sizes)
            timed = self._time(cfg, target, vocab, sizes)
            guide = guide_on(cfg, target.device, vocab, sizes, est.num_params)
        except Exception as e:  # a combination the planner refuses: say so instead of a wrong number
            body.update(Text(f"no estimate: {e}", style="yellow"))
            return
        self.estimate, self.fixes, self.time, self.guide = est, found, timed, guide
        body.update(self._describe(plan, est, target, origin, found, presets, sizes))

    @property
    def verdict(self) -> str | None:
        """"fits", "tight" or "does not fit" on the target; None while there is no estimate."""
        if self.estimate is None:
            return None
        return _memory.verdict(self.estimate.total_bytes, self.target.capacity)

    def verdict_line(self) -> str:
        """"does not fit: 1.1 TiB of 16.0 GiB on this machine (CPU RAM)" (the start dialog's words)."""
        return (f"{self.verdict}: {human_bytes(self.estimate.total_bytes)} of {human_bytes(self.target.capacity)} "
                f"on {self.target.name}")

    def _vocabulary(self, data: DataConfig) -> tuple[int, str]:
        """planned_vocab, looked up again only when the data section changes (it reads the cache)."""
        if self._vocab is None or self._vocab[0] != data:
            self._vocab = (copy.deepcopy(data), planned_vocab(data))
        return self._vocab[1]

    def _split_sizes(self, data: DataConfig) -> Any:
        """engine.speed.sizes.split_sizes, looked up again only when the data section changes (it reads files)."""
        if self._sizes is None or self._sizes[0] != data:
            from engine.speed.sizes import split_sizes

            try:
                found = split_sizes(data)
            except Exception:  # an unreadable dataset only costs the epoch time
                found = None
            self._sizes = (copy.deepcopy(data), found)
        return self._sizes[1]

    @staticmethod
    def _time(cfg: RunConfig, target: Target, vocab: int, sizes: Any) -> Any:
        """The run's TimeEstimate on `target`; None for a card the catalogue does not know."""
        try:
            gpu = target_gpu(target.device, target.name, target.capacity)
        except UnknownCard:
            return None
        return time_on(cfg, target.device, gpu, vocab, sizes)

    @classmethod
    def _presets(cls, cfg: RunConfig, target: Target, vocab: int, sizes: Any = None) -> list[tuple[str, Any, str, Any]]:
        """(name, estimate, verdict, time) of each preset's model with these training settings, on `target`."""
        out = []
        for name in preset_names():
            preset = with_preset(cfg, name)
            plan, est = estimate(preset, target.device, vocab)
            out.append((name, est, _memory.verdict(est.total_bytes, target.capacity),
                        cls._time(preset, target, vocab, sizes)))
        return sorted(out, key=lambda p: p[1].num_params)  # small to large

    def _describe(self, plan: RunPlan, est: Any, target: Target, origin: str, found: list[Fix],
                  presets: list[tuple[str, Any, str, Any]], sizes: Any = None) -> Group:
        parts: list[Any] = []
        # The verdict first: what the user came for.
        verdict = _memory.verdict(est.total_bytes, target.capacity)
        style = _VERDICT_STYLE.get(verdict, "bold")
        share = est.total_bytes / max(1, target.capacity)
        width = max(10, self.content_size.width - 1)
        parts.append(Text(bar(share, width), style=style.split()[-1]))
        # The verdict first: a long size or share wraps after it, never pushes it out of sight.
        line = Text(verdict, style=style)
        line.append(f"  {human_bytes(est.total_bytes)} of {human_bytes(target.capacity)} ({share:.0%})")
        parts.append(line)
        largest = _memory.max_batch_size(plan.config, target.capacity, plan=plan)
        parts.append(Text.assemble(("largest batch that fits: ", "dim"), (f"{largest:,}" if largest else "none", "bold")))
        if self.time is not None:
            parts.extend(time_lines(self.time, sizes, plan.config.train.final_eval_batches,
                                    measurable=self.here_device is not None))
        else:
            parts.append(Text(f"time: {target.name} is not in the GPU catalogue (no peak to time it with)",
                              style="dim"))
        for fix in found:
            fix_line = Text.assemble((f" {fix.key.upper()} ", "reverse bold"), f" {fix.what} → ",
                                     (f"{human_bytes(fix.total_bytes)} {fix.verdict}",
                                      _VERDICT_STYLE.get(fix.verdict, "")))
            parts.append(fix_line)
        parts.append(Text(""))
        parts.append(self._preset_table(presets, plan))
        parts.append(Text(""))
        parts.extend(quality_parts(self.guide))
        parts.append(Text(""))
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="dim", ratio=1, no_wrap=True, overflow="fold")
        table.add_column(justify="right", no_wrap=True)
        table.add_row("parameters", Text(f"{est.num_params:,} ({human_count(est.num_params)})", style="bold"))
        table.add_row("vocabulary", f"{plan.vocab_size:,} ({origin})")
        table.add_row("tokens per step", f"{plan.tokens_per_step:,}")
        table.add_row("micro-batch × seq", f"{plan.micro_batch} × {plan.seq_len} ({plan.precision})")
        parts.append(table)
        # A line of its own (it wraps, a table cell would be cut): when the peak happens.
        parts.append(Text(f"at the peak ({est.peak_phase}):" if est.peak_phase else "at the peak:", style="bold"))
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="dim", ratio=1, no_wrap=True, overflow="fold")
        table.add_column(justify="right", no_wrap=True)
        for name, size in est.rows.items():
            if size or name == "gradients":  # CUDA context, slack, copies: none on the CPU
                table.add_row(f"  {name}", human_bytes(size))
        table.add_row(Text("total at peak", style="bold"), Text(human_bytes(est.total_bytes), style="bold"))
        parts.append(table)
        if est.rows.get("gradients", 1) == 0:
            parts.append(Text("gradients 0 B: at this moment of the step they do not exist yet "
                              "(backward makes them, and they are dropped after each optimizer step)",
                              style="dim italic"))
        return Group(*parts)

    @staticmethod
    def _preset_table(presets: list[tuple[str, Any, str, Any]], plan: RunPlan) -> Table:
        """The presets side by side, at these training settings, on this target."""
        # Short units and labels: the three columns fit the narrow side column of an 80-column terminal.
        table = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True, expand=True,
                      show_edge=False, header_style="bold")
        table.add_column("presets", style="dim", no_wrap=True)
        for name, *_ in presets:
            table.add_column(name, justify="right", no_wrap=True)
        table.add_row("params", *[human_count(e.num_params) for _, e, _, _ in presets])
        table.add_row("tok/step", *[human_count(e.tokens_per_step) for _, e, _, _ in presets])
        table.add_row("peak", *[short_bytes(e.total_bytes) for _, e, _, _ in presets])
        table.add_row("here", *[Text(SHORT_VERDICT.get(v, v), style=_VERDICT_STYLE.get(v, "")) for _, _, v, _ in presets])
        table.add_row("time", *[short_total(t) for *_, t in presets])
        return table
