"""Owning a run folder while training: creating it, locking it, its data record and state.json.

- A new run gets a folder created exclusively (`mkdir` fails if it exists): a
  given `--run-name` that exists is refused, a generated name that exists
  gets a `-2`, `-3`... suffix, so two runs started in the same second differ.
- While a process trains, it holds an OS lock (`flock`) on `.lock` in the
  folder; the kernel drops it when the process dies, however it dies. The
  file says which pid and host hold it, for the message a second process gets;
  `lock_holder` tells who holds it without keeping it (`--resume` skips such runs).
- Under the lock, temp files left by writers that died mid-write are removed.
- A run keeps its own tokenizer (`tokenizer.json`, copied once at creation,
  never rewritten) and `data.json`: the fingerprint (content hash) of the
  data it trained on. A resume on changed data is refused unless the user
  accepts the change, which is then recorded there.

Torch-free, like everything a run folder's small files need.
"""

from __future__ import annotations

import json
import os
import socket
import time
from itertools import count
from pathlib import Path
from typing import Any, Callable

from engine.config.loading import write_toml
from engine.config.run_config import RunConfig
from engine.errors import ConfigError, DataError, FileError, RunLocked
from engine.files import (
    check_path_text,
    copy_file,
    hash_file,
    os_reason,
    read_json_object,
    remove_stale_temps,
    write_json,
)
from engine.runs.layout import DATA_RECORD, LOCK, MODELS, RUN_CONFIG, SNAPSHOTS, STATE, TOKENIZER, is_run_folder

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not locked
    fcntl = None  # type: ignore[assignment]

_WRITTEN_FOLDERS = ("", SNAPSHOTS, MODELS)
LOCK_TRIES, LOCK_RETRY_S = 3, 0.05  # a held lock is retried briefly: lock_holder's probes hold it for microseconds


def default_out_dir(dataset_name: str) -> Path:
    return Path(f"lm_{dataset_name}")


# ----------------------------------------------------------------------------- lock

class RunLock:
    """An exclusive lock on a run folder, held until `release()` or the process ends."""

    def __init__(self, fd: int | None, run_dir: Path) -> None:
        self._fd = fd
        self.run_dir = run_dir

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _holder(fd: int) -> str:
    """"process PID on HOST", from the lock file the holder wrote."""
    holder: dict[str, Any] = {}
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        pass
    pid = holder.get("pid", "?") if isinstance(holder, dict) else "?"
    host = holder.get("host", "?") if isinstance(holder, dict) else "?"
    return f"process {pid} on {host}"


def locked_message(run_dir: Path, holder: str) -> str:
    return (f"run folder {run_dir} is in use by {holder}, which is training in it; wait for it to finish or "
            f"stop it first (tui-lm stop {run_dir})")


def lock_holder(run_dir: Path) -> str:
    """Who trains in `run_dir` now ("process PID on HOST"); "" when nobody holds its lock.

    Probes with a shared lock, released at once; a trainer that takes the lock at that very
    moment retries (lock_run), so the probe never refuses it."""
    if fcntl is None:
        return ""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # no lock file: no trainer ever locked it, or it is not readable (the lock itself will say)
        return ""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)  # drops the probe's lock too
    return ""


def lock_run(run_dir: Path) -> RunLock:
    """Lock `run_dir` for this process, or raise RunLocked naming the pid and host that hold it."""
    run_dir = Path(run_dir)
    if fcntl is None:
        return RunLock(None, run_dir)
    path = run_dir / LOCK
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise FileError(f"cannot lock run folder {run_dir}: {path}: {os_reason(e)}") from None
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt + 1 < LOCK_TRIES:
                time.sleep(LOCK_RETRY_S)  # maybe only lock_holder's probe: it lets go at once
                continue
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(locked_message(run_dir, holder)) from None
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
    except OSError as e:
        os.close(fd)
        raise FileError(f"cannot lock run folder {run_dir}: {os_reason(e)}") from None
    return RunLock(fd, run_dir)


def claim_run(run_dir: Path, log: Callable[[str], None] = lambda _: None) -> RunLock:
    """Lock a run folder, then clear the temp files that dead writers left in it."""
    lock = lock_run(run_dir)
    removed = [p for sub in _WRITTEN_FOLDERS for p in remove_stale_temps(Path(run_dir) / sub, all_pids=True)]
    if removed:
        log(f"removed {len(removed)} unfinished temp file(s) left by an interrupted save")
    return lock


# ----------------------------------------------------------------------------- new runs

