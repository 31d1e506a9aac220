"""The editable hyperparameters, validated on every keystroke.

Each row is label · input · message. On any change the form rebuilds a
`RunConfig` from every input (unparsable text becomes a message of its own),
runs `engine.config.run_config.validation_errors` on it and checks that the dataset can
be read, writes each message in the user's words next to the field to change
(tui_lm.widgets.setup.messages) and posts `ConfigForm.Changed`, which the
setup screen uses to refresh the memory panel and enable or disable Start.
"""

from __future__ import annotations

import copy
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Collapsible, Input, Label, Select, Static

from engine.config.run_config import RunConfig, validation_errors
from tui_lm.widgets.setup.fields import COLLAPSED, FIELDS, GROUPS, BoolField, FieldSpec, parse, to_text, widget_id
from tui_lm.widgets.setup.messages import dataset_problem, user_messages


class FieldRow(Horizontal):
    """label · input · error message, one setting."""

    def __init__(self, spec: FieldSpec, value: Any) -> None:
        # Text settings (paths, names, prompts) get a wide input.
        super().__init__(classes="field-row -wide" if spec.kind == "str" else "field-row")
        self.spec = spec
        self.value = value

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.label, classes="field-label")
        if spec.kind == "bool":
            yield BoolField(bool(self.value), id=widget_id(spec), compact=True, classes="field-input")
        elif spec.kind == "choice":
            yield Select([(c, c) for c in spec.choices], value=self.value, allow_blank=False,
                         id=widget_id(spec), compact=True, classes="field-input")
        else:
            yield Input(to_text(self.value), placeholder=spec.placeholder, id=widget_id(spec),
                        compact=True, classes="field-input", select_on_focus=False)
        yield Static("", id="e-" + widget_id(spec)[2:], classes="field-error")


class ConfigForm(VerticalScroll):
    class Changed(Message):
        """The settings changed; `errors` ({field key: message in the user's words}) is empty when valid."""

        def __init__(self, form: "ConfigForm", config: RunConfig, errors: dict[str, str]) -> None:
            super().__init__()
            self.form = form
            self.config = config
            self.errors = errors

        @property
        def control(self) -> "ConfigForm":
            return self.form

    def __init__(self, cfg: RunConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        # Settings the form does not show (attention, seed, ...) come from here.
        self._base = copy.deepcopy(cfg)
        self.config = copy.deepcopy(cfg)
        self.errors: dict[str, str] = {}  # {field key: message in the user's words}
        self.dataset_note = ""  # e.g. "will be downloaded from the hub": not an error
        self._dataset_checked: tuple[str, tuple[str, str]] | None = None

    def compose(self) -> ComposeResult:
        for title, specs in GROUPS:
            rows = [FieldRow(spec, self._base.get(spec.key)) for spec in specs]
            yield Collapsible(*rows, title=title, collapsed=title in COLLAPSED, classes="form-group")
        yield Static("", id="other-errors")

    def on_mount(self) -> None:
        self.revalidate()

    # ------------------------------------------------------------------ public

    def load(self, cfg: RunConfig) -> None:
        """Show `cfg` in every field (a preset or profile was chosen)."""
        self._base = copy.deepcopy(cfg)
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            for spec in FIELDS.values():
                value = cfg.get(spec.key)
                widget = self.query_one(f"#{widget_id(spec)}")
                if isinstance(widget, Input):
                    widget.value = to_text(value)
                else:
                    widget.value = value
        self.revalidate()

    def set_value(self, key: str, value: Any) -> None:
        """Set one field as if typed (used for the preset's model shape)."""
        spec = FIELDS[key]
        widget = self.query_one(f"#{widget_id(spec)}")
        widget.value = to_text(value) if isinstance(widget, Input) else value

    # ------------------------------------------------------------------ validation

    @on(Input.Changed, ".field-input")
    @on(Select.Changed, ".field-input")
    @on(Checkbox.Changed, ".field-input")
    def _field_changed(self, event: Message) -> None:
        event.stop()
        self.revalidate()

    def revalidate(self) -> None:
        cfg = copy.deepcopy(self._base)
        errors: dict[str, str] = {}
        for spec in FIELDS.values():
            widget = self.query_one(f"#{widget_id(spec)}")
            if isinstance(widget, Input):
                value, problem = parse(spec, widget.value)
                if problem:
                    errors[spec.key] = problem
                    continue
            else:
                value = widget.value
            setattr(getattr(cfg, spec.section), spec.name, value)
        # Fields that did not parse keep the base value, so these checks still run
        # on the rest; a parse message wins over a range message for the same field.
        for key, message in validation_errors(cfg).items():
            errors.setdefault(key, message)
        problem, self.dataset_note = self._dataset(cfg.data.dataset)
        if problem:
            errors.setdefault("data.dataset", problem)  # checked before Start is enabled
        errors = user_messages(errors, cfg)
        self.config, self.errors = cfg, errors
        self._show_errors(errors)
        self.post_message(self.Changed(self, copy.deepcopy(cfg), dict(errors)))

    def _dataset(self, dataset: str) -> tuple[str, str]:
        """dataset_problem, looked up again only when the dataset text changes."""
        if self._dataset_checked is None or self._dataset_checked[0] != dataset:
            self._dataset_checked = (dataset, dataset_problem(dataset))
        return self._dataset_checked[1]

    def _show_errors(self, errors: dict[str, str]) -> None:
        for spec in FIELDS.values():
            message = errors.get(spec.key, "")
            label = self.query_one(f"#e-{widget_id(spec)[2:]}", Static)
            label.update(message)
            label.set_class(bool(message), "-shown")
            self.query_one(f"#{widget_id(spec)}").set_class(bool(message), "-invalid")
        others = [m for k, m in errors.items() if k not in FIELDS]
        other = self.query_one("#other-errors", Static)
        other.update("\n".join(f"• {m}" for m in others))
        other.display = bool(others)
