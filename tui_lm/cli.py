"""Command line of tui-lm: the dashboard, headless training, and the sub-commands.

    tui-lm                              open the dashboard
    tui-lm path/to/run.toml             open the dashboard with that profile loaded
    tui-lm --resume [PATH]              the dashboard's resume picker (headless with --no-ui)
    tui-lm --no-ui [flags]              train without a UI (servers, scripts, torchrun)
    tui-lm estimate|sample|export ...   memory estimate, text generation, Hugging Face export

Every multi-word flag is accepted with underscores and with hyphens
(`--max_seq_len` == `--max-seq-len`). User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from engine.errors import UserError

SUBCOMMANDS = ("estimate", "sample", "export")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def spellings(*names: str) -> list[str]:
    """`--max_seq_len` -> ["--max_seq_len", "--max-seq-len"] (both accepted)."""
    out: list[str] = []
    for name in names:
        for variant in (name, name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
            if variant not in out:
                out.append(variant)
    return out


# (flags, section.key, type, help). Types are the config field's; argparse converts.
TRAIN_FLAGS: list[tuple[tuple[str, ...], str, Callable[[str], Any], str]] = [
    (("--d_model",), "model.d_model", int, "width of the residual stream"),
    (("--num_heads",), "model.num_heads", int, "attention heads"),
    (("--num_layers",), "model.num_layers", int, "transformer blocks"),
    (("--d_ff",), "model.d_ff", int, "MLP hidden width"),
    (("--max_seq_len", "--seq_len"), "model.max_seq_len", int, "context length in tokens"),
    (("--dropout",), "model.dropout", float, "dropout probability"),
    (("--attention",), "model.attention", str, "fused (scaled_dot_product_attention) or math"),
    (("--arch",), "model.arch", str, "gpt2 (GPT-2's block) or modern (RoPE, RMSNorm, SwiGLU, QK-norm: lower perplexity)"),
    (("--dataset",), "data.dataset", str, "wikitext-2, wikitext-103, *-raw, a folder with train/valid/test.txt, or a .txt file"),
    (("--max_samples",), "data.max_samples", int, "use only the first N training lines"),
    (("--tokenizer",), "data.tokenizer", str, "bpe (trained on the data) or gpt2 (needs the hub)"),
    (("--vocab_size",), "data.vocab_size", int, "target vocabulary of the trained BPE"),
    (("--epochs",), "train.epochs", int, "passes over the training data"),
    (("--max_steps",), "train.max_steps", int, "optimizer steps (overrides --epochs)"),
    (("--batch_size",), "train.batch_size", int, "sequences per optimizer step, over all GPUs and accumulation"),
    (("--grad_accum_steps", "--grad_accum"), "train.grad_accum_steps", int, "micro-steps per optimizer step"),
    (("--lr",), "train.lr", float, "peak learning rate"),
    (("--warmup_steps", "--warmup"), "train.warmup_steps", int, "linear warmup steps"),
    (("--min_lr_ratio",), "train.min_lr_ratio", float, "final LR as a fraction of --lr"),
    (("--weight_decay",), "train.weight_decay", float, "AdamW weight decay (matrices only)"),
    (("--optimizer",), "train.optimizer", str, "adamw, or muon (Muon for hidden matrices, AdamW for the rest)"),
    (("--muon_lr",), "train.muon_lr", float, "Muon's peak learning rate (with --optimizer muon)"),
    (("--grad_clip",), "train.grad_clip", float, "max gradient norm, 0 = off"),
    (("--precision",), "train.precision", str, "auto, fp32, bf16 or fp16"),
    (("--compile",), "train.compile", str, "torch.compile: auto (on for CUDA), on, off"),
    (("--device",), "train.device", str, "auto, cpu, cuda, cuda:N, mps"),
    (("--seed",), "train.seed", int, "random seed"),
    (("--log_interval",), "train.log_interval", int, "steps between logged training metrics"),
    (("--eval_interval",), "train.eval_interval", int, "steps between validation runs"),
    (("--eval_batches",), "train.eval_batches", int, "batches per periodic validation, 0 = whole split"),
    (("--save_interval",), "train.save_interval", int, "steps between checkpoints"),
    (("--keep_checkpoints",), "train.keep_checkpoints", int, "newest checkpoints kept besides the best"),
    (("--sample_tokens",), "train.sample_tokens", int, "tokens sampled at each evaluation, 0 = off"),
    (("--sample_prompt",), "train.sample_prompt", str, "prompt of the evaluation samples"),
    (("--out", "--out_dir"), "run.out_dir", str, "parent folder of run folders (default lm_<dataset>)"),
    (("--run_name",), "run.run_name", str, "run folder name (default <preset>-<time>)"),
]


def build_parser() -> Parser:
    p = Parser(prog="tui-lm", description="Train GPT-style language models from the terminal.",
               epilog="Sub-commands: tui-lm estimate|sample|export --help")
    p.add_argument("profile", nargs="?", help="a run.toml to open in the dashboard")
    p.add_argument("--no-ui", "--no_ui", dest="no_ui", action="store_true", help="train headless")
    p.add_argument(*spellings("--config"), dest="config", help="TOML run file (flags override it)")
    p.add_argument(*spellings("--preset", "--model_preset"), dest="preset", help="tiny, small or medium")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help="resume a run folder, or the most recent run for the dataset")
    p.add_argument(*spellings("--grad_checkpointing"), dest="grad_checkpointing", action="store_true",
                   default=None, help="recompute activations in backward to save memory")
    for names, key, typ, help_ in TRAIN_FLAGS:
        p.add_argument(*spellings(*names), dest=key, type=typ, default=None, help=help_)
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for _, key, _, _ in TRAIN_FLAGS:
        value = getattr(args, key)
        if value is not None:
            section, field = key.split(".")
            out.setdefault(section, {})[field] = value
    if args.grad_checkpointing:
        out.setdefault("model", {})["grad_checkpointing"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            import importlib

            return importlib.import_module(f"tui_lm.commands.{argv[0]}").main(argv[1:])
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
    from tui_lm.app import make_app

    profile = args.profile or args.config
    if profile and not Path(profile).is_file():
        raise UserError(f"profile {profile} does not exist")
    roots = None
    if args.resume:  # a run folder lists its siblings; any other folder its runs
        chosen = Path(args.resume)
        roots = [chosen.parent if (chosen / "run.toml").is_file() else chosen]
    app = make_app(profile=Path(profile) if profile else None, resume_picker=args.resume is not None,
                   roots=roots, out_dir=getattr(args, "run.out_dir"))
    app.run()
    return int(app.return_code or 0)


if __name__ == "__main__":
    sys.exit(main())