def _make_folder(path: Path) -> bool:
    """mkdir that only succeeds for a folder that did not exist; False when it exists."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise FileError(f"cannot create run folder {path}: {os_reason(e)}") from None


def new_run_dir(cfg: RunConfig, dataset_name: str) -> Path:
    """A fresh, empty folder for a new run; never an existing folder."""
    check_path_text("run.run_name", cfg.run.run_name)
    check_path_text("run.out_dir", cfg.run.out_dir)
    parent = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir(dataset_name)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileError(f"cannot create runs in {parent}: it is a file, not a folder") from None
    except OSError as e:
        raise FileError(f"cannot create runs in {parent}: {os_reason(e)}") from None
    if not parent.is_dir():
        raise FileError(f"cannot create runs in {parent}: it is a file, not a folder")
    if cfg.run.run_name:
        run_dir = parent / cfg.run.run_name
        if _make_folder(run_dir):
            return run_dir
        if is_run_folder(run_dir):
            raise ConfigError(f"run folder {run_dir} already holds a run; choose another --run-name or "
                              f"resume it with --resume {run_dir}")
        raise ConfigError(f"{run_dir} already exists and is not a run folder (no {RUN_CONFIG}); choose another "
                          "--run-name or remove it")
    base = f"{cfg.run.preset or 'custom'}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in count(1):
        run_dir = parent / (base if n == 1 else f"{base}-{n}")
        if _make_folder(run_dir):
            return run_dir
    raise AssertionError("unreachable")


def create_run(cfg: RunConfig, dataset_name: str, tokenizer: Path, data_fingerprint: str,
               data_source: str) -> tuple[Path, RunLock]:
    """Create, lock and fill a new run folder (run.toml, its own tokenizer, data.json).

    If any of that fails the folder is removed again, so a retry with the
    same --run-name is not refused.
    """
    run_dir = new_run_dir(cfg, dataset_name)
    lock = lock_run(run_dir)
    try:
        write_toml(cfg, run_dir / RUN_CONFIG)
        tok_hash = copy_file(tokenizer, run_dir / TOKENIZER)
        write_json(run_dir / DATA_RECORD, {"fingerprint": data_fingerprint, "source": data_source,
                                           "tokenizer_xxh3_128": tok_hash, "changes": []})
    except BaseException:
        lock.release()
        for name in (RUN_CONFIG, TOKENIZER, DATA_RECORD, LOCK):
            (run_dir / name).unlink(missing_ok=True)
        try:
            run_dir.rmdir()
        except OSError:
            pass
        raise
    return run_dir, lock


# ----------------------------------------------------------------------------- resumed runs

def run_tokenizer(run_dir: Path) -> Path:
    """The run's own tokenizer, which a resume must use whatever the data now says."""
    path = Path(run_dir) / TOKENIZER
    if not path.is_file():
        raise DataError(f"{path} is missing: a run resumes only with the tokenizer it was trained with")
    return path


def check_data(run_dir: Path, fingerprint: str, source: str, accept_change: bool,
               log: Callable[[str], None] = lambda _: None) -> None:
    """Refuse to resume on data other than the run's, unless the user accepted the change (then recorded)."""
    path = Path(run_dir) / DATA_RECORD
    if not path.is_file():
        # Runs made before data records existed: nothing to compare against.
        log(f"{path.name} is missing (a run from an older tui-lm); recording the current data's fingerprint")
        write_json(path, {"fingerprint": fingerprint, "source": source,
                          "tokenizer_xxh3_128": hash_file(run_tokenizer(run_dir)), "changes": []})
        return
    try:
        record = read_json_object(path)
    except FileError as e:
        raise DataError(f"{e}; cannot tell whether the data changed") from None
    if record.get("fingerprint") == fingerprint:
        return
    if not accept_change:
        raise DataError(f"the data of run {run_dir} changed since it was trained ({source}); to continue on the "
                        "new data with the run's own tokenizer, resume with --accept-data-change")
    changes = record.get("changes") if isinstance(record.get("changes"), list) else []
    changes.append({"time": time.time(), "from": record.get("fingerprint"), "to": fingerprint, "source": source})
    write_json(path, {**record, "fingerprint": fingerprint, "source": source, "changes": changes})
    log(f"the data changed since this run was trained; continuing on the new data with the run's own "
        f"tokenizer (recorded in {path.name})")


# ----------------------------------------------------------------------------- state.json

def update_state(run_dir: Path, **values: Any) -> dict[str, Any]:
    """Merge `values` into state.json (atomically); a damaged state.json is replaced, not fatal."""
    path = Path(run_dir) / STATE
    try:
        state = read_json_object(path) if path.is_file() else {}
    except FileError:
        state = {}
    state.update(values, updated=time.time(), pid=os.getpid(), host=socket.gethostname())
    write_json(path, state)
    return state
