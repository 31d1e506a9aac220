"""What the screens say in a new user's first hour (issue 24, items 9, 10, 11, 15): partial figures marked
alike with a legend, a custom shape not labelled as its preset, help generated from each screen's bindings,
and small first impressions (the pause line once, one precision per plot axis, checkboxes readable without
colour)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from textual.widgets import Checkbox, DataTable, Static

from engine import events as ev
from engine.config.loading import build_config, read_toml, write_toml
from engine.config.model_label import model_label
from tests.ui.conftest import run, screen_text, text, tiny_config, wait_for
from tests.ui.test_browse_compare import browse, pick, table_rows
from tests.ui.test_dashboard import log_text, open_dashboard, scripted, started, step  # noqa: F401  (a fixture)
from tests.ui.test_snapshots import fixed_cwd  # noqa: F401  (a fixture)
from tui_lm.app import make_app
from tui_lm.screens.compare import CompareScreen
from tui_lm.screens.resume import ResumeScreen
from tui_lm.widgets.dashboard.metrics_panel import MetricsPanel
from tui_lm.widgets.dashboard.run_header import RunHeader
from tui_lm.widgets.resume.run_table import RunTable

SIZE = (100, 30)


def plain(widget) -> str:
    """A widget as a terminal without colour shows it."""
    return str(widget.render()).strip()


def test_checkboxes_read_on_and_off_without_colour() -> None:
    """On and off both rendered ▐X▌, told apart by colour only: a plain terminal showed every boolean as on."""

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            tie = app.screen.query_one("#f-model-tie_embeddings", Checkbox)
            checkpointing = app.screen.query_one("#f-train-grad_checkpointing", Checkbox)
            assert tie.value and not checkpointing.value
            assert plain(tie) == "▐X▌ on" and plain(checkpointing) == "▐ ▌ off"
            tie.scroll_visible(animate=False)
            await pilot.pause()
            assert "▐X▌ on" in screen_text(app)  # the screen as a colourless terminal shows it
            checkpointing.toggle()
            await pilot.pause()
            assert plain(checkpointing) == "▐X▌ on"
            assert app.screen.query_one("#config-form").config.train.grad_checkpointing is True

    run(flow())


def test_the_pause_line_is_shown_once(tmp_path: Path, scripted) -> None:  # noqa: F811
    """The trainer reports a pause's checkpoint and then the pause; the log said both, naming the same file."""
    run_dir = tmp_path / "runs" / "demo"
    checkpoint = str(run_dir / "snapshots" / "step_0000012.pt")
    scripted(started(run_dir), step(10), ev.CheckpointSaved(step=12, path=checkpoint, reason="pause"),
             ev.Paused(step=12, checkpoint=checkpoint),
             ev.CheckpointSaved(step=20, path=str(run_dir / "snapshots" / "step_0000020.pt"), reason="interval"))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            dash = await open_dashboard(app, pilot)
            await wait_for(pilot, lambda: "step_0000020.pt" in log_text(dash), 10, "the last checkpoint")
            lines = [line for line in log_text(dash).splitlines() if "step_0000012.pt" in line]
            assert lines == ["step 12: paused, checkpoint runs/demo/snapshots/step_0000012.pt"]
            assert "step 20: checkpoint (interval) saved to runs/demo/snapshots/step_0000020.pt" in log_text(dash)

    run(flow())


