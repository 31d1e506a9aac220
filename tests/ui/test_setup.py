"""Setup screen flows: presets, per-keystroke validation, the memory panel, profiles, start-up cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from textual.widgets import Button, Input, Select, Static

from engine.config import read_toml
from engine.memory import estimate_memory
from tests.ui.conftest import run, text, wait_for
from tui_lm.app import make_app
from tui_lm.profiles import profiles_dir
from tui_lm.widgets.setup.config_form import ConfigForm
from engine.plan import DeviceInfo, plan_run
from tui_lm.widgets.setup.memory_panel import planned_vocab

# tiny at a 1,000-token vocabulary (padded to 1,024 rows): 1024*256 + 256*256 + 4 blocks + final LayerNorm
GPT_PARAMS_AT_1000 = 1024 * 256 + 256 * 256 + 4 * (4 * 256 * 256 + 2 * 256 * 1024 + 9 * 256 + 1024) + 2 * 256

SIZE = (120, 40)


def memory_text(app) -> str:
    return text(app.screen.query_one("#memory-body", Static))


async def type_into(pilot, selector: str, value: str) -> None:
    """Replace a field's text the way a user does: focus, clear, type."""
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    await pilot.press(*value)
    await pilot.pause()


def test_import_does_not_load_torch() -> None:
    code = ("import sys, tui_lm.app; bad = [m for m in ('torch', 'datasets', 'engine.trainer', "
            "'engine.checkpoint', 'tensorboard') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "", f"importing tui_lm.app imported {out.stdout.strip()}"


def test_preset_changes_fields() -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            d_model = app.screen.query_one("#f-model-d_model", Input)
            assert d_model.value == "256"  # tiny
            before = memory_text(app)
            app.screen.query_one("#source-select", Select).value = "preset:small"
            await wait_for(pilot, lambda: d_model.value == "512", 5, "small preset")
            assert app.screen.query_one("#f-model-num_layers", Input).value == "6"
            assert app.screen.query_one("#f-model-max_seq_len", Input).value == "512"
            form = app.screen.query_one(ConfigForm)
            assert form.config.run.preset == "small"
            assert memory_text(app) != before
            assert f"{estimate_memory(form.config).num_params:,}" in memory_text(app)

    run(flow())


def test_edit_field_updates_estimate() -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            form = app.screen.query_one(ConfigForm)
            old = estimate_memory(form.config).num_params
            assert f"{old:,}" in memory_text(app)
            await type_into(pilot, "#f-model-d_model", "128")
            assert form.config.model.d_model == 128
            new = estimate_memory(form.config).num_params
            assert new != old
            assert f"{new:,}" in memory_text(app)
            # Every catalogue GPU can be chosen; a 24 GB card gets its own verdict line.
            app.screen.query_one("#gpu-select", Select).value = "catalogue:RTX 4090 24GB"
            await pilot.pause()
            assert "of 24.0 GiB" in memory_text(app)
            assert "largest batch that fits" in memory_text(app)

    run(flow())


def test_invalid_value_shows_message_and_disables_start() -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            start = app.screen.query_one("#start", Button)
            assert not start.disabled
            await type_into(pilot, "#f-model-num_heads", "3")  # 256 is not divisible by 3
            message = text(app.screen.query_one("#e-model-d_model", Static))
            assert "divisible" in message and "num_heads (3)" in message
            assert start.disabled
            assert "to fix before starting" in text(app.screen.query_one("#setup-status", Static))
            await type_into(pilot, "#f-train-lr", "abc")
            assert "must be a number" in text(app.screen.query_one("#e-train-lr", Static))
            # ctrl+t does not start either.
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "SetupScreen"
            await type_into(pilot, "#f-model-num_heads", "8")
            await type_into(pilot, "#f-train-lr", "1e-3")
            assert text(app.screen.query_one("#e-model-d_model", Static)) == ""
            assert not start.disabled
            assert app.screen.query_one(ConfigForm).config.train.lr == 1e-3

    run(flow())


def test_save_and_load_profile(tiny_profile) -> None:
    async def flow() -> None:
        app = make_app(profile=tiny_profile(), out_dir=None)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            form = app.screen.query_one(ConfigForm)
            assert app.screen.query_one("#f-model-d_model", Input).value == "32"  # from the file
            await type_into(pilot, "#f-train-batch_size", "6")
            await type_into(pilot, "#profile-name", "mine")
            await pilot.click("#save-profile")
            await pilot.pause()
            saved = profiles_dir() / "mine.toml"
            assert saved.is_file()
            values = read_toml(saved)
            assert values["train"]["batch_size"] == 6 and values["model"]["d_model"] == 32
            assert set(values) == {"model", "train", "data", "run"}  # the run.toml format
            # Change something, then load the profile back from the picker.
            await type_into(pilot, "#f-train-batch_size", "9")
            picker = app.screen.query_one("#source-select", Select)
            picker.value = "preset:tiny"
            await wait_for(pilot, lambda: form.config.model.d_model == 256, 5, "tiny preset")
            picker.value = f"profile:{saved}"
            await wait_for(pilot, lambda: form.config.model.d_model == 32, 5, "profile loaded")
            assert app.screen.query_one("#f-train-batch_size", Input).value == "6"

    run(flow())


def test_profile_with_invalid_values_opens_with_messages(tmp_path: Path, tiny_profile) -> None:
    path = tiny_profile()
    path.write_text(path.read_text().replace("num_heads = 2", "num_heads = 5"))

    async def flow() -> None:
        app = make_app(profile=path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert app.screen.query_one("#f-model-num_heads", Input).value == "5"
            assert "divisible" in text(app.screen.query_one("#e-model-d_model", Static))
            assert app.screen.query_one("#start", Button).disabled
            # The estimate still follows the other settings, at the vocabulary the data asks for.
            vocab, origin = planned_vocab(app.screen.query_one(ConfigForm).config.data)
            assert f"vocabulary {vocab:,} ({origin})" in " ".join(memory_text(app).split())

    run(flow())


def test_estimate_uses_the_vocabulary_typed() -> None:
    """The BPE vocabulary field changes the estimate (the logits are its largest term for small models)."""
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            form = app.screen.query_one(ConfigForm)
            await type_into(pilot, "#f-data-vocab_size", "1000")
            assert form.config.data.vocab_size == 1000
            expected = estimate_memory(form.config, plan=plan_run(form.config, device=DeviceInfo.gpu()))
            assert expected.num_params == GPT_PARAMS_AT_1000
            shown = " ".join(memory_text(app).split())
            assert f"{expected.num_params:,}" in shown and "vocabulary 1,000 (typed)" in shown

    run(flow())
