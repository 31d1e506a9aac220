"""Help: the keys of the screen it was opened over and the app's, generated from their bindings, and where files go.

Nothing here lists a key: the rows come from the screen class's bindings (its
own and those it inherits, as Textual merges them) and the app's, so a
binding added to a screen shows in its help without editing this file. A
binding's `tooltip` is its longer explanation when it has one, else its
footer description is shown. Textual's own screen bindings (focus moves,
copy) and the app's system ones are left out.
"""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

NOTES = """\
Fields are checked as you type: a red message beside a field says what is wrong, and \
Start stays disabled until every message is gone (the dataset is checked too). The memory \
panel follows every change and estimates nothing while a field is wrong; it checks this \
machine (its GPU, or its RAM without one) or any GPU chosen from its list; the fixes it offers \
when a run does not fit are applied with the keys it names. Its rows are the \
memory live at the step's peak moment: gradients show 0 B when that moment comes before \
backward has made them.

A * after a figure (loss, perplexity, word perplexity, bits per byte) means partial: only \
the split's first batches were scored (periodic evaluations, or a bounded final one), and the \
word perplexity is extrapolated from them. Every screen that shows a * says so beside it.

A run whose model shape differs from the preset it started from is labelled \
"custom (from tiny)", with what differs.

Profiles are saved in $TUI_LM_PROFILES, or ~/.config/tui-lm/profiles/, in the same format \
as a run folder's run.toml; open one with `tui-lm path/to/file.toml`.

Runs are written to the output folder (default lm_<dataset>/): run.toml, checkpoints in \
snapshots/, the final model in models/, metrics.jsonl and TensorBoard logs.
"""


def _defaults() -> set[tuple[str, str]]:
    """(key, action) of the bindings every Textual screen has: not this project's keys."""
    merged = ModalScreen._merge_bindings().key_to_bindings  # ModalScreen's include Screen's
    return {(b.key, b.action) for bindings in merged.values() for b in bindings}


def bindings_of(owner: type[Screen | App] | App) -> list[Binding]:
    """The bindings of a screen class or an app (inherited ones merged as Textual does), Textual's own left out.

    An app instance's include the command palette's key, which Textual adds when the app is made.
    """
    cls = owner if isinstance(owner, type) else type(owner)
    defaults = _defaults() if issubclass(cls, Screen) else set()
    merged = cls._merge_bindings().key_to_bindings if isinstance(owner, type) else owner._bindings.key_to_bindings
    return [b for bindings in merged.values() for b in bindings
            if (b.key, b.action) not in defaults and not b.system]


def key_rows(bindings: list[Binding], key_display) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(keys, what they do) per action, keys of one action together ("^q / q"), in binding order.

    The explanation is the last tooltip among an action's bindings (they are
    merged base class first, so this project's wins over Textual's), else the
    first footer description.
    """
    keys: dict[str, list[str]] = {}
    tooltip: dict[str, str] = {}
    description: dict[str, str] = {}
    for b in bindings:
        shown = keys.setdefault(b.action, [])
        if key_display(b) not in shown:
            shown.append(key_display(b))
        tooltip[b.action] = b.tooltip or tooltip.get(b.action, "")
        description[b.action] = description.get(b.action) or b.description or b.action
    return [(" / ".join(shown), tooltip[action] or description[action]) for action, shown in keys.items()]


def screen_title(screen: type[Screen]) -> str:
    """What the help calls a screen: its HELP_TITLE, else its class name in words ("ResumeScreen" -> "resume")."""
    title = getattr(screen, "HELP_TITLE", "")
    if title:
        return title
    words = re.findall(r"[A-Z][a-z0-9]*", screen.__name__.removesuffix("Screen"))
    return " ".join(words).lower() or screen.__name__


def keys_table(sections: list[tuple[str, list[tuple[str, str]]]]) -> Group:
    """A heading and a two-column table per section; the key columns all one width, so they line up."""
    width = max((len(keys) for _, rows in sections for keys, _ in rows), default=1)
    parts: list[Text | Table] = []
    for i, (title, rows) in enumerate(sections):
        parts.append(Text(("\n" if i else "") + title, style="bold cyan"))
        table = Table(box=None, padding=(0, 2), show_header=False)
        table.add_column("key", style="bold", no_wrap=True, min_width=width)
        table.add_column("what it does")
        for keys, what in rows:
            table.add_row(keys, what)
        parts.append(table)
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,f1", "close", "Close", tooltip="close this help")]

    def __init__(self, screen: Screen | type[Screen] | None = None) -> None:
        """`screen`: the screen (or screen class) whose keys to list; None lists the app's only."""
        super().__init__()
        self.for_screen: type[Screen] | None = screen if isinstance(screen, type) or screen is None else type(screen)

    def sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(heading, rows) of the keys table: the screen's keys, then the app's."""
        show = self.app.get_key_display
        out = []
        if self.for_screen is not None:
            out.append((f"on this screen ({screen_title(self.for_screen)})", key_rows(bindings_of(self.for_screen), show)))
        out.append(("everywhere", key_rows(bindings_of(self.app), show)))
        return out

    def compose(self) -> ComposeResult:
        title = "tui-lm keys" + (f": {screen_title(self.for_screen)}" if self.for_screen is not None else "")
        closing = " / ".join(keys for keys, _ in key_rows(bindings_of(HelpScreen), self.app.get_key_display))
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Static(Text(title, style="bold"), id="help-title")
            yield Static(keys_table(self.sections()), id="help-keys")
            yield Static(NOTES, id="help-notes", markup=False)
            yield Static(Text(f"{closing} closes this help", style="dim"), id="help-close")

    def action_close(self) -> None:
        self.dismiss(None)
