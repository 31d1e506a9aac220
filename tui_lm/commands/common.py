"""What the run-folder sub-commands (`sample`, `export`, `watch`, `browse`, `pause`...) share: error handling and path display."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from engine.errors import UserError
from engine.runs.layout import RUN_CONFIG, is_run_folder, named_folder


def relative(path: Path, root: Path) -> str:
    """`path` as the user thinks of it: inside the run folder when it is, else as given."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def run_folder(text: str) -> Path:
    """A RUN_FOLDER argument (a run.toml names its folder); a UserError when it is not one."""
    run_dir = named_folder(Path(text))
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if not is_run_folder(run_dir):
        raise UserError(f"{run_dir} is not a run folder (no {RUN_CONFIG} in it)")
    return run_dir


def run_main(run: Callable[[list[str]], int], argv: list[str] | None, prog: str) -> int:
    """Run a sub-command: a user error is one line on stderr and exit status 2, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, already reported)
        return e.code if isinstance(e.code, int) else 2


def run_app(**kwargs: Any) -> int:
    """Open the dashboard app (make_app's arguments) until it quits; its exit status."""
    from tui_lm.app import make_app  # Textual and the screens load only when the app is opened

    app = make_app(**kwargs)
    app.run()
    return int(app.return_code or 0)
