"""Live memory estimate of the current settings against a chosen GPU.

Recomputed on every form change: `engine.memory` is pure arithmetic (no torch),
so an estimate costs microseconds and the panel can follow each keystroke.
The GPU defaults to the first detected card; any catalogue GPU can be chosen
to ask "would this fit on an H100?".
"""

from __future__ import annotations

import copy
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Select, Static

from engine.config import DataConfig, RunConfig, tokenizer_vocab
from engine.plan import DeviceInfo, RunPlan, plan_run
from tui_lm.widgets.common.format import bar, human_bytes, human_count

try:  # engine.memory / engine.gpus are optional until they land; the panel then says so
    from engine import gpus as _gpus
    from engine import memory as _memory
except ImportError:  # pragma: no cover - depends on the engine version
    _gpus = _memory = None  # type: ignore[assignment]

_VERDICT_STYLE = {"fits": "bold green", "tight": "bold yellow", "does not fit": "bold red"}
# Preferred catalogue card when no GPU is detected: a common training GPU.
_DEFAULT_CARD_HINTS = ("A100 80", "A100", "H100")


def _bf16(name: str) -> bool:
    """Whether a detected card does bf16 (sets what precision "auto" becomes)."""
    try:
        return _gpus.find_gpu(name).bf16
    except Exception:  # an unknown card: assume a recent one
        return True


def gpu_choices() -> tuple[list[tuple[str, str]], str | None, dict[str, tuple[str, int, bool]]]:
    """Select options, the default value and {value: (name, bytes, bf16)}."""
    if _gpus is None:
        return [], None, {}
    options: list[tuple[str, str]] = []
    cards: dict[str, tuple[str, int, bool]] = {}
    try:
        detected = _gpus.detect_gpus()
    except Exception:  # a broken driver must not break the setup screen
        detected = []
    for d in detected:
        value = f"detected:{d.index}"
        options.append((f"GPU {d.index}: {d.name} ({human_bytes(d.total_bytes)}, this machine)", value))
        cards[value] = (d.name, d.total_bytes, _bf16(d.name))
    for g in _gpus.GPU_CATALOGUE:
        value = f"catalogue:{g.name}"
        options.append((f"{g.name} ({human_bytes(g.memory_bytes)})", value))
        cards[value] = (g.name, g.memory_bytes, g.bf16)
    default = options[0][1] if detected else None
    if default is None:
        for hint in _DEFAULT_CARD_HINTS:
            default = next((v for _, v in options if hint in v), None)
            if default:
                break
    return options, default or (options[0][1] if options else None), cards


def planned_vocab(data: DataConfig) -> tuple[int, str]:
    """(vocabulary to plan with, where it comes from): the prepared tokenizer's real size when the
    data is already tokenized with these settings ("tokenizer"), else the vocabulary asked for."""
    try:
        from engine.tokenizer import cached_vocab_size

        real = cached_vocab_size(data)
    except Exception:  # an unreadable cache only costs the exact number
        real = None
    if real is not None:
        return real, "tokenizer"
    return tokenizer_vocab(data), "GPT-2" if data.tokenizer == "gpt2" else "typed"


class MemoryPanel(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._options, self._default, self._sizes = gpu_choices()
        self.config: RunConfig | None = None
        self.estimate: Any = None  # the last MemoryEstimate, for the dashboard's gauge
        self._vocab: tuple[DataConfig, tuple[int, str]] | None = None  # the last lookup, per data section

    def compose(self) -> ComposeResult:
        if self._options:
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

    def show(self, cfg: RunConfig) -> None:
        self.config = cfg
        self._redraw()

    @property
    def gpu(self) -> tuple[str, int, bool] | None:
        if not self._options:
            return None
        return self._sizes.get(str(self.query_one("#gpu-select", Select).value))

    def _redraw(self) -> None:
        body = self.query_one("#memory-body", Static)
        if _memory is None:
            body.update(Text("memory estimator not available in this engine version", style="dim"))
            return
        cfg = self.config
        if cfg is None:
            return
        gpu = self.gpu
        try:
            vocab, origin = self._vocabulary(cfg.data)
            device = DeviceInfo.gpu(gpu[0], gpu[2]) if gpu else DeviceInfo.gpu()
            plan = plan_run(cfg, device=device, vocab_size=vocab)
            est = _memory.estimate_memory(cfg, plan=plan)
        except Exception as e:  # invalid settings (e.g. heads not dividing d_model) cannot be estimated
            self.estimate = None
            body.update(Text(f"no estimate: fix the settings marked in red\n({e})", style="dim"))
            return
        self.estimate = est
        body.update(self._describe(cfg, plan, est, gpu, origin))

    def _vocabulary(self, data: DataConfig) -> tuple[int, str]:
        """planned_vocab, looked up again only when the data section changes (it reads the cache)."""
        if self._vocab is None or self._vocab[0] != data:
            self._vocab = (copy.deepcopy(data), planned_vocab(data))
        return self._vocab[1]

    def _describe(self, cfg: RunConfig, plan: RunPlan, est: Any, gpu: tuple[str, int, bool] | None,
                  origin: str) -> Group:
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="dim", ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(justify="right", no_wrap=True)
        table.add_row("parameters", Text(f"{est.num_params:,} ({human_count(est.num_params)})", style="bold"))
        table.add_row("vocabulary", f"{plan.vocab_size:,} ({origin})")
        table.add_row("tokens per step", f"{plan.tokens_per_step:,}")
        table.add_row("micro-batch × seq", f"{plan.micro_batch} × {plan.seq_len} ({plan.precision})")
        for name, size in est.rows.items():
            table.add_row(f"  {name}", human_bytes(size))
        table.add_row(Text("total at peak", style="bold"), Text(human_bytes(est.total_bytes), style="bold"))
        parts: list[Any] = [table]
        if gpu is not None:
            _, capacity, _ = gpu
            verdict = _memory.verdict(est.total_bytes, capacity)
            style = _VERDICT_STYLE.get(verdict, "bold")
            share = est.total_bytes / max(1, capacity)
            width = max(10, self.content_size.width - 2)
            parts.append(Text(bar(share, width), style=style.split()[-1]))
            line = Text(f"{human_bytes(est.total_bytes)} of {human_bytes(capacity)} ({100 * share:.0f}%)  ")
            line.append(verdict, style=style)
            parts.append(line)
            try:
                largest = _memory.max_batch_size(cfg, capacity, plan=plan)
                parts.append(Text.assemble(("largest batch that fits: ", "dim"), (f"{largest:,}", "bold")))
            except Exception:  # the search is a nicety; the verdict above is what matters
                pass
        return Group(*parts)
