"""Errors the engine raises for problems the user can fix.

Anything derived from `UserError` is reported by the CLI as one line and exit
status 2, never as a traceback: it means the input (a flag, a TOML file, a data
path) was wrong, not the program.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what and how to fix it."""


class ConfigError(UserError):
    """A configuration value or file is invalid."""


class DataError(UserError):
    """A dataset cannot be found or read."""


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated or corrupt."""


class FileError(UserError):
    """A file cannot be read or written: full disk, size limit, a file where a folder belongs, damage."""


class RunLocked(UserError):
    """Another process is training in this run folder."""


def short_reason(exc: BaseException) -> str:
    """One line naming an exception, for error messages."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
