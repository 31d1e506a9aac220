"""Browse and compare: finished, stopped and crashed run folders written by real tiny training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from engine import events as ev
from engine.control import TrainingControl
from tests.ui.conftest import run, text, tiny_config, wait_for
from tui_lm.app import make_app
from tui_lm.screens.browse import BrowseScreen
from tui_lm.screens.compare import CompareScreen
from tui_lm.screens.resume import ResumeScreen
from tui_lm.widgets.compare.curve_plot import CurvePlot
from tui_lm.widgets.resume.run_table import RunTable

SIZE = (140, 45)


@pytest.fixture(scope="module")
def runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Three run folders: finished (lr 3e-3), stopped at step 20 (lr 1e-3), crashed at step 7."""
    from engine.train.trainer import Trainer

    root = tmp_path_factory.mktemp("runs")

    def train(name: str, control: TrainingControl | None = None, sink=lambda e: None, **settings) -> None:
        cfg = tiny_config(corpus, root, **settings)
        cfg.run.run_name = name
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TUI_LM_CACHE", str(cache_dir))
            Trainer(cfg, sink, control).run()

    train("finished", lr=3e-3)
    control = TrainingControl()
    train("stopped", control, lambda e: isinstance(e, ev.StepMetrics) and e.step == 20 and control.stop(), lr=1e-3)

    def failing(e: ev.Event) -> None:  # a crash in the middle of step 7's logging
        if isinstance(e, ev.StepMetrics) and e.step == 7:
            raise RuntimeError("injected failure")

    train("crashed", sink=failing, save_interval=5)
    return root


def table_rows(table: DataTable) -> list[list[str]]:
    return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def pick(pilot, app, name: str) -> None:
    table = app.screen.query_one(RunTable)
    table.move_cursor(row=[r.name for r in table.runs].index(name))
    await pilot.pause()


async def browse(pilot, app, name: str) -> BrowseScreen:
    """From the resume picker: select run `name`, press b, wait until its browse screen has loaded."""
    await pick(pilot, app, name)
    await pilot.press("b")
    await wait_for(pilot, lambda: isinstance(app.screen, BrowseScreen) and app.screen.loaded, 30, name)
    return app.screen


def test_browse_finished_stopped_and_crashed_runs(runs: Path) -> None:
    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[runs])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            view = await browse(pilot, app, "stopped")
            header = text(view.query_one("#browse-header", Static), 140)
            assert "STOPPED" in header and "step 20 / 40" in header and "2,560 tokens" in header
            loss = view.query_one("#browse-loss", CurvePlot)
            assert loss.series["train"].xs == list(range(1, 21))
            assert loss.series["valid"].xs == [10]  # the evaluation at step 20 gave way to the stop
            evals = table_rows(view.query_one("#browse-evals", DataTable))
            assert [r[:2] for r in evals] == [["10", "valid"]]
            checkpoints = table_rows(view.query_one("#browse-checkpoints", DataTable))
            assert [(r[0], r[2], r[3]) for r in checkpoints] == [("step_0000010.pt", "best", "★"),
                                                                 ("step_0000020.pt", "stop", "")]
            assert text(view.query_one("#browse-samples", Static), 140).startswith("step 10")
            assert "lr = 0.001" in str(view.query_one("#browse-config", Static).content.code)
            await pilot.press("escape")

            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), 5, "picker again")
            await browse(pilot, app, "crashed")
            header = text(app.screen.query_one("#browse-header", Static), 140)
            assert "CRASHED" in header and "RuntimeError: injected failure" in header
            assert app.screen.query_one("#browse-loss", CurvePlot).series["train"].xs == list(range(1, 8))
            await pilot.press("escape")

            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), 5, "picker again")
            await browse(pilot, app, "finished")
            header = text(app.screen.query_one("#browse-header", Static), 140)
            rows = [json.loads(line) for line in (runs / "finished" / "metrics.jsonl").read_text().splitlines()]
            best = min(r["loss"] for r in rows if r["event"] == "EvalResult" and r["split"] == "valid")
            test = next(r for r in rows if r["event"] == "EvalResult" and r["split"] == "test")
            assert "FINISHED" in header and f"best valid loss {best:.4f}" in header
            assert f"test ppl {test['perplexity']:,.2f}" in header
            evals = table_rows(app.screen.query_one("#browse-evals", DataTable))
            assert [r[1] for r in evals][-2:] == ["valid", "test"]  # the final evaluations

    run(flow())


