"""Preparing a dataset's tokens: the on-disk token cache.

`prepare_data` turns a `DataConfig` into token streams the loader can slice:
one read-only `np.memmap` per split, holding one end-of-text token followed by
the tokens of every line encoded as `line + "\\n"`. Tokenizing WikiText-103
takes minutes, so the result is cached in a folder keyed by everything that
affects it; a second run with the same inputs only reads `meta.json` and maps
the `.bin` files. Every cache file is written atomically and `meta.json`
last, so an interrupted run leaves a cache that is rebuilt, never half-used.
The key hashes the data's content (not sizes and times), so any edit rebuilds.

A resumed run passes its own `tokenizer.json`: the data is then tokenized
with exactly that tokenizer (never a retrained one), in a cache keyed by the
tokenizer's checksum unless the run's usual cache already holds it.
The tokenizers themselves (BPE training with bounded pre-tokens, GPT-2's,
batched encoding) are in engine.data.tokenizers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from tokenizers import Tokenizer

from engine.config.run_config import DataConfig
from engine.control import check_stop
from engine.data import tokenizers as bpe
from engine.data.sources import DatasetRef, TextSplits, count_words, read_splits, resolve_dataset
from engine.data.tokenizers import ENCODE_CHUNK, EOT, encode_lines, load_gpt2, train_bpe
from engine.errors import DataError, FileError, short_reason
from engine.files import atomic_write, hash_bytes, hash_file, remove_stale_temps

FORMAT_VERSION = 2  # bump when the layout of the cache files changes (2: content-hash keys)
CACHE_ENV = "TUI_LM_CACHE"
SPLITS = ("train", "valid", "test")


@dataclass
class TokenSplit:
    """One split as tokens plus the sizes perplexity and throughput are measured against."""

    ids: np.ndarray  # read-only 1-D memmap: EOT, then the tokens of each line + "\n"
    n_words: int  # count_words(lines): whitespace tokens + one per line
    n_bytes: int  # UTF-8 bytes of the text, one "\n" per line included
    n_lines: int


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    tokenizer_path: Path  # tokenizer.json in the cache folder
    tokenizer_hash: str  # xxh3-128 of tokenizer.json: which tokenizer made these ids
    fingerprint: str  # content hash of the text (engine.data.sources.DatasetRef.fingerprint)
    vocab_size: int  # the real size, which can be below the BPE target on small data
    eot_id: int
    train: TokenSplit
    valid: TokenSplit
    test: TokenSplit | None  # None when the dataset has no test split
    name: str
    source: str
    cache_dir: Path


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


# ----------------------------------------------------------------------------- cache files

def cache_root(dataset_path: Path | None) -> Path:
    """The folder that holds `<name>-<key>/` cache folders.

    $TUI_LM_CACHE if set; else `.tui-lm-cache/` next to the data when that
    folder is writable; else `$XDG_CACHE_HOME/tui-lm` (~/.cache/tui-lm).
    `dataset_path` is the data folder or file, None for hub datasets.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    if dataset_path is not None:
        folder = dataset_path if dataset_path.is_dir() else dataset_path.parent
        if _writable(folder):
            return folder.resolve() / ".tui-lm-cache"
    return _home_cache()


def _home_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "tui-lm"


def _writable(folder: Path) -> bool:
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    # root passes os.access on everything; a folder whose owner removed every
    # write bit (like a shared read-only data set) is left alone even then.
    return bool(mode & 0o222) and os.access(folder, os.W_OK | os.X_OK)


def cache_key(ref: DatasetRef, cfg: DataConfig, tokenizer_hash: str | None = None) -> str:
    """Short hash of everything that changes the tokens.

    `tokenizer_hash` (a given tokenizer.json's checksum) replaces the
    settings that would otherwise decide which tokenizer is trained.
    """
    parts: dict[str, object] = {
        "format": FORMAT_VERSION,
        "fingerprint": ref.fingerprint,
        "max_samples": cfg.max_samples,
        "valid_fraction": cfg.valid_fraction if ref.kind == "file" else None,
    }
    if tokenizer_hash is not None:
        parts["tokenizer_file"] = tokenizer_hash
    else:
        parts["tokenizer"] = cfg.tokenizer
        # GPT-2's vocabulary is fixed, so the target must not force a rebuild.
        parts["vocab_size"] = cfg.vocab_size if cfg.tokenizer == "bpe" else None
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _write_split(path: Path, tokenizer: Tokenizer, lines: list[str], eot_id: int, dtype: np.dtype,
                 log: Callable[[str], None]) -> int:
    """Stream the tokens of `lines` to `path` (EOT first); return how many were written."""
    count = 0

    def write(f: BinaryIO) -> None:
        nonlocal count
        f.write(np.array([eot_id], dtype=dtype).tobytes())
        count = 1
        last = time.monotonic()
        for i, ids in enumerate(encode_lines(tokenizer, lines)):
            f.write(ids.astype(dtype).tobytes())
            count += len(ids)
            if time.monotonic() - last > bpe.PROGRESS_S:
                last = time.monotonic()
                done = min(len(lines), (i + 1) * ENCODE_CHUNK)
                log(f"tokenizing {path.stem}: {done / len(lines):.0%} ({done:,} of {len(lines):,} lines)")

    atomic_write(path, write)
    return count


