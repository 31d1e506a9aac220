"""Which settings the setup form shows, in which groups, and how typed text becomes a value.

Generated from the settings schema (engine.config.run_config.SCHEMA): every user setting
has a form group in its declaration, so a new setting appears on the form
without touching this file. Keys are the "section.field" strings that
`engine.config.run_config.validation_errors` uses, so its messages land next to the
right field. Settings whose group is "picker" (the preset) are chosen with
the setup screen's preset/profile picker instead of an input. A boolean
setting is a `BoolField`.
"""

from __future__ import annotations

import math
from typing import Any

from textual.widgets import Checkbox

from engine.config.run_config import PICKER, user_settings
from engine.config.schema import Setting, format_value, parse_text

FieldSpec = Setting  # one form field is one setting

# Groups in the order the form shows them; a group a new declaration invents comes last.
GROUP_ORDER = ("Model", "Training", "Data and output", "Advanced")
COLLAPSED = ("Advanced",)  # shown folded: rarely changed


def _groups() -> list[tuple[str, list[Setting]]]:
    titles = list(GROUP_ORDER)
    for s in user_settings():
        if s.group not in titles and s.group != PICKER:
            titles.append(s.group)
    return [(t, [s for s in user_settings() if s.group == t]) for t in titles]


GROUPS: list[tuple[str, list[Setting]]] = _groups()
FIELDS: dict[str, Setting] = {s.key: s for _, group in GROUPS for s in group}
# Settings edited elsewhere on the setup screen, by what edits them.
ELSEWHERE: dict[str, str] = {s.key: "the preset picker" for s in user_settings() if s.group == PICKER}


def widget_id(spec: Setting) -> str:
    return "f-" + spec.key.replace(".", "-")


def to_text(value: Any) -> str:
    """How a config value is shown in its input box."""
    return format_value(value)


def parse(spec: Setting, text: str) -> tuple[Any, str]:
    """(value, "") or (None, what is wrong with the text)."""
    try:
        value = parse_text(spec, text)
    except ValueError as e:
        return None, str(e)
    if spec.kind == "float" and not math.isfinite(value):
        return None, "must be a finite number"
    return value, ""


class BoolField(Checkbox):
    """A boolean setting's checkbox that reads on or off without colour: `▐X▌ on` / `▐ ▌ off`.

    Textual's Checkbox draws `▐X▌` either way and tells the two apart by
    colour only, so a plain terminal (NO_COLOR, no ANSI colours) showed every
    boolean as on.
    """

    def __init__(self, value: bool, **kwargs: Any) -> None:
        super().__init__(self._word(value), value, **kwargs)

    @staticmethod
    def _word(value: bool) -> str:
        return "on" if value else "off"

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]  (a class constant in Checkbox)
        return "X" if self.value else " "

    def watch_value(self) -> None:
        super().watch_value()
        self.label = self._word(self.value)
