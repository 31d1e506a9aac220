"""`tui-lm browse RUN [RUN ...]`: open runs read-only; one is browsed, several are compared.

    tui-lm browse RUN             the whole history of a run: curves, evaluations, samples,
                                  checkpoints, final test numbers, the resolved config
    tui-lm browse RUN_A RUN_B...  their curves overlaid (by step, or by tokens with t), final
                                  metrics and the settings that differ side by side

Nothing in the run folders is written. The same views open from the resume
picker (b browses, space marks, c compares the marked runs).
Bad input prints one line `tui-lm browse: error: ...` and returns 2.
"""

from __future__ import annotations

import sys

from tui_lm.commands.common import run_app, run_folder, run_main
from tui_lm.flags import Parser

PROG = "tui-lm browse"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Browse a run read-only, or compare several.")
    p.add_argument("runs", nargs="+", metavar="RUN_FOLDER", help="run folders (hold run.toml, metrics.jsonl)")
    return p


def run(argv: list[str]) -> int:
    runs = [run_folder(r) for r in build_parser().parse_args(argv).runs]
    return run_app(roots=sorted({r.parent for r in runs}), browse=runs)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
