"""Start from a preset or a saved profile; save the current settings as a profile."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Select

from engine.config.loading import preset_names
from tui_lm.profiles import list_profiles, profiles_dir


def source_options() -> list[tuple[str, str]]:
    options = [(f"preset: {name}", f"preset:{name}") for name in preset_names()]
    options += [(f"profile: {p.stem}", f"profile:{p}") for p in list_profiles()]
    return options


class ProfilePicker(Vertical):
    class PresetChosen(Message):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class ProfileChosen(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class SaveRequested(Message):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, initial: str | None, **kwargs) -> None:
        """`initial`: the Select value to show first, e.g. "preset:tiny"."""
        super().__init__(**kwargs)
        self._initial = initial

    def compose(self) -> ComposeResult:
        options = source_options()
        value = self._initial if self._initial in {v for _, v in options} else Select.NULL
        with Horizontal(classes="picker-row"):
            yield Label("start from", classes="picker-label")
            yield Select(options, value=value, prompt="preset or profile…", id="source-select", compact=True)
        with Horizontal(classes="picker-row"):
            yield Label("save as", classes="picker-label")
            yield Input(placeholder="profile name", id="profile-name", compact=True)
            yield Button("Save", id="save-profile", compact=True)
        yield Label(f"profiles: {self._folder_label()}", id="profiles-folder")

    @staticmethod
    def _folder_label() -> str:
        folder = profiles_dir()
        home = Path.home()
        return f"~/{folder.relative_to(home)}" if folder.is_relative_to(home) else str(folder)

    def on_mount(self) -> None:
        self.border_title = "presets and profiles"
        self._applied = self.query_one("#source-select", Select).value

    @on(Select.Changed, "#source-select")
    def _source_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = event.value
        # Re-announcing the value already applied would undo the user's edits.
        if value == self._applied or value is Select.NULL:
            return
        self._applied = value
        kind, _, rest = str(value).partition(":")
        if kind == "preset":
            self.post_message(self.PresetChosen(rest))
        else:
            self.post_message(self.ProfileChosen(Path(rest)))

    @on(Button.Pressed, "#save-profile")
    @on(Input.Submitted, "#profile-name")
    def _save(self, event: Message) -> None:
        event.stop()
        self.post_message(self.SaveRequested(self.query_one("#profile-name", Input).value.strip()))

    def refresh_profiles(self, select: str | None = None) -> None:
        """Re-read the profile folder (after a save); optionally show `select`."""
        widget = self.query_one("#source-select", Select)
        current = widget.value
        with self.prevent(Select.Changed):
            widget.set_options(source_options())
            target = select or current
            if target is not Select.NULL and target in {v for _, v in source_options()}:
                widget.value = target
        self._applied = widget.value
