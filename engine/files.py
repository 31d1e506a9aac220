"""Torch-free file helpers every writer of a run folder or token cache shares.

- Temp files are created exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`) with a
  random name in the target's own folder, so a planted file or symlink can
  never be written through, and a rename is atomic.
- `atomic_write` writes a temp file, fsyncs it, renames it over the target and
  fsyncs the folder: readers see the old file or the new one, never half of one.
  `os.replace` replaces a symlink at the target instead of following it.
- Checksums are xxHash3-128 (several GB/s, so a checksum costs next to nothing
  against the write itself); `HashingWriter` hashes the bytes while they are
  written, so a file is never read back just to checksum it.
- Every OS failure (full disk, file-size limit, read-only folder, a file where a
  folder is expected) becomes a `FileError` naming the path and the reason.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from pathlib import Path
from typing import IO, Any, Callable

import xxhash

from engine.errors import ConfigError, FileError

HASH_NAME = "xxh3_128"
HASH_CHUNK = 1 << 22
# ".<name>.tmp-<pid>-<hex>" (this module), ".<name>.tmp-<pid>" (tui-lm 0.1) and
# ".<name>.<random>.tmp" (tempfile.mkstemp in the 0.1 token cache).
_TEMP = re.compile(r"^\..+\.tmp-(\d+)(-[0-9a-f]+)?$|^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def os_reason(e: OSError) -> str:
    """`No space left on device` rather than `[Errno 28] ...: '/long/path'`."""
    if e.errno == errno.EFBIG:
        return "File too large (the file-size limit, ulimit -f, was reached)"
    return e.strerror or str(e)


def new_hash() -> Any:
    return xxhash.xxh3_128()


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def hash_file(path: Path) -> str:
    """Checksum of a file's content, read in chunks (constant memory)."""
    h = new_hash()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise FileError(f"cannot read {path}: {os_reason(e)}") from None
    return h.hexdigest()


class HashingWriter:
    """A write-only file object that hashes and counts what passes through it.

    A write error is kept in `error`: torch's zip writer wraps it in its own
    RuntimeError, and the caller wants the plain OS reason (e.g. ENOSPC).
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.hash = new_hash()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            n = self._f.write(data)
        except OSError as e:
            self.error = e
            raise
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += len(view)
        return n

    def flush(self) -> None:
        self._f.flush()


def check_path_text(label: str, value: str) -> None:
    """Refuse a name or path that no file system call or UTF-8 file can carry: NUL or undecodable bytes."""
    if "\0" in value:
        raise ConfigError(f"{label} must not contain a NUL byte, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{label} is not valid UTF-8 text (undecodable bytes), got {value!r}") from None


def _is_symlink(path: Path) -> bool:
    try:
        return path.is_symlink()
    except (OSError, ValueError):
        return False


def ensure_folder(path: Path) -> Path:
    """Create `path` (and parents) as a real folder; a symlink or a file there is refused."""
    if _is_symlink(path):
        raise FileError(f"{path} is a symbolic link; tui-lm writes only into real folders")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileError(f"cannot create folder {path}: a file with that name exists") from None
    except OSError as e:
        raise FileError(f"cannot create folder {path}: {os_reason(e)}") from None
    except ValueError as e:  # an embedded NUL byte
        raise FileError(f"cannot create folder {path!r}: {e}") from None
    return path


def open_exclusive(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty temp file for `name` in `folder`: never an existing file, never a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = folder / f".{name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            return os.open(tmp, flags, 0o644), tmp
        except FileExistsError:
            continue  # 48 random bits: only a planted file lands here, and it is left alone
        except OSError as e:
            raise FileError(f"cannot write in {folder}: {os_reason(e)}") from None


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open folders; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through `write(fileobj)` into an exclusive temp file, fsync, rename over `path`."""
    path = Path(path)
    if path.parent != Path() and not path.parent.is_dir():
        ensure_folder(path.parent)
    fd, tmp = open_exclusive(path.parent, path.name)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise FileError(f"cannot write {path}: {os_reason(e)}") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass
    _fsync_folder(path.parent)


def write_bytes(path: Path, data: bytes) -> str:
    """Atomically write `data`; returns its checksum."""
    atomic_write(path, lambda f: f.write(data))
    return hash_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def copy_file(src: Path, dst: Path) -> str:
    """Atomic copy (never through a symlink at `dst`); returns the checksum of the bytes copied."""
    try:
        data = Path(src).read_bytes()
    except OSError as e:
        raise FileError(f"cannot read {src}: {os_reason(e)}") from None
    return write_bytes(dst, data)


def read_json(path: Path) -> Any:
    """Parsed JSON of `path`; unreadable or invalid JSON raises a FileError naming the file."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        return json.loads(text)
    except OSError as e:
        raise FileError(f"cannot read {path}: {os_reason(e)}") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise FileError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """Like read_json, but the top level must be an object (`[1, 2]` is damage too)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FileError(f"{path} holds JSON of the wrong shape ({type(data).__name__}, expected an object)")
    return data


def open_append(path: Path) -> IO[str]:
    """A line-buffered text file for appending; a symlink at `path` is refused, not followed."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileError(f"{path} is a symbolic link; tui-lm does not write through links") from None
        raise FileError(f"cannot open {path}: {os_reason(e)}") from None
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


def remove_stale_temps(folder: Path, *, all_pids: bool = False) -> list[Path]:
    """Delete temp files left by processes that died mid-write; returns what was removed.

    With `all_pids` (the caller holds the folder's lock, so no other process
    writes there) every temp file goes; otherwise only those whose writer's pid
    is gone from this machine.
    """
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or _is_symlink(p) or not p.is_file():
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if all_pids or (pid is not None and pid != os.getpid() and not pid_alive(pid)):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
