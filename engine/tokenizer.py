"""Tokenizer training and the on-disk token cache.

`prepare_data` turns a `DataConfig` into token streams the loader can slice:
one read-only `np.memmap` per split, holding one end-of-text token followed by
the tokens of every line encoded as `line + "\\n"`. Tokenizing WikiText-103
takes minutes, so the result is cached in a folder keyed by everything that
affects it; a second run with the same inputs only reads `meta.json` and maps
the `.bin` files. Every cache file is written atomically and `meta.json`
last, so an interrupted run leaves a cache that is rebuilt, never half-used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.config import DataConfig
from engine.data import (
    DatasetRef,
    TextSplits,
    count_words,
    data_home,
    read_splits,
    resolve_dataset,
    short_reason,
)
from engine.errors import DataError

EOT = "<|endoftext|>"
FORMAT_VERSION = 1  # bump when the layout of the cache files changes
CACHE_ENV = "TUI_LM_CACHE"
ENCODE_CHUNK = 4096  # lines per encode_batch call: big enough to use every core
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


# ----------------------------------------------------------------------------- tokenizers

def train_bpe(lines: list[str], vocab_size: int) -> Tokenizer:
    """A GPT-2 style byte-level BPE trained on `lines` (each as line + "\\n")."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        # All 256 byte symbols, so any text encodes even if unseen in training.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((line + "\n" for line in lines), trainer=trainer, length=len(lines))
    return tok


def load_gpt2() -> Tokenizer:
    """GPT-2's tokenizer: `$TUI_LM_DATA/gpt2/tokenizer.json` if present, else the hub."""
    home = data_home()
    local = home / "gpt2" / "tokenizer.json" if home is not None else None
    if local is not None and local.is_file():
        return Tokenizer.from_file(str(local))
    try:
        return Tokenizer.from_pretrained("gpt2")
    except Exception as e:  # offline, DNS, HTTP: all mean "no hub"
        where = (f"put its tokenizer.json at {local}" if local is not None
                 else "set TUI_LM_DATA and put its tokenizer.json at $TUI_LM_DATA/gpt2/tokenizer.json")
        raise DataError(
            f"the GPT-2 tokenizer needs the Hugging Face hub, which could not be reached "
            f"({short_reason(e)}); {where}, or set tokenizer = \"bpe\" to train one on the data"
        ) from e


def encode_lines(tokenizer: Tokenizer, lines: list[str], chunk: int = ENCODE_CHUNK) -> Iterator[np.ndarray]:
    """Token ids of each chunk of lines, every line encoded separately as line + "\\n".

    Batching only changes speed: each input is pre-tokenized on its own, so no
    merge can cross a line boundary and the ids equal per-line `encode` calls.
    """
    # encode_batch_fast skips computing offsets, which we never use.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    for start in range(0, len(lines), chunk):
        encs = encode([line + "\n" for line in lines[start:start + chunk]], add_special_tokens=False)
        n = sum(len(e.ids) for e in encs)
        yield np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=n)


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