def _split_stats(lines: list[str]) -> dict[str, int]:
    return {
        "words": count_words(lines),
        "bytes": sum(len(line.encode("utf-8")) for line in lines) + len(lines),
        "lines": len(lines),
    }


def _read_meta(folder: Path, key: str) -> dict | None:
    """meta.json if it describes a complete cache for `key`, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        if not isinstance(meta.get("tokenizer_hash"), str):
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        if not (folder / "tokenizer.json").is_file():
            return None
        for split, info in meta["splits"].items():
            if (folder / f"{split}.bin").stat().st_size != info["tokens"] * itemsize:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _tokenizer_for(texts: TextSplits, cfg: DataConfig, tokenizer_file: Path | None,
                   log: Callable[[str], None]) -> tuple[Tokenizer, bytes]:
    """The tokenizer to encode with and the exact bytes of its tokenizer.json."""
    if tokenizer_file is not None:
        log(f"tokenizing with the run's own tokenizer {tokenizer_file}")
        try:
            blob = Path(tokenizer_file).read_bytes()
            return Tokenizer.from_str(blob.decode("utf-8")), blob
        except Exception as e:  # OSError, UnicodeDecodeError, or the tokenizers parser's own error
            raise DataError(f"tokenizer {tokenizer_file} is damaged or unreadable ({short_reason(e)})") from None
    if cfg.tokenizer == "gpt2":
        log("loading the GPT-2 tokenizer")
        tokenizer = load_gpt2()
    else:
        log(f"training BPE tokenizer (target vocab {cfg.vocab_size}) on {len(texts.train):,} lines")
        tokenizer = train_bpe(texts.train, cfg.vocab_size, log)
    return tokenizer, tokenizer.to_str().encode("utf-8")


def _build(folder: Path, key: str, texts: TextSplits, cfg: DataConfig, tokenizer_file: Path | None,
           log: Callable[[str], None], should_stop: Callable[[], bool] | None = None) -> dict:
    tokenizer, tok_json = _tokenizer_for(texts, cfg, tokenizer_file, log)
    check_stop(should_stop)
    vocab_size = tokenizer.get_vocab_size()
    eot_id = tokenizer.token_to_id(EOT)
    if eot_id is None:
        raise DataError(f"the {cfg.tokenizer} tokenizer has no {EOT} token")
    log(f"vocabulary: {vocab_size:,} tokens")
    dtype = token_dtype(vocab_size)

    # A stale meta.json must not vouch for files that are about to change.
    with contextlib.suppress(FileNotFoundError):
        (folder / "meta.json").unlink()
    remove_stale_temps(folder)  # writers that were killed mid-write
    atomic_write(folder / "tokenizer.json", lambda f: f.write(tok_json))
    splits = {}
    for split, lines in (("train", texts.train), ("valid", texts.valid), ("test", texts.test)):
        if split == "test" and not lines:
            continue
        check_stop(should_stop)  # the caller removes the partial folder
        n = _write_split(folder / f"{split}.bin", tokenizer, lines, eot_id, dtype, log)
        log(f"tokenizing {split}: {n:,} tokens")
        splits[split] = {"tokens": n, **_split_stats(lines)}
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "name": texts.name,
        "source": texts.source,
        "fingerprint": texts.fingerprint,
        "tokenizer": cfg.tokenizer if tokenizer_file is None else f"file:{tokenizer_file}",
        "tokenizer_hash": hash_bytes(tok_json),
        "vocab_target": cfg.vocab_size,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "dtype": dtype.name,
        "max_samples": cfg.max_samples,
        "splits": splits,
    }
    blob = json.dumps(meta, indent=2).encode("utf-8")
    atomic_write(folder / "meta.json", lambda f: f.write(blob))
    log(f"saved tokens to {folder}")
    return meta


def cached_meta(cfg: DataConfig) -> dict | None:
    """meta.json of `cfg`'s tokens when they are already prepared (vocabulary, split sizes); None otherwise.

    Read-only (creates no folder): the setup screen and `tui-lm estimate` plan
    with the tokenizer's true size and the splits' token counts.
    """
    try:
        ref = resolve_dataset(cfg.dataset)
    except (DataError, OSError):
        return None
    found = _find_cache(ref, cache_key(ref, cfg))
    return None if found is None else found[1]


def cached_vocab_size(cfg: DataConfig) -> int | None:
    """The real vocabulary of `cfg`'s tokens when they are already prepared; None otherwise."""
    meta = cached_meta(cfg)
    return None if meta is None else int(meta["vocab_size"])


