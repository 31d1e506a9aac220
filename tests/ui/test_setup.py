"""Setup screen flows: presets, per-keystroke validation, the memory panel, profiles, start-up cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from textual.widgets import Button, Input, Select, Static

from engine.config.loading import read_toml
from engine.config.plan import DeviceInfo, plan_run
from engine.config.run_config import SCHEMA
from engine.memory.estimate import estimate_memory
from tests.ui.conftest import run, screen_text, text, wait_for
from tui_lm.app import make_app
from tui_lm.profiles import profiles_dir
from tui_lm.widgets.setup.config_form import ConfigForm
from tui_lm.widgets.setup.memory_panel import MemoryPanel, planned_vocab

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
    code = ("import sys, tui_lm.app; bad = [m for m in ('torch', 'datasets', 'engine.train.trainer', "
            "'safetensors', 'tensorboard') if m in sys.modules]; print(','.join(bad))")
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
            # In the user's words, beside the field to change.
            assert text(app.screen.query_one("#e-model-num_heads", Static)) == "heads must divide d_model: 256 / 3"
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
            assert text(app.screen.query_one("#e-model-num_heads", Static)) == ""
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
            assert "heads must divide d_model: 32 / 5" in text(app.screen.query_one("#e-model-num_heads", Static))
            assert app.screen.query_one("#start", Button).disabled
            # No estimate from settings that cannot run: the panel says what it waits for.
            shown = " ".join(memory_text(app).split())
            assert "no estimate until these are fixed: heads" in shown and "parameters" not in shown
            await type_into(pilot, "#f-model-num_heads", "4")
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


def test_target_is_this_machine_without_a_gpu_and_the_detected_gpu_with_one(monkeypatch) -> None:
    """Bug: without a GPU the estimate silently used an 'A100 80GB'."""
    import engine.memory.gpus

    async def shown(app, pilot) -> tuple[str, str]:
        await pilot.pause()
        return str(app.screen.query_one("#gpu-select", Select).value), " ".join(memory_text(app).split())

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            target, memory = await shown(app, pilot)
            assert "no GPU detected" in text(app.screen.query_one("#gpu-note", Static))
            assert target == "cpu" and "of 16.0 GiB" in memory  # this machine's RAM (fixed by conftest)
            assert "CUDA context" not in memory
        monkeypatch.setattr(engine.memory.gpus, "detect_gpus", lambda: [
            engine.memory.gpus.DetectedGPU(index=0, name="NVIDIA H100 80GB HBM3", total_bytes=80 * 2**30, used_bytes=0,
                                    utilization=0.0)])
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            target, memory = await shown(app, pilot)
            assert target == "detected:0" and "of 80.0 GiB" in memory
            assert not app.screen.query("#gpu-note")

    run(flow())


def test_estimate_waits_for_invalid_fields() -> None:
    """Bug: batch -3 gave 'tokens per step -1,536 ... fits', seq 0 'largest batch 16,777,216', and 'abc' fell back
    to the preset's value silently."""

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            for selector, value, field in (("#f-train-batch_size", "-3", "batch size"),
                                           ("#f-model-max_seq_len", "0", "sequence length"),
                                           ("#f-train-batch_size", "abc", "batch size")):
                await type_into(pilot, selector, value)
                shown = " ".join(memory_text(app).split())
                assert f"no estimate until these are fixed: {field}" in shown, shown
                assert "tokens per step" not in shown and "fits" not in shown
                await type_into(pilot, selector, "32" if "batch" in selector else "256")
            assert "tokens per step 8,192" in " ".join(memory_text(app).split())

    run(flow())


