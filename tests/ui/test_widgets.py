"""Small widget-level checks: the braille plot, formatting helpers, quitting from setup, profiles folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from tests.ui.conftest import run, wait_for
from tui_lm.app import make_app
from tui_lm.profiles import PROFILES_ENV, name_problem, profiles_dir
from tui_lm.screens.quit_confirm import QuitConfirm
from tui_lm.widgets.common.format import bar, duration, human_bytes
from tui_lm.widgets.dashboard.line_plot import LinePlot


class PlotApp(App):
    def compose(self) -> ComposeResult:
        yield LinePlot("loss", id="plot")


def test_line_plot_draws_braille_with_labels() -> None:
    async def flow() -> None:
        app = PlotApp()
        async with app.run_test(size=(60, 12)) as pilot:
            plot = app.query_one(LinePlot)
            plot.add_series("train", "train", "#1e90ff")
            assert "waiting for data" in str(plot.render())
            for step in range(1, 201):
                plot.add_point("train", step, 10.0 / step)
            plot.add_point("train", 201, float("nan"))  # ignored, not drawn as a gap or a crash
            plot.x_max = 400
            plot.flush(force=True)
            await pilot.pause()
            rendered = str(plot.render())
            lines = rendered.splitlines()
            assert lines[0].startswith("loss")
            assert any("\u2800" < ch <= "\u28ff" for ch in rendered), "no braille dots drawn"
            assert "10" in lines[1]  # y max label
            assert "400 step" in lines[-1]  # fixed right edge = total steps
            assert plot.point_count("train") == 200

    run(flow())


def test_formatting() -> None:
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(80 * 1024**3) == "80.0 GiB"
    assert duration(45) == "45s" and duration(185) == "3m05s" and duration(7620) == "2h07m"
    assert duration(float("nan")) == "—"
    assert bar(0.5, 10) == "█████░░░░░"
    assert bar(0.0, 10, marker=0.5)[4] == "│"


def test_profiles_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path / "p"))
    assert profiles_dir() == tmp_path / "p"
    monkeypatch.delenv(PROFILES_ENV)
    assert profiles_dir() == Path.home() / ".config" / "tui-lm" / "profiles"
    assert name_problem("ok-name_1.2") == ""
    assert name_problem("a/b") and name_problem("")


def test_quit_from_setup_asks_first() -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirm), 5, "quit dialog")
            assert not app.screen.query("#quit-warning")  # no run to stop
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, QuitConfirm), 5, "dialog closed")
            assert app.is_running
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirm), 5, "quit dialog")
            await pilot.press("y")
            await pilot.pause()
        assert app.return_code == 0

    run(flow())


def test_plot_series_read_apart_without_colour_and_view_toggles() -> None:
    """Valid points are marker glyphs, the training loss a braille line; EMA and log scale change the view only."""

    async def flow() -> None:
        app = PlotApp()
        async with app.run_test(size=(60, 14)) as pilot:
            plot = app.query_one(LinePlot)
            plot.add_series("train", "train", "#1e90ff")
            plot.add_series("valid", "valid", "#ffaf00", marker="◆")
            for step in range(1, 1001):
                plot.add_point("train", step, 1000.0 / step * (1.5 if step % 2 else 0.5))  # noisy
            for step in (250, 500, 750, 1000):
                plot.add_point("valid", step, 1000.0 / step)
            plot.flush(force=True)
            await pilot.pause()
            raw = str(plot.render())
            assert raw.splitlines()[0].startswith("loss  ━ train  ◆ valid")
            assert raw.count("◆") == 1 + 4  # the legend and the four points
            assert any("\u2800" < ch <= "\u28ff" for ch in raw)

            plot.set_view(smoothing=0.9)
            smooth = str(plot.render())
            assert "(EMA)" in smooth.splitlines()[0] and smooth != raw
            assert plot.series["train"].ys[1] == 250.0  # the points are untouched

            plot.set_view(smoothing=0.0, log_y=True)
            log = str(plot.render()).splitlines()
            assert "(log)" in log[0]
            mid = log[1 + (len(log) - 2) // 2].split("┤")[0].strip()
            top = float(log[1].split("┤")[0])
            bottom = float(log[-2].split("┤")[0])
            # The middle label is the geometric mean on a log axis, not the arithmetic one.
            assert float(mid) == pytest.approx((top * bottom) ** 0.5, rel=0.01)

    run(flow())


def test_y_axis_labels_share_one_precision() -> None:
    """A loss between 2.0 and 2.3 was labelled 2.3 / 2.15 / 2: one number of decimals per axis, enough to tell
    the ticks apart; the learning rate's axis reads alike in scientific notation."""

    async def flow() -> None:
        app = PlotApp()
        async with app.run_test(size=(60, 12)) as pilot:
            plot = app.query_one(LinePlot)
            plot.add_series("train", "train", "#1e90ff")
            plot.add_point("train", 1, 2.3)
            plot.add_point("train", 2, 2.0)
            plot.flush(force=True)
            await pilot.pause()
            labels = [line.split("┤")[0].strip() for line in str(plot.render()).splitlines()[1:-1]]
            assert [label for label in labels if label] == ["2.30", "2.15", "2.00"]

            plot.set_points("train", [1, 2, 3], [3e-4, 2e-4, 0.0])
            plot.flush(force=True)
            await pilot.pause()
            labels = [line.split("┤")[0].strip() for line in str(plot.render()).splitlines()[1:-1]]
            assert [label for label in labels if label] == ["3.0e-04", "1.5e-04", "0"]

    run(flow())
