"""`tui-lm export RUN_FOLDER --format hf OUT_DIR`: write a run's model for other tools.

    tui-lm export RUN --format hf OUT_DIR [--checkpoint PATH]

`hf` writes a Hugging Face folder (see engine.artifacts.export): GPT2LMHeadModel
for arch gpt2, Qwen3ForCausalLM for arch modern, which `from_pretrained` and
`AutoTokenizer.from_pretrained` load without custom code. A run that has not finished has no final model; the
newest checkpoint is exported instead, and the command says so.
Bad input prints one line `tui-lm export: error: ...` and returns 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.config.costs import count_params
from engine.errors import UserError
from engine.files import os_reason
from tui_lm.cli import Parser
from tui_lm.commands.common import relative, run_main

PROG = "tui-lm export"
FORMATS = ("hf",)


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Export a trained run's model.")
    p.add_argument("run", metavar="RUN_FOLDER", help="the run folder (holds run.toml, models/, snapshots/)")
    p.add_argument("out", metavar="OUT_DIR", help="folder to write (created if missing)")
    p.add_argument("--format", default="hf", help="hf: a Hugging Face folder, GPT-2 or Qwen3 by the run's arch (the only format so far)")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="a snapshots/step_*.pt to export instead")
    return p


def run(argv: list[str]) -> int:
    from engine.artifacts.export import HF_CLASS, export_hf
    from engine.artifacts.final_model import load_model

    args = build_parser().parse_args(argv)
    if args.format not in FORMATS:
        raise UserError(f"unknown format {args.format!r}; supported: {', '.join(FORMATS)}")
    run_dir, out = Path(args.run), Path(args.out)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    loaded = load_model(run_dir, args.checkpoint, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    if loaded.from_checkpoint and args.checkpoint is None:
        print(f"no final model in {run_dir / 'models'}; exporting checkpoint {relative(loaded.source, run_dir)}")
    try:
        export_hf(loaded.model, loaded.tokenizer_path, out)
    except OSError as e:  # anything engine.files did not already name
        raise UserError(f"cannot write {out}: {os_reason(e)}") from None
    print(f"exported {relative(loaded.source, run_dir)} to {out} (Hugging Face {HF_CLASS[loaded.model.cfg.arch]}, "
          f"{count_params(loaded.model.cfg):,} parameters)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