# ---------------------------------------------------------------------------- partial figures, custom shapes


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Two real tiny runs: "partial" (every evaluation bounded to 2 batches, tiny's preset with its own shape) and
    "whole" (every evaluation over the whole split, no preset)."""
    from engine.train.trainer import Trainer

    root = tmp_path_factory.mktemp("first-hour-runs")
    for name, preset, batches in (("partial", "tiny", 2), ("whole", "", 0)):
        cfg = tiny_config(corpus, root, max_steps=20, eval_batches=batches, final_eval_batches=batches)
        cfg.run.run_name, cfg.run.preset = name, preset
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TUI_LM_CACHE", str(cache_dir))
            Trainer(cfg, lambda e: None).run()
    return root


def column(name: str) -> int:
    """Where the picker's column `name` is."""
    from tui_lm.widgets.resume.run_table import COLUMNS

    return COLUMNS.index(name)


def ends_marked(cells: list[str]) -> list[bool]:
    return [cell.endswith("*") for cell in cells]


async def compare(pilot, app, names: tuple[str, ...], complete: bool = False) -> dict[str, list[str]]:
    """Back on the picker, mark `names` and compare them: {metric row: its cells}, once loaded (or complete)."""
    await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), 5, "picker again")
    for name in names:
        await pick(pilot, app, name)
        await pilot.press("space")
    await pilot.press("c")
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen)
                   and (app.screen.complete if complete else app.screen.loaded), 30, "compare")
    return {r[0]: r[1:] for r in table_rows(app.screen.query_one("#compare-metrics", DataTable))}


def test_partial_figures_are_marked_alike_with_a_legend(trained: Path) -> None:
    """The picker's, browse's and compare's figures never said they came from a partial evaluation."""

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[trained])
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            picker = {r[0]: r for r in table_rows(app.screen.query_one(RunTable))}
            val, word = column("val ppl"), column("word ppl")
            assert ends_marked([picker["partial"][val], picker["partial"][word]]) == [True, True]
            assert ends_marked([picker["whole"][val], picker["whole"][word]]) == [False, False]
            assert "* partial (first batches)" in text(app.screen.query_one("#resume-where", Static), 140)

            view = await browse(pilot, app, "partial")
            header = text(view.query_one("#browse-header", Static), 140)
            assert "* partial (first batches)" in header
            assert " test ppl " in header and header.split(" test ppl ")[1].split()[0].endswith("*")
            for row in table_rows(view.query_one("#browse-evals", DataTable)):
                assert ends_marked(row[2:6]) == [True] * 4, row  # loss, ppl, word ppl, bits/byte
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), 5, "picker again")
            view = await browse(pilot, app, "whole")
            assert "partial" not in text(view.query_one("#browse-header", Static), 140)
            for row in table_rows(view.query_one("#browse-evals", DataTable)):
                assert ends_marked(row[2:6]) == [False] * 4, row
            await pilot.press("escape")

            metrics = await compare(pilot, app, ("partial", "whole"), complete=True)
            for label in ("best valid loss", "valid ppl", "valid word ppl", "test ppl", "test word ppl"):
                assert ends_marked(metrics[label]) == [True, False], label
            assert not any(ends_marked(metrics["train loss"]))
            assert "* partial (first batches)" in text(app.screen.query_one("#compare-header", Static), 140)

    run(flow())


def test_dashboard_marks_every_figure_of_a_partial_evaluation(tmp_path: Path, scripted) -> None:  # noqa: F811
    """The * marked the word perplexity and not the perplexity beside it."""
    loss = 3.5
    scripted(started(tmp_path / "runs" / "demo"), step(10),
             ev.EvalResult(step=10, split="valid", loss=loss, perplexity=math.exp(loss), word_perplexity=99.0,
                           bits_per_byte=1.25, tokens=512, partial=True))

    async def flow() -> None:
        app = make_app()
        async with app.run_test(size=(120, 40)) as pilot:
            dash = await open_dashboard(app, pilot)
            panel = dash.query_one(MetricsPanel)
            await wait_for(pilot, lambda: panel.valid is not None, 10, "the evaluation")
            shown = [" ".join(line.split()) for line in text(panel).splitlines()]
            for row in ("valid loss 3.5000*", "best valid 3.5000*", f"perplexity {math.exp(loss):,.2f}*",
                        "word ppl 99.00*", "bits/byte 1.250*", "* partial (first batches)"):
                assert row in shown, (row, shown)
            assert f"step 10: valid loss 3.5000* · ppl {math.exp(loss):,.2f}* · word ppl 99.00*" in log_text(dash)

    run(flow())


