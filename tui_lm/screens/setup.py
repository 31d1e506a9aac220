"""Setup screen: choose a preset or profile, edit every hyperparameter, watch the memory estimate.

Start stays disabled while any field is invalid (the dataset included); the
form's messages say why, beside each field. When the run does not fit the
memory panel offers fixes, F6-F10, which this screen applies to the form, and
Start asks first (tui_lm/widgets/setup/start_confirm.py), the fixes beside
the question. F4 measures the current settings' speed on this machine (a
few real steps after a warm-up, engine.train.measure, in a worker thread;
F4 again cancels); the measurement is kept like `tui-lm estimate --measure`
keeps it, and the panel's time then says "measured here on DATE".
"""

from __future__ import annotations

import copy
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from engine.config.loading import with_preset
from engine.config.run_config import RunConfig
from engine.errors import ConfigError
from tui_lm.messages import OpenResumePicker, StartTraining
from tui_lm.profiles import load_profile, name_problem, save_profile
from tui_lm.widgets.setup.config_form import ConfigForm
from tui_lm.widgets.setup.memory_panel import FIX_KEYS, MemoryPanel
from tui_lm.widgets.setup.messages import label
from tui_lm.widgets.setup.profile_picker import ProfilePicker
from tui_lm.widgets.setup.start_confirm import StartConfirm

COMPACT_WIDTH = 140