def _cache_candidates(ref: DatasetRef, key: str) -> list[Path]:
    leaf = f"{ref.name}-{key}"
    return list(dict.fromkeys([cache_root(ref.path) / leaf, _home_cache() / leaf]))


def _find_cache(ref: DatasetRef, key: str) -> tuple[Path, dict] | None:
    """A complete cache for `key`, looked up without creating anything."""
    for folder in _cache_candidates(ref, key):
        meta = _read_meta(folder, key) if folder.is_dir() else None
        if meta is not None:
            return folder, meta
    return None


def _cache_folder(ref: DatasetRef, key: str) -> tuple[Path, list[Path]]:
    """Create the cache folder (falling back to the home cache); also returns the folders it created."""
    candidates = _cache_candidates(ref, key)
    for folder in candidates:
        created = [p for p in [folder, *folder.parents] if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder, created
        except OSError:
            continue
    raise DataError(f"cannot create a token cache folder at {candidates[0]}; set {CACHE_ENV} to a writable folder")


def _remove_partial(folder: Path, created: list[Path]) -> None:
    """After a failed build: drop meta-less files, and the folders this build created if now empty."""
    if (folder / "meta.json").exists():
        return
    for name in ("tokenizer.json", *(f"{s}.bin" for s in SPLITS)):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    for p in created:  # deepest first
        with contextlib.suppress(OSError):
            p.rmdir()


# ----------------------------------------------------------------------------- entry point

def prepare_data(cfg: DataConfig, log: Callable[[str], None] = lambda _: None,
                 tokenizer_file: Path | None = None, should_stop: Callable[[], bool] | None = None) -> PreparedData:
    """Tokenized splits for `cfg`, from the cache when the same inputs were prepared before.

    With `tokenizer_file` (a resumed run's own tokenizer.json) the text is
    encoded with that tokenizer, never a newly trained one.
    """
    ref = resolve_dataset(cfg.dataset)
    key = cache_key(ref, cfg)
    found = _find_cache(ref, key)
    if tokenizer_file is not None:
        try:
            want = hash_file(Path(tokenizer_file))
        except FileError as e:
            raise DataError(str(e)) from None
        # On unchanged data the usual cache holds this very tokenizer: no re-tokenizing.
        if found is None or found[1]["tokenizer_hash"] != want:
            key = cache_key(ref, cfg, want)
            found = _find_cache(ref, key)
    if found is not None:
        folder, meta = found
        log(f"using cached tokens from {folder}")
    else:
        # should_stop: a stop returns from the download at once and is checked between the
        # phases (tokenizer, each split), raising engine.control.Interrupted.
        texts = read_splits(ref, cfg.max_samples, cfg.valid_fraction, log, should_stop)  # before any folder exists
        check_stop(should_stop)
        if not texts.train:
            raise DataError(f"dataset {ref.source} has no training lines")
        log(f"read {sum(len(s) for s in (texts.train, texts.valid, texts.test)):,} lines from {ref.source}")
        folder, created = _cache_folder(ref, key)
        try:
            meta = _build(folder, key, texts, cfg, tokenizer_file, log, should_stop)
        except BaseException:
            _remove_partial(folder, created)
            raise
    dtype = np.dtype(meta["dtype"])

    def split(name: str) -> TokenSplit | None:
        info = meta["splits"].get(name)
        if info is None:
            return None
        ids = np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r")
        return TokenSplit(ids, info["words"], info["bytes"], info["lines"])

    tokenizer_path = folder / "tokenizer.json"
    train, valid = split("train"), split("valid")
    assert train is not None and valid is not None
    return PreparedData(
        tokenizer=Tokenizer.from_file(str(tokenizer_path)),
        tokenizer_path=tokenizer_path,
        tokenizer_hash=meta["tokenizer_hash"],
        fingerprint=ref.fingerprint,
        vocab_size=meta["vocab_size"],
        eot_id=meta["eot_id"],
        train=train,
        valid=valid,
        test=split("test"),
        name=meta["name"],
        source=meta["source"],
        cache_dir=folder,
    )
