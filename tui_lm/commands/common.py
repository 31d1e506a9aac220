"""What the run-folder sub-commands (`sample`, `export`) share: error handling and path display."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from engine.errors import UserError


def relative(path: Path, root: Path) -> str:
    """`path` as the user thinks of it: inside the run folder when it is, else as given."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


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
