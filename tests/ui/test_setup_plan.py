"""Setup screen, the plan beside the memory verdict: time per step, epoch and run, the final evaluation's
cost, the quality guide, F4 (measure here), and Start when the run does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Select, Static

from engine.config.plan import DeviceInfo, plan_run
from tests.ui.conftest import run, screen_text, text, wait_for
from tests.ui.test_setup import medium_on_a_4090, memory_text, type_into
from tui_lm.app import make_app
from tui_lm.widgets.setup.config_form import ConfigForm
from tui_lm.widgets.setup.memory_panel import MemoryPanel


def test_time_beside_the_verdict_and_in_the_presets_table(corpus: Path) -> None:
    from engine.speed.measured import Measurement, save_measurement
    from engine.speed.model import format_duration
    from tui_lm.widgets.setup.time_estimate import short_total

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            await type_into(pilot, "#f-data-dataset", str(corpus))
            await type_into(pilot, "#f-train-max_steps", "1000")
            panel = app.screen.query_one(MemoryPanel)
            shown = " ".join(memory_text(app).split())
            te = panel.time
            # This CPU: the model's figures, said to be modelled from the development CPU's rows.
            assert te.steps == 1000 and te.throughput.here is False
            assert f"time {te.seconds_per_step:.3g} s/step" in shown
            assert f"to the end {format_duration(te.total_s)} (1,000 steps, 3 evaluations + the final one)" in shown
            assert "extrapolated from the development CPU; dataset size estimated; F4 measures it here" in shown
            rows = {line.split()[0]: line.split()[1:] for line in memory_text(app).splitlines() if line.strip()}
            # The presets table's time row: the whole run of each preset, tiny's being the form's.
            assert rows["time"][0] == short_total(te) and len(rows["time"]) == 3
            assert rows["time"][0].endswith("h") and rows["time"][2].endswith("d")  # 2.3h ... 3.0d on this CPU
            # An H100: a faster step, from the H200 rows.
            app.screen.query_one("#gpu-select", Select).value = "catalogue:H100 80GB"
            await wait_for(pilot, lambda: "NVIDIA H200" in memory_text(app), 10, "H100 time")
            assert panel.time.seconds_per_step < te.seconds_per_step / 50
            # A measurement kept for this config on this machine replaces the model next time.
            app.screen.query_one("#gpu-select", Select).value = "cpu"
            await wait_for(pilot, lambda: "development CPU" in memory_text(app), 10, "CPU again")
            form = app.screen.query_one(ConfigForm)
            plan = plan_run(form.config, device=DeviceInfo("cpu"))
            kept = save_measurement(plan, "cpu", Measurement(1234.0, 0.0, 5, "2026-12-01"))
            try:
                await type_into(pilot, "#f-train-max_steps", "2000")
                await wait_for(pilot, lambda: "measured here on 2026-12-01" in memory_text(app), 10, "measured")
                assert panel.time.seconds_per_step == 32 * 256 / 1234.0
            finally:  # the token cache folder is shared by the session's UI tests (the snapshots among them)
                kept.unlink()

    run(flow())


def test_start_asks_first_when_the_run_does_not_fit_and_offers_the_fixes() -> None:
    """Issue 24 item 12: "does not fit" and Start: a dialog (start anyway? / back), the fixes beside it."""
    from tui_lm.widgets.setup.start_confirm import StartConfirm

    async def flow() -> None:
        app = make_app(out_dir="runs")
        started: list = []
        app.start_training = started.append  # the run itself is not what is tested
        async with app.run_test(size=(100, 30)) as pilot:
            panel = await medium_on_a_4090(app, pilot)
            await pilot.pause()
            assert panel.verdict == "does not fit" and panel.fixes
            shown = screen_text(app)
            # The status says what Start does, whole (not cut off), and the Start label is whole too.
            assert "does not fit: Start asks first; F6-F" in shown and "fix it" in shown
            assert "ready to start" not in shown and "Start training" in shown
            # "No": back to the form, nothing started.
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, StartConfirm), 5, "the dialog")
            dialog = screen_text(app)
            assert "The run does not fit: start anyway?" in dialog
            assert "does not fit: " in dialog and "of 24.0 GiB on RTX 4090 24GB" in dialog
            for fix in panel.fixes:
                assert f"{fix.key.upper()}  {fix.what} → {fix.verdict}" in dialog
            assert "Start anyway (y)" in dialog and "Back (n)" in dialog
            await pilot.press("n")
            await wait_for(pilot, lambda: app.screen.__class__.__name__ == "SetupScreen", 5, "back to setup")
            assert started == []
            # A fix from the dialog: applied to the form, back to it, nothing started.
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, StartConfirm), 5, "the dialog again")
            largest = panel.fixes[0].changes["train.batch_size"]
            await pilot.press("f6")
            await wait_for(pilot, lambda: app.screen.__class__.__name__ == "SetupScreen", 5, "back to setup")
            form = app.screen.query_one(ConfigForm)
            await wait_for(pilot, lambda: panel.verdict != "does not fit", 5, "the fix applied")
            assert form.config.train.batch_size == largest and started == []
            assert "ready to start" in screen_text(app)
            # Back to a run that does not fit; "yes" starts it as set.
            await type_into(pilot, "#f-train-batch_size", "32")
            await wait_for(pilot, lambda: panel.verdict == "does not fit", 5, "does not fit again")
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: isinstance(app.screen, StartConfirm), 5, "the dialog a third time")
            await pilot.press("y")
            await wait_for(pilot, lambda: bool(started), 5, "started")
            assert started[0].train.batch_size == 32 and started[0].model.d_model == 768
            # A run that fits starts at once, no dialog.
            started.clear()
            app.screen.query_one("#gpu-select", Select).value = "catalogue:H100 80GB"
            await wait_for(pilot, lambda: panel.verdict == "fits", 5, "fits on an H100")
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: bool(started), 5, "started at once")
            assert not isinstance(app.screen, StartConfirm)

    run(flow())


def test_the_final_evaluation_cost_and_the_setting_that_bounds_it(corpus: Path) -> None:
    """Issue 24 item 2: the setup screen says what the final evaluation costs, windows and time, and how to bound it."""
    from engine.speed.model import eval_tokens, format_duration

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            await type_into(pilot, "#f-data-dataset", str(corpus))
            await type_into(pilot, "#f-train-max_steps", "100")
            await type_into(pilot, "#f-model-max_seq_len", "16")
            await type_into(pilot, "#f-train-batch_size", "2")
            panel = app.screen.query_one(MemoryPanel)
            sizes = panel._split_sizes(app.screen.query_one(ConfigForm).config.data)
            micro, seq = panel.estimate.micro_batch, panel.estimate.seq_len

            def windows(batches: int) -> int:  # the evaluation's own count (engine.speed.model.eval_tokens)
                return sum(eval_tokens(batches, micro, seq, n) for n in (sizes.valid, sizes.test)) // seq

            whole = windows(0)
            assert whole > 2 * micro  # the bound below bites
            shown = " ".join(memory_text(app).split())
            assert (f"final evaluation {format_duration(panel.time.final_eval_s)} ({whole:,} windows, whole splits); "
                    f"final eval batches bounds it") in shown
            assert panel.time.final_windows == whole and panel.time.final_eval_s > 0
            await type_into(pilot, "#f-train-final_eval_batches", "1")
            shown = " ".join(memory_text(app).split())
            assert f"({windows(1):,} windows, bounded)" in shown and windows(1) == 2 * micro
            await type_into(pilot, "#f-train-final_eval_batches", "-1")
            assert "final evaluation skipped (final eval batches -1)" in " ".join(memory_text(app).split())
            assert panel.time.final_windows == 0

    run(flow())


def test_quality_guide_beside_the_time() -> None:
    """Issue 21 item 6 on the setup screen: tokens per parameter, epochs and their warning, published references."""
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            panel = app.screen.query_one(MemoryPanel)
            g = panel.guide
            shown = " ".join(memory_text(app).split())
            assert g.epochs == pytest.approx(20, rel=0.01) and g.measured is None  # tiny's default 20 epochs
            assert f"data {g.tokens_per_param:.2g} tokens/param (compute-optimal ~20) · {g.epochs:.3g} epochs" in shown
            assert "past ~4 epochs each repeat is worth less and overfitting is likely" in shown
            assert "not a prediction of this run" in shown and "expected validation word perplexity" not in shown
            for row in ("AWD-LSTM 33M WT-2 65.8", "GPT-2 0-shot 117M WT-103 37.5", "Trans-XL 151M WT-103 24.0"):
                assert row in shown
            await type_into(pilot, "#f-train-epochs", "2")
            shown = " ".join(memory_text(app).split())
            assert "2 epochs" in shown and "overfitting" not in shown

    run(flow())


def test_f4_measures_here_keeps_it_and_the_time_says_so(tiny_profile, monkeypatch) -> None:
    """Issue 21 item 3's key: F4 trains a few real steps of the form's settings in a worker, shows progress,
    keeps the result like `estimate --measure`; F4 again cancels; a failure is one line."""
    import functools
    import re

    import engine.train.measure as measure_module
    from engine.errors import UserError
    from engine.speed.measured import load_measurement, measurement_path

    async def flow() -> None:
        app = make_app(profile=tiny_profile(), out_dir=None)
        monkeypatch.setattr(measure_module, "MIN_TIMED_S", 1.0)  # the 10 s of a real measurement: not needed here
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            panel = app.screen.query_one(MemoryPanel)
            form = app.screen.query_one(ConfigForm)
            plan = plan_run(form.config, device=DeviceInfo("cpu"))
            assert load_measurement(plan, "cpu") is None and panel.time.throughput.here is False
            status = lambda: text(app.screen.query_one("#setup-status", Static))  # noqa: E731
            # Progress, then cancelled (F4 again) while it trains: nothing kept. Endless here, so it cannot end first.
            real_measure = measure_module.measure
            monkeypatch.setattr(measure_module, "measure", functools.partial(real_measure, steps=100_000))
            await pilot.press("f4")
            assert status().startswith("measuring") and status().endswith("(F4 cancels)")
            step = re.compile(r"measuring: step (\d+) of 100002\+ \(F4 cancels\)")
            await wait_for(pilot, lambda: (m := step.match(status())) is not None and int(m[1]) >= 3, 60, "progress")
            await pilot.press("f4")
            await wait_for(pilot, lambda: app.screen._measuring is None, 60, "the cancel")
            assert load_measurement(plan, "cpu") is None
            assert "ready to start" in status()
            assert any("measurement cancelled after" in n.message for n in app._notifications)
            # Measured: the panel's time is the measured one from then on.
            monkeypatch.setattr(measure_module, "measure", real_measure)
            await pilot.press("f4")
            await wait_for(pilot, lambda: app.screen._measuring is None, 120, "measured")
            try:
                kept = load_measurement(plan, "cpu")
                assert kept is not None and kept.steps >= measure_module.TIMED_STEPS
                await wait_for(pilot, lambda: f"measured here on {kept.date}" in memory_text(app), 10, "the time")
                assert panel.time.throughput.here and panel.time.tokens_per_s == pytest.approx(kept.tokens_per_s)
            finally:  # the token cache folder is shared by the session's UI tests
                measurement_path(plan, "cpu").unlink(missing_ok=True)
            # A failure: one line in the status, until the next change.
            def fail(*_a, **_k):
                raise UserError("the measurement run failed: no data\nTraceback (most recent call last)")

            monkeypatch.setattr(measure_module, "measure", fail)
            await pilot.press("f4")
            await wait_for(pilot, lambda: app.screen._measuring is None, 10, "the failure")
            await pilot.pause()
            assert status() == "measurement failed: the measurement run failed: no data"
            # A catalogue card is not this machine: nothing to measure there.
            app.screen.query_one("#gpu-select", Select).value = "catalogue:H100 80GB"
            await pilot.pause()
            await pilot.press("f4")
            await pilot.pause()
            assert app.screen._measuring is None

    run(flow())