def test_a_custom_shape_is_not_labelled_as_its_preset(trained: Path, corpus: Path, tmp_path: Path) -> None:
    """A run started from tiny with its own shape was labelled "tiny" in the picker, browse and run.toml."""
    run_toml = trained / "partial" / "run.toml"
    assert run_toml.read_text().splitlines()[0].startswith("# model: custom (from tiny): d_model 32, ")
    # Resuming still reads the preset it started from, and the file gives back the very same config.
    assert read_toml(run_toml)["run"]["preset"] == "tiny"
    stored = build_config(None, run_toml)
    write_toml(stored, tmp_path / "again.toml")
    assert build_config(None, tmp_path / "again.toml") == stored
    # A run whose shape is its preset's keeps the preset's name.
    as_tiny = build_config("tiny", None, {"data": {"dataset": str(corpus)}, "run": {"out_dir": str(trained)}})
    (trained / "tiny-shaped").mkdir()
    write_toml(as_tiny, trained / "tiny-shaped" / "run.toml")
    assert (trained / "tiny-shaped" / "run.toml").read_text().startswith("# model: tiny\n")
    assert model_label("tiny", {"d_model": 512}) == "custom (from tiny)" and model_label("", {}) == "custom"

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[trained])
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            model_column = column("model")
            models = {r[0]: r[model_column] for r in table_rows(app.screen.query_one(RunTable))}
            assert models == {"partial": "custom (from tiny)", "whole": "custom", "tiny-shaped": "tiny"}
            await pick(pilot, app, "partial")
            assert "model custom (from tiny): d_model 32, num_heads 2" in text(app.screen.query_one("#run-detail"), 140)
            view = await browse(pilot, app, "partial")
            assert "model custom (from tiny): d_model 32" in text(view.query_one("#browse-header", Static), 140)
            await pilot.press("escape")
            metrics = await compare(pilot, app, ("partial", "tiny-shaped"))
            assert metrics["model"] == ["custom (from tiny)", "tiny"]

    run(flow())


def test_the_dashboard_header_names_the_model(tmp_path: Path, scripted, corpus: Path) -> None:  # noqa: F811
    scripted(started(tmp_path / "runs" / "demo"), step(10))

    async def flow() -> None:
        profile = tmp_path / "custom.toml"
        cfg = tiny_config(corpus, tmp_path / "runs")
        cfg.run.preset = "tiny"
        write_toml(cfg, profile)
        app = make_app(profile=profile)
        async with app.run_test(size=(120, 40)) as pilot:
            dash = await open_dashboard(app, pilot)
            assert dash.query_one(RunHeader).model == "custom (from tiny)"
            assert "custom (from tiny)" in str(dash.query_one(RunHeader).render())

    run(flow())


# ---------------------------------------------------------------------------- help from the bindings


def screen_classes() -> list[type]:
    """Every screen class of tui_lm/screens, found by walking the package (a new screen is covered too)."""
    import importlib
    import inspect
    import pkgutil

    from textual.screen import Screen

    import tui_lm.screens
    from tui_lm.screens.help import HelpScreen

    found = []
    for module in pkgutil.iter_modules(tui_lm.screens.__path__):
        mod = importlib.import_module(f"tui_lm.screens.{module.name}")
        found += [c for _, c in inspect.getmembers(mod, inspect.isclass)
                  if issubclass(c, Screen) and c.__module__ == mod.__name__ and c is not HelpScreen]
    return found


def help_rows(app) -> dict[str, str]:
    """The help's keys table as the user reads it: {key shown: what it does}, one entry per key."""
    import re

    from tui_lm.screens.help import HelpScreen

    assert isinstance(app.screen, HelpScreen)
    rows: dict[str, str] = {}
    keys: list[str] = []
    for line in text(app.screen.query_one("#help-keys", Static), 96).splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 2:
            keys = cells[0].split(" / ")
            rows.update({key: cells[1] for key in keys})
        elif line.startswith(" ") and line.strip() and keys:  # an explanation wrapped onto the next line
            rows.update({key: f"{rows[key]} {line.strip()}" for key in keys})
        else:
            keys = []  # a heading or a blank line
    return rows


