"""Help: the keys of each screen and where files go."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("everywhere", "q / ctrl+q", "quit (asks first; an active run is checkpointed and stopped)"),
    ("", "? / f1", "this help"),
    ("setup", "ctrl+t", "start training with the settings shown"),
    ("", "ctrl+r", "resume picker: the runs you can continue"),
    ("", "ctrl+s", "save the settings as a named profile"),
    ("", "F6-F10", "apply a fix the memory panel offers when the run does not fit"),
    ("dashboard", "p", "pause: the step finishes and a checkpoint is written"),
    ("", "r", "resume a paused run"),
    ("", "s", "stop: checkpoint, then back to setup"),
    ("", "e", "smooth the training loss (moving average) or show it raw"),
    ("", "l", "loss plot on a log scale or a linear one"),
    ("", "escape", "back to setup once the run has ended"),
    ("resume picker", "enter", "resume the selected run"),
    ("", "escape", "back to setup"),
]

NOTES = """\
Fields are checked as you type: a red message beside a field says what is wrong, and \
Start stays disabled until every message is gone (the dataset is checked too). The memory \
panel follows every change and estimates nothing while a field is wrong; it checks this \
machine (its GPU, or its RAM without one) or any GPU chosen from its list. Its rows are the \
memory live at the step's peak moment: gradients show 0 B when that moment comes before \
backward has made them.

A * after a perplexity means partial: only the split's first batches were scored (periodic \
evaluations, or a bounded final one), and word perplexity is extrapolated from them.

Profiles are saved in $TUI_LM_PROFILES, or ~/.config/tui-lm/profiles/, in the same format \
as a run folder's run.toml; open one with `tui-lm path/to/file.toml`.

Runs are written to the output folder (default lm_<dataset>/): run.toml, checkpoints in \
snapshots/, the final model in models/, metrics.jsonl and TensorBoard logs.
"""


def keys_table() -> Table:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("where", style="cyan")
    table.add_column("key", style="bold")
    table.add_column("what it does")
    for where, key, what in KEYS:
        table.add_row(where, key, what)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Static(Text("tui-lm keys", style="bold"), id="help-title")
            yield Static(keys_table(), id="help-keys")
            yield Static(NOTES, id="help-notes", markup=False)
            yield Static(Text("escape closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
