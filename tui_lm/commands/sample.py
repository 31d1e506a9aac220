"""`tui-lm sample RUN_FOLDER`: generate text from a trained run.

    tui-lm sample RUN --prompt "The history of" --max-new-tokens 200 \\
        --temperature 0.8 --top-k 50 [--seed 1] [--checkpoint PATH] \\
        [--device auto|cpu|cuda|cuda:N|mps] [--no-cache]

Uses the run's final model, or its newest checkpoint when training has not
finished (said on stderr, so stdout carries only the generated text).
Bad input prints one line `tui-lm sample: error: ...` and returns 2.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from engine.errors import UserError
from tui_lm.cli import Parser, spellings
from tui_lm.commands.common import relative, run_main

PROG = "tui-lm sample"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Generate text from a trained run.")
    p.add_argument("run", metavar="RUN_FOLDER", help="the run folder (holds run.toml, models/, snapshots/)")
    p.add_argument("--prompt", default=None, help="text to continue (default: the run's sample_prompt)")
    p.add_argument(*spellings("--max_new_tokens"), dest="max_new_tokens", type=int, default=200,
                   help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument(*spellings("--top_k"), dest="top_k", type=int, default=50,
                   help="sample among the k likeliest tokens, 0 = all (default 50)")
    p.add_argument("--seed", type=int, default=None, help="makes the output repeatable")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="a snapshots/step_*.pt to use instead")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(*spellings("--no_cache"), dest="no_cache", action="store_true",
                   help="re-encode the whole context each step (slower; for checking the KV cache)")
    return p


def resolve_device(name: str) -> torch.device:
    """The device to run on; a device that is not present is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    head, _, index = name.partition(":")
    if head not in ("cpu", "cuda", "mps") or (index and (head != "cuda" or not index.isdigit())):
        raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if head == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
    if head == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: MPS is not available; use --device cpu")
    return torch.device(name)


def run(argv: list[str]) -> int:
    from engine.artifacts.final_model import load_model
    from engine.model.sampling import sample_text

    args = build_parser().parse_args(argv)
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be 0 or positive, got {args.max_new_tokens}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature must be 0 (greedy) or a positive number, got {args.temperature}")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise UserError(f"--seed must be between 0 and 2**64 - 1, got {args.seed}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be 0 (off) or positive, got {args.top_k}")
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    device = resolve_device(args.device)
    loaded = load_model(run_dir, args.checkpoint, device=str(device),
                        warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    if loaded.from_checkpoint and args.checkpoint is None:
        print(f"no final model in {run_dir / 'models'}; sampling from checkpoint "
              f"{relative(loaded.source, run_dir)}", file=sys.stderr)
    prompt = loaded.config.train.sample_prompt if args.prompt is None else args.prompt
    text = sample_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k or None, seed=args.seed,
                       device=device, use_cache=not args.no_cache)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
