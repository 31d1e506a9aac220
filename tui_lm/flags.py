"""Command-line flags generated from the settings schema (engine.config.run_config.SCHEMA).

Used by the main CLI and by `tui-lm estimate`, so a setting has the same
spellings, metavar, help and default text in both. Every multi-word flag is
accepted with underscores and with hyphens; a boolean setting gets `--x` and
`--no-x`. Values are converted by argparse (a bad number is one line, exit 2);
ranges and choices are checked by engine.config.run_config.validate, which names the
field.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

from engine.config.schema import Setting, help_text, metavar


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


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


def add_setting_flags(parser: argparse.ArgumentParser, settings: Iterable[Setting], title: str = "") -> None:
    """One flag (two for booleans) per setting; the value lands in `args.<section.name>`, None when absent."""
    group: Any = parser.add_argument_group(title) if title else parser
    for s in settings:
        names = spellings(*s.flags)
        if s.kind == "bool":
            group.add_argument(*names, dest=s.key, action="store_true", default=None, help=_escape(help_text(s)))
            off = spellings(*(f"--no_{flag[2:]}" for flag in s.flags))
            group.add_argument(*off, dest=s.key, action="store_false", help="turn it off")
            continue
        convert = {"int": int, "float": float}.get(s.kind, str)
        group.add_argument(*names, dest=s.key, type=convert, default=None, metavar=metavar(s),
                           help=_escape(help_text(s)))


def overrides_from(args: argparse.Namespace, settings: Iterable[Setting]) -> dict[str, dict[str, Any]]:
    """The flags given, as {section: {name: value}} for engine.config.loading.build_config."""
    out: dict[str, dict[str, Any]] = {}
    for s in settings:
        value = getattr(args, s.key, None)
        if value is not None:
            out.setdefault(s.section, {})[s.name] = value
    return out
