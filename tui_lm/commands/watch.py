"""`tui-lm watch RUN_FOLDER`: the dashboard attached to a run another process trains.

    tui-lm watch RUN

Shows the run live from its folder (metrics.jsonl and state.json), whether it
was started headless, under torchrun, or on another machine sharing the
filesystem; p / r / s pause, resume and stop it (requests the trainer takes at
its next logging step), escape or q leave it running. A run that has ended
opens too, and is followed if it is resumed elsewhere.
Bad input prints one line `tui-lm watch: error: ...` and returns 2.
"""

from __future__ import annotations

import sys

from tui_lm.commands.common import run_app, run_folder, run_main
from tui_lm.flags import Parser

PROG = "tui-lm watch"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Watch (and pause, resume, stop) a run trained by another process.")
    p.add_argument("run", metavar="RUN_FOLDER", help="the run folder (holds run.toml, state.json, metrics.jsonl)")
    return p


def run(argv: list[str]) -> int:
    run_dir = run_folder(build_parser().parse_args(argv).run)
    return run_app(roots=[run_dir.parent], watch=run_dir)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