def expected_keys(app, screen: type) -> dict[str, set[str]]:
    """{key shown: what it may be explained as} for every binding of `screen` (inherited ones too) and of the app:
    its tooltip or description (the action's name without either), or another's of the same action (keys of
    one action share a row)."""
    from textual.screen import ModalScreen

    textual_own = {(b.key, b.action) for bs in ModalScreen._merge_bindings().key_to_bindings.values() for b in bs}
    by_key, by_action = {}, {}
    for bindings in (*screen._merge_bindings().key_to_bindings.values(), *app._bindings.key_to_bindings.values()):
        for b in bindings:
            if (b.key, b.action) not in textual_own and not b.system:
                by_key[app.get_key_display(b)] = b.action
                by_action.setdefault(b.action, set()).update(w for w in (b.tooltip, b.description or b.action) if w)
    return {key: by_action[action] for key, action in by_key.items()}


def test_every_screens_help_lists_every_binding_of_that_screen_and_the_app() -> None:
    """? listed neither the picker's f5, a, b, space, c nor compare's t; now each screen's help is its bindings."""
    from tui_lm.screens.help import HelpScreen

    classes = screen_classes()
    names = {c.__name__ for c in classes}
    assert {"SetupScreen", "ResumeScreen", "DashboardScreen", "WatchScreen", "BrowseScreen", "CompareScreen",
            "QuitConfirm"} <= names

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            for screen in classes:
                await app.push_screen(HelpScreen(screen))
                await pilot.pause()
                shown, expected = help_rows(app), expected_keys(app, screen)
                for key, explanations in expected.items():
                    assert shown.get(key) in explanations, (screen.__name__, key, explanations, shown)
                await pilot.press("escape")
                await pilot.pause()
            picker = next(c for c in classes if c.__name__ == "ResumeScreen")
            assert {"f5", "a", "b", "space", "c"} <= set(expected_keys(app, picker))

    run(flow())


def test_question_mark_opens_the_help_of_the_screen_under_it(tmp_path: Path, corpus: Path) -> None:
    """Through the keyboard: the picker's help lists its keys, the setup screen's its own, not each other's."""
    from tests.ui.test_resume_picker import make_runs

    make_runs(tmp_path / "runs", corpus)

    async def flow() -> None:
        app = make_app(resume_picker=True, roots=[tmp_path / "runs"])
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.loaded, 30, "picker")
            await pilot.press("question_mark")
            await pilot.pause()
            shown = help_rows(app)
            for key in ("⏎", "f5", "a", "b", "space", "c", "esc", "q", "^q", "?", "f1"):  # as the footer shows them
                assert key in shown, (key, shown)
            assert shown["f5"] == "look for runs again"
            assert "tui-lm keys: resume picker" in text(app.screen.query_one("#help-title", Static))
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("escape")  # the picker, back to setup
            await pilot.pause()
            await pilot.press("f1")
            await pilot.pause()
            shown = help_rows(app)
            assert "^t" in shown and "f5" not in shown and "space" not in shown

    run(flow())


def test_a_binding_added_to_a_screen_shows_in_its_help_unwritten() -> None:
    """The help text is generated: a new key needs no edit of the help."""
    from textual.binding import Binding

    from tui_lm.screens.help import HelpScreen
    from tui_lm.screens.resume import ResumeScreen as Picker

    class PickerWithZap(Picker):
        BINDINGS = [Binding("z", "zap", "Zap", tooltip="zap the selected run")]

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await app.push_screen(HelpScreen(PickerWithZap))
            await pilot.pause()
            shown = help_rows(app)
            assert shown["z"] == "zap the selected run" and shown["f5"] == "look for runs again"

    run(flow())


def test_setup_booleans_snapshot(snap_compare, fixed_cwd: Path) -> None:  # noqa: F811
    """The picture of item 15's checkboxes in a 100x30 terminal: tie embeddings ▐X▌ on, grad checkpointing ▐ ▌ off."""

    async def show_booleans(pilot) -> None:
        await pilot.pause()
        pilot.app.screen.query_one("#f-train-grad_checkpointing").scroll_visible(animate=False, top=False)
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(out_dir="runs"), terminal_size=SIZE, run_before=show_booleans)