class SetupScreen(Screen):
    BINDINGS = [
        Binding("ctrl+t", "start", "Start training"),
        Binding("ctrl+r", "open_resume", "Resume a run"),
        Binding("ctrl+s", "save_profile", "Save profile"),
        # Not in the footer (an 80-column footer has no room): the panel's time line names it.
        Binding("f4", "measure", "Measure speed here", show=False),
        *[Binding(key, f"fix({i})", f"fix {i + 1}", show=False) for i, key in enumerate(FIX_KEYS)],
    ]

    def __init__(self, cfg: RunConfig, source: str | None) -> None:
        """`source`: the picker's initial value, "preset:tiny" or "profile:/path"."""
        super().__init__()
        self._initial_cfg = cfg
        self._source = source
        self._measuring = None  # the TrainingControl of the measurement running, to cancel it
        self._measure_error = ""  # a failed measurement's one line, shown until the next change

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="setup-body"):
            yield ConfigForm(self._initial_cfg, id="config-form")
            with Vertical(id="setup-side"):
                yield ProfilePicker(self._source, id="profile-picker")
                yield MemoryPanel(id="memory-panel")
                yield Static("", id="setup-status")
                with Horizontal(id="setup-actions"):
                    yield Button("Start training", id="start", variant="success")
                    yield Button("Resume a run…", id="open-resume")
        yield Footer()

    def on_resize(self, event) -> None:  # type: ignore[no-untyped-def]
        # Under COMPACT_WIDTH the messages go under their fields (beside them they would be squeezed
        # into a few columns) and the side column narrows (app.tcss).
        self.set_class(event.size.width < COMPACT_WIDTH, "-compact")

    @property
    def form(self) -> ConfigForm:
        return self.query_one(ConfigForm)

    # ------------------------------------------------------------------ form changes

    @on(ConfigForm.Changed)
    def _config_changed(self, event: ConfigForm.Changed) -> None:
        self.query_one(MemoryPanel).show(event.config, event.errors)
        self.query_one("#start", Button).disabled = bool(event.errors)
        self._measure_error = ""
        self._show_status()

    @on(MemoryPanel.Redrawn)
    def _show_status(self) -> None:
        """One short status (it has at most 3 lines of the side column): what to fix, or what Start will do."""
        if self._measuring is not None:
            return  # the measurement's progress holds the status until it ends
        status = self.query_one("#setup-status", Static)
        errors = self.form.errors
        n = len(errors)
        note = self.form.dataset_note
        if n:
            fields = ", ".join(label(k) for k in errors)
            status.update(Text(f"{n} setting{'s' if n != 1 else ''} to fix before starting: {fields}", style="bold red"))
        elif self._measure_error:
            status.update(Text(self._measure_error, style="bold red"))
        elif self.query_one(MemoryPanel).verdict == "does not fit":
            fixes = self.query_one(MemoryPanel).fixes
            keys = f"; {fixes[0].key.upper()}-{fixes[-1].key.upper()} fix it" if len(fixes) > 1 else \
                f"; {fixes[0].key.upper()} fixes it" if fixes else ""
            status.update(Text(f"does not fit: Start asks first{keys}", style="bold red"))
        else:
            status.update(Text("ready to start" + (f" · {note}" if note else ""), style="green"))

    def action_fix(self, index: int) -> None:
        """Apply the memory panel's fix number `index` (F6-F10) to the form."""
        fixes = self.query_one(MemoryPanel).fixes
        if index >= len(fixes):
            return
        fix = fixes[index]
        for key, value in fix.changes.items():
            self.form.set_value(key, value)
        self.notify(f"{fix.what}: {fix.verdict}", title="memory fix applied", timeout=3)

    @on(ProfilePicker.PresetChosen)
    def _preset_chosen(self, event: ProfilePicker.PresetChosen) -> None:
        try:
            cfg = with_preset(self.form.config, event.name)
        except ConfigError as e:
            self.notify(str(e), title="preset", severity="error")
            return
        self.form.load(cfg)
        self.notify(f"preset {event.name} loaded", timeout=2)

    @on(ProfilePicker.ProfileChosen)
    def _profile_chosen(self, event: ProfilePicker.ProfileChosen) -> None:
        self.load_file(event.path)

    def load_file(self, path: Path) -> bool:
        try:
            cfg = load_profile(path)
        except ConfigError as e:
            self.notify(str(e), title="cannot load profile", severity="error", timeout=8)
            return False
        self.form.load(cfg)
        self.notify(f"profile {path.stem} loaded", timeout=2)
        return True

    @on(ProfilePicker.SaveRequested)
    def _save_requested(self, event: ProfilePicker.SaveRequested) -> None:
        self._save(event.name)

    def action_save_profile(self) -> None:
        self._save(self.query_one("#profile-name", Input).value.strip())

    def _save(self, name: str) -> None:
        problem = name_problem(name)
        if problem:
            self.notify(problem, title="profile name", severity="warning")
            return
        if self.form.errors:
            self.notify("fix the settings marked in red before saving", title="not saved", severity="warning")
            return
        try:
            path = save_profile(self.form.config, name)
        except (OSError, ConfigError) as e:
            self.notify(str(e), title="not saved", severity="error")
            return
        self.query_one(ProfilePicker).refresh_profiles(select=f"profile:{path}")
        self.notify(f"saved {path}", title="profile saved")

    # ------------------------------------------------------------------ actions

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        form = self.form
        if form.errors:
            self.notify("fix the settings marked in red first", title="cannot start", severity="warning")
            return
        panel = self.query_one(MemoryPanel)
        if panel.verdict == "does not fit":
            cfg = copy.deepcopy(form.config)

            def answered(start: bool | None) -> None:
                if start:
                    self.post_message(StartTraining(cfg))

            self.app.push_screen(StartConfirm(panel.verdict_line(), list(panel.fixes), self.action_fix), answered)
            return
        self.post_message(StartTraining(copy.deepcopy(form.config)))

    # ------------------------------------------------------------------ measure here

    def action_measure(self) -> None:
        """F4: measure the settings' speed on this machine (the panel's target); F4 again cancels."""
        if self._measuring is not None:
            self._measuring.stop()
            self.query_one("#setup-status", Static).update(Text("cancelling the measurement…", style="yellow"))
            return
        if self.form.errors:
            self.notify("fix the settings marked in red first", title="cannot measure", severity="warning")
            return
        panel = self.query_one(MemoryPanel)
        target, device = panel.target, panel.here_device
        if device is None:
            self.notify(f"{target.name} is not in this machine: choose this machine's CPU or its GPU to measure",
                        title="cannot measure", severity="warning")
            return
        from engine.control import TrainingControl

        cfg = copy.deepcopy(self.form.config)
        cfg.train.device = device
        self._measuring = TrainingControl()
        self._measure_status(f"measuring on {target.name}: preparing (F4 cancels)")
        self._measure(cfg, self._measuring)

    @work(thread=True, exclusive=True, group="measure")
    def _measure(self, cfg: RunConfig, control) -> None:
        from engine.errors import UserError
        from engine.train.measure import MeasureCancelled, measure

        def progress(line: str) -> None:
            if line.startswith("step "):
                self.app.call_from_thread(self._measure_status, f"measuring: {line.split(':')[0]} (F4 cancels)")

        try:
            _, _, m = measure(cfg, log=progress, control=control)
        except MeasureCancelled as e:
            self.app.call_from_thread(self._measure_done, str(e), "warning")
        except UserError as e:
            self.app.call_from_thread(self._measure_done, f"measurement failed: {str(e).splitlines()[0]}", "error")
        except Exception as e:  # the worker must not take the app down: one line, as for a user error
            self.app.call_from_thread(self._measure_done, f"measurement failed: {type(e).__name__}: "
                                                          f"{str(e).splitlines()[0] if str(e) else ''}", "error")
        else:
            self.app.call_from_thread(self._measure_done, f"measured here: {m.tokens_per_s:,.0f} tokens/s over "
                                                          f"{m.steps} steps", "information")

    def on_unmount(self) -> None:
        if self._measuring is not None:  # the worker thread ends at its next step instead of outliving the app
            self._measuring.stop()

    def _measure_status(self, line: str) -> None:
        self.query_one("#setup-status", Static).update(Text(line, style="bold yellow"))

    def _measure_done(self, line: str, severity: str) -> None:
        self._measuring = None
        self._measure_error = line if severity == "error" else ""  # stays until the next change
        self.notify(line, title="measure here", severity=severity, timeout=6)
        self.query_one(MemoryPanel).redraw()  # the kept measurement replaces the model; the status follows

    @on(Button.Pressed, "#open-resume")
    def action_open_resume(self) -> None:
        self.post_message(OpenResumePicker(self.form.config.run.out_dir))
