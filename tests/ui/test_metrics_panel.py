"""The metrics panel's rows come from StepMetrics' declarations: MFU shows once a GPU gives it a peak."""

from __future__ import annotations

import math

from textual.app import App, ComposeResult

from engine import events as ev
from tests.ui.conftest import run, text
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel


class PanelApp(App):
    def compose(self) -> ComposeResult:
        yield MetricsPanel()


def step(mfu: float | None) -> ev.StepMetrics:
    return ev.StepMetrics(step=10, total_steps=100, epoch=0, loss=3.25, lr=6e-4, grad_norm=0.75,
                          tokens_per_s=1000.0, step_time_s=0.1, elapsed_s=1.0, tokens_seen=1280, mfu=mfu)


def rows(panel: MetricsPanel) -> list[str]:
    return [" ".join(line.split()) for line in text(panel).splitlines() if line.strip()]


def test_rows_in_order_and_mfu_only_when_known() -> None:
    async def flow() -> None:
        app = PanelApp()
        async with app.run_test(size=(40, 14)) as pilot:
            panel = app.query_one(MetricsPanel)
            await pilot.pause()
            labels = [r.rsplit(" ", 1)[0] for r in rows(panel)]
            assert labels == ["train loss", "valid loss", "best valid", "perplexity", "word ppl", "bits/byte",
                              "learning rate", "grad norm"]  # before the first step: no MFU row
            panel.show_step(step(None))  # the CPU: no peak, no row
            await pilot.pause()
            assert rows(panel)[0] == "train loss 3.2500" and not any("MFU" in r for r in rows(panel))
            panel.show_step(step(0.4123))
            panel.show_eval(ev.EvalResult(step=10, split="valid", loss=3.5, perplexity=math.exp(3.5),
                                          word_perplexity=50.0, bits_per_byte=1.2, tokens=512, partial=False))
            await pilot.pause()
            shown = rows(panel)
            assert shown[-3:] == ["learning rate 6.00e-04", "grad norm 0.750", "MFU 41.2%"]
            assert shown[1] == "valid loss 3.5000"

    run(flow())
