"""Command line of tui-lm: the dashboard, headless training, and the sub-commands.

    tui-lm                              open the dashboard
    tui-lm path/to/run.toml             open the dashboard with that profile loaded
    tui-lm --resume [PATH]              the dashboard's resume picker (headless with --no-ui)
    tui-lm --no-ui [flags]              train without a UI (servers, scripts, torchrun)
    tui-lm estimate|sample|export ...   memory estimate, text generation, Hugging Face export
    tui-lm watch RUN                    the dashboard attached to a run another process trains
    tui-lm browse RUN [RUN ...]         a run's whole history read-only; several runs compared
    tui-lm pause|resume|stop RUN        steer a run another process is training

Every multi-word flag is accepted with underscores and with hyphens
(`--max_seq_len` == `--max-seq-len`). User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.config.run_config import user_settings
from engine.errors import UserError
from tui_lm.commands.common import run_app
from tui_lm.flags import Parser, add_setting_flags, spellings
from tui_lm.flags import overrides_from as flag_overrides

SUBCOMMANDS = ("estimate", "sample", "export", "watch", "browse")
STEER = ("pause", "resume", "stop")  # one module, told which action


SECTION_TITLES = {"model": "model shape", "train": "training", "data": "data", "run": "run folder"}


def build_parser() -> Parser:
    p = Parser(prog="tui-lm", description="Train GPT-style language models from the terminal.",
               epilog="Sub-commands: tui-lm estimate|sample|export|watch|browse|pause|resume|stop --help")
    p.add_argument("profile", nargs="?", help="a run.toml to open in the dashboard")
    p.add_argument("--no-ui", "--no_ui", dest="no_ui", action="store_true", help="train headless")
    p.add_argument(*spellings("--config"), dest="config", metavar="PATH", help="TOML run file (flags override it)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help="resume a run folder, or the most recent run for the dataset")
    p.add_argument(*spellings("--accept_data_change"), dest="accept_data_change", action="store_true",
                   help="with --resume: continue on data that changed since the run started (same tokenizer)")
    for section, title in SECTION_TITLES.items():
        add_setting_flags(p, [s for s in user_settings() if s.section == section], title)
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return flag_overrides(args, user_settings())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            import importlib

            return importlib.import_module(f"tui_lm.commands.{argv[0]}").main(argv[1:])
        if argv and argv[0] in STEER:
            from tui_lm.commands.steer import main as steer

            return steer(argv)
        args = build_parser().parse_args(argv)
        if args.no_ui:
            from tui_lm.headless import run_headless

            if args.profile:
                raise UserError(f"unexpected argument {args.profile!r} with --no-ui; use --config FILE")
            return run_headless(args, overrides_from(args))
        return _run_app(args)
    except UserError as e:
        print(f"tui-lm: error: {e}", file=sys.stderr)
        return 2


def _run_app(args: argparse.Namespace) -> int:
    profile = args.profile or args.config
    if profile and not Path(profile).is_file():
        raise UserError(f"profile {profile} does not exist")
    # A run folder is listed with its siblings and preselected; any other folder lists its runs.
    return run_app(profile=Path(profile) if profile else None, resume_picker=args.resume is not None,
                   overrides=overrides_from(args), resume=Path(args.resume) if args.resume else None)


if __name__ == "__main__":
    sys.exit(main())