def cache_key(ref: DatasetRef, cfg: DataConfig) -> str:
    """Short hash of everything that changes the tokens."""
    parts = {
        "format": FORMAT_VERSION,
        "fingerprint": ref.fingerprint,
        "tokenizer": cfg.tokenizer,
        # GPT-2's vocabulary is fixed, so the target must not force a rebuild.
        "vocab_size": cfg.vocab_size if cfg.tokenizer == "bpe" else None,
        "max_samples": cfg.max_samples,
        "valid_fraction": cfg.valid_fraction if ref.kind == "file" else None,
    }
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_split(path: Path, tokenizer: Tokenizer, lines: list[str], eot_id: int, dtype: np.dtype) -> int:
    """Stream the tokens of `lines` to `path` (EOT first); return how many were written."""
    count = 0

    def write(f: BinaryIO) -> None:
        nonlocal count
        f.write(np.array([eot_id], dtype=dtype).tobytes())
        count = 1
        for ids in encode_lines(tokenizer, lines):
            f.write(ids.astype(dtype).tobytes())
            count += len(ids)

    _atomic_write(path, write)
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
        itemsize = np.dtype(meta["dtype"]).itemsize
        if not (folder / "tokenizer.json").is_file():
            return None
        for split, info in meta["splits"].items():
            if (folder / f"{split}.bin").stat().st_size != info["tokens"] * itemsize:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(folder: Path, key: str, ref: DatasetRef, cfg: DataConfig, log: Callable[[str], None]) -> dict:
    texts: TextSplits = read_splits(ref, cfg.max_samples, cfg.valid_fraction, log)
    if not texts.train:
        raise DataError(f"dataset {ref.source} has no training lines")
    if cfg.tokenizer == "gpt2":
        log("loading the GPT-2 tokenizer")
        tokenizer = load_gpt2()
    else:
        log(f"training BPE tokenizer (target vocab {cfg.vocab_size}) on {len(texts.train):,} lines")
        tokenizer = train_bpe(texts.train, cfg.vocab_size)
    vocab_size = tokenizer.get_vocab_size()
    eot_id = tokenizer.token_to_id(EOT)
    if eot_id is None:
        raise DataError(f"the {cfg.tokenizer} tokenizer has no {EOT} token")
    log(f"vocabulary: {vocab_size:,} tokens")
    dtype = token_dtype(vocab_size)

    # A stale meta.json must not vouch for files that are about to change.
    with contextlib.suppress(FileNotFoundError):
        (folder / "meta.json").unlink()
    tok_json = tokenizer.to_str().encode("utf-8")
    _atomic_write(folder / "tokenizer.json", lambda f: f.write(tok_json))
    splits = {}
    for split, lines in (("train", texts.train), ("valid", texts.valid), ("test", texts.test)):
        if split == "test" and not lines:
            continue
        n = _write_split(folder / f"{split}.bin", tokenizer, lines, eot_id, dtype)
        log(f"tokenizing {split}: {n:,} tokens")
        splits[split] = {"tokens": n, **_split_stats(lines)}
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "name": texts.name,
        "source": texts.source,
        "fingerprint": texts.fingerprint,
        "tokenizer": cfg.tokenizer,
        "vocab_target": cfg.vocab_size,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "dtype": dtype.name,
        "max_samples": cfg.max_samples,
        "splits": splits,
    }
    blob = json.dumps(meta, indent=2).encode("utf-8")
    _atomic_write(folder / "meta.json", lambda f: f.write(blob))
    log(f"saved tokens to {folder}")
    return meta


def cached_vocab_size(cfg: DataConfig) -> int | None:
    """The real vocabulary of `cfg`'s tokens when they are already prepared; None otherwise.

    Read-only (creates no folder): the setup screen uses it to plan with the
    tokenizer's true size instead of the BPE target.
    """
    try:
        ref = resolve_dataset(cfg.dataset)
    except (DataError, OSError):
        return None
    key = cache_key(ref, cfg)
    meta = _read_meta(cache_root(ref.path) / f"{ref.name}-{key}", key)  # where prepare_data would look
    return None if meta is None else int(meta["vocab_size"])


def _cache_folder(ref: DatasetRef, key: str) -> Path:
    """Create and return the cache folder, falling back to the home cache if needed."""
    leaf = f"{ref.name}-{key}"
    preferred = cache_root(ref.path) / leaf
    for folder in dict.fromkeys([preferred, _home_cache() / leaf]):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            continue
    raise DataError(f"cannot create a token cache folder at {preferred}; set {CACHE_ENV} to a writable folder")


# ----------------------------------------------------------------------------- entry point

def prepare_data(cfg: DataConfig, log: Callable[[str], None] = lambda _: None) -> PreparedData:
    """Tokenized splits for `cfg`, from the cache when the same inputs were prepared before."""
    ref = resolve_dataset(cfg.dataset)
    key = cache_key(ref, cfg)
    folder = _cache_folder(ref, key)
    meta = _read_meta(folder, key)
    if meta is not None:
        log(f"using cached tokens from {folder}")
    else:
        meta = _build(folder, key, ref, cfg, log)
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
        vocab_size=meta["vocab_size"],
        eot_id=meta["eot_id"],
        train=train,
        valid=valid,
        test=split("test"),
        name=meta["name"],
        source=meta["source"],
        cache_dir=folder,
    )