def test_compare_overlays_curves_and_lines_up_metrics_and_differing_settings(runs: Path) -> None:
    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[runs])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            await pilot.press("c")  # nothing marked: refused
            await pilot.pause()
            assert isinstance(app.screen, ResumeScreen)
            for name in ("finished", "stopped"):
                await pick(pilot, app, name)
                await pilot.press("space")
            assert "✓ finished" in [c.plain for c in app.screen.query_one(RunTable).get_column_at(0)]
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.complete, 30, "compare")
            view = app.screen
            train = view.query_one("#compare-train", CurvePlot)
            assert [s.label for s in train.series.values()] == ["finished", "stopped"]
            assert train.series["run0"].xs[-1] == 40 and train.series["run1"].xs[-1] == 20
            assert view.query_one("#compare-valid", CurvePlot).series["run1"].xs == [10]
            metrics = {r[0]: r[1:] for r in table_rows(view.query_one("#compare-metrics", DataTable))}
            assert metrics["state"] == ["finished", "stopped"] and metrics["steps"] == ["40", "20"]
            assert metrics["test ppl"][1] == "—" and metrics["test ppl"][0] != "—"
            settings = {r[0]: r[1:] for r in table_rows(view.query_one("#compare-settings", DataTable))}
            assert settings["train.lr"] == ["0.003", "0.001"]
            assert "model.d_model" not in settings and "run.run_name" not in settings
            # Aligned by tokens seen: 40 steps x 4 sequences x 32 tokens.
            await pilot.press("t")
            assert train.x_label == "tokens" and train.series["run0"].xs[-1] == 40 * 4 * 32
            assert "aligned by tokens seen" in text(view.query_one("#compare-header", Static), 140)

    run(flow())


def test_browse_command_refuses_what_is_not_a_run(tmp_path: Path, capsys) -> None:
    from tui_lm.cli import main

    assert main(["browse", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tui-lm browse: error: {tmp_path} is not a run folder (no run.toml in it)"


def test_a_long_history_opens_from_its_tail_and_keeps_its_spikes(tmp_path: Path, monkeypatch) -> None:
    import engine.runs.reader as run_reader

    run_dir = tmp_path / "long"
    run_dir.mkdir()
    (run_dir / "run.toml").write_text('[run]\nrun_name = "long"\n')
    (run_dir / "state.json").write_text(json.dumps({"status": "stopped", "step": 20_000}))
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, 20_001):
            loss = 99.0 if step == 1234 else 3.0 + 1.0 / step
            f.write(json.dumps(ev.StepMetrics(step=step, total_steps=50_000, epoch=0, loss=loss, lr=1e-3,
                                              grad_norm=1.0, tokens_per_s=1.0, step_time_s=0.1, elapsed_s=step,
                                              tokens_seen=64 * step).to_dict()) + "\n")
    # Small limits, so that this file takes the path a million-line one takes.
    monkeypatch.setattr(run_reader, "FULL_READ_BYTES", 100_000)
    monkeypatch.setattr(run_reader, "TAIL_BYTES", 200_000)

    async def flow() -> None:
        app = make_app(browse=[run_dir])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, BrowseScreen) and app.screen.complete, 30, "exact")
            train = app.screen.query_one("#browse-loss", CurvePlot).series["train"]
            assert train.xs[0] == 1 and train.xs[-1] == 20_000
            assert len(train.xs) < 600  # two points per plot column, not twenty thousand
            assert 99.0 in train.ys and train.xs[train.ys.index(99.0)] == 1234  # the spike survives
            assert "20,000 records" in text(app.screen.query_one("#browse-header", Static), 140)

    run(flow())