def test_messages_name_fields_by_their_labels_and_the_dataset_is_checked(tmp_path: Path) -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            start = app.screen.query_one("#start", Button)
            await type_into(pilot, "#f-train-grad_accum_steps", "5")  # 32 is not a multiple of 5
            await type_into(pilot, "#f-data-dataset", str(tmp_path / "nowhere"))
            messages = {w.id: text(w) for w in app.screen.query(".field-error") if text(w)}
            assert messages == {
                "e-train-batch_size": "must be a multiple of grad accumulation: 32 / 5",
                "e-data-dataset": messages["e-data-dataset"],
            }
            assert "neither a folder, a text file nor a known dataset" in messages["e-data-dataset"]
            assert start.disabled
            screen = " ".join(screen_text(app).split())
            for key in (s.key for s in SCHEMA):
                assert key not in screen, f"an internal name ({key}) on screen"
            (tmp_path / "nowhere").mkdir()
            for split in ("train", "valid"):
                (tmp_path / "nowhere" / f"{split}.txt").write_text("some text\n")
            await type_into(pilot, "#f-data-dataset", str(tmp_path / "nowhere") + "/")
            await type_into(pilot, "#f-train-grad_accum_steps", "4")
            assert not start.disabled

    run(flow())


async def medium_on_a_4090(app, pilot) -> MemoryPanel:
    """The medium preset (batch 32) estimated for an RTX 4090, where it does not fit: the memory panel."""
    await pilot.pause()
    app.screen.query_one("#source-select", Select).value = "preset:medium"
    await wait_for(pilot, lambda: app.screen.query_one(ConfigForm).config.model.d_model == 768, 5, "medium")
    app.screen.query_one("#gpu-select", Select).value = "catalogue:RTX 4090 24GB"
    await pilot.pause()
    return app.screen.query_one(MemoryPanel)


def test_fixes_when_the_run_does_not_fit_one_key_each() -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(160, 48)) as pilot:
            panel = await medium_on_a_4090(app, pilot)
            assert "does not fit" in memory_text(app)
            whats = [f.what for f in panel.fixes]
            assert whats[0].startswith("batch size 32 → ") and any("grad accumulation" in w for w in whats)
            assert "grad checkpointing on" in whats
            chunked = next(f for f in panel.fixes if "train.loss_chunk" in f.changes)
            assert chunked.what == "loss chunk 4096 tokens (the same loss, no whole logits)"
            shown = memory_text(app)
            for fix in panel.fixes:
                assert f"{fix.key.upper()}  {fix.what}" in shown
            largest = panel.fixes[0].changes["train.batch_size"]
            await pilot.press("f6")
            await pilot.pause()
            form = app.screen.query_one(ConfigForm)
            assert form.config.train.batch_size == largest
            assert "does not fit" not in memory_text(app) and not panel.fixes

    run(flow())


def test_the_chunked_loss_fix_sets_the_field_and_lowers_the_estimate() -> None:
    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(160, 48)) as pilot:
            panel = await medium_on_a_4090(app, pilot)
            before = panel.estimate.total_bytes
            fix = next(f for f in panel.fixes if "train.loss_chunk" in f.changes)
            await pilot.press(fix.key)
            await pilot.pause()
            assert app.screen.query_one(ConfigForm).config.train.loss_chunk == 4096
            assert panel.estimate.total_bytes == fix.total_bytes < 0.7 * before
            assert not any("train.loss_chunk" in f.changes for f in panel.fixes)  # applied: no longer offered

    run(flow())


def test_presets_side_by_side_and_every_setting_reachable() -> None:
    from engine.config.run_config import PICKER, user_settings

    async def flow() -> None:
        app = make_app(out_dir="runs")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            rows = {line.split()[0]: line.split()[1:] for line in memory_text(app).splitlines() if line.strip()}
            assert rows["presets"] == ["tiny", "small", "medium"]
            assert rows["params"] == ["16.1M", "44.9M", "124.5M"]
            assert rows["tok/step"] == ["8.2K", "16.4K", "32.8K"]  # batch 32 at each preset's sequence length
            assert " ".join(rows["here"]) == "fits too big too big"  # on this machine's 16 GiB (conftest)
            assert "gradients 0 B: at this moment of the step they do not exist yet" in " ".join(memory_text(app).split())
            for s in user_settings():
                if s.group != PICKER:
                    assert app.screen.query(f"#f-{s.key.replace('.', '-')}"), f"{s.key} has no field"

    run(flow())
