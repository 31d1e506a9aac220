"""Text sources: a folder of split files, a single text file, or WikiText from the hub.

`load_text_splits` turns the `--dataset` value into train/valid/test lists of
lines (one paragraph a line, empty lines kept, no trailing newline). It is
split in two steps so the token cache can be checked without decoding any text:
`resolve_dataset` decides *what* the dataset is and fingerprints it (a fast
content hash of the files, no network), `read_splits` reads the lines.

Local copies always win over the hub: a known name such as `wikitext-2` is
first looked up in `$TUI_LM_DATA/wikitext-2/`, so machines without internet
never sit through the `datasets` library's connection retries.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.control import Interrupted, run_interruptible
from engine.errors import DataError, UserError, short_reason
from engine.files import check_path_text, hash_file

# canonical name -> Hugging Face config of the "wikitext" dataset
HUB_CONFIGS = {
    "wikitext-2": "wikitext-2-v1",
    "wikitext-103": "wikitext-103-v1",
    "wikitext-2-raw": "wikitext-2-raw-v1",
    "wikitext-103-raw": "wikitext-103-raw-v1",
}
HUB_DATASET = "wikitext"
_ALIASES = {"wikitext": "wikitext-2"}
_ALIASES.update({name: name for name in HUB_CONFIGS})
_ALIASES.update({config: name for name, config in HUB_CONFIGS.items()})
_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
DATA_ENV = "TUI_LM_DATA"


@dataclass
class TextSplits:
    """The lines of each split of one dataset."""

    name: str  # short name for cache keys and run folders, e.g. "wikitext-2"
    source: str  # where the text came from: "hub: wikitext/wikitext-2-v1" or a path
    fingerprint: str  # stable identity of the content, part of the token cache key
    train: list[str]
    valid: list[str]
    test: list[str]  # empty for single-file datasets


@dataclass
class DatasetRef:
    """What a `--dataset` value points at, decided without reading the text."""

    kind: str  # "folder", "file" or "hub"
    name: str
    source: str
    fingerprint: str
    path: Path | None = None  # the folder or file; None for the hub
    hub_config: str = ""  # e.g. "wikitext-2-v1" when kind == "hub"


def count_words(lines: list[str]) -> int:
    """Words as WikiText perplexity counts them: whitespace tokens plus one end-of-line per line."""
    return sum(len(line.split()) + 1 for line in lines)


def known_name(dataset: str) -> str | None:
    """The canonical name of a known hub dataset ("wikitext-2-v1" -> "wikitext-2"), else None."""
    return _ALIASES.get(dataset.strip().lower())


def canonical_name(dataset: str) -> str:
    """Short name used for run folders and cache folders; never reads the data.

    Paths win over known names, in the same order `load_text_splits` uses, so
    a folder called `wikitext-2` in the working directory names itself.
    """
    path = Path(dataset).expanduser()
    if path.is_dir():
        return _safe_name(path.resolve().name)
    if path.is_file():
        return _safe_name(path.stem)
    known = known_name(dataset)
    if known:
        return known
    # Not there (yet): guess from the spelling so the CLI can still name a run folder.
    return _safe_name(path.stem if path.suffix else path.name)


def _safe_name(name: str) -> str:
    # The name ends up in folder names on every platform; keep it boring.
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "data"


def data_home() -> Path | None:
    """The folder named by $TUI_LM_DATA (absolute), or None when it is not set."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def _fingerprint(files: list[Path]) -> str:
    # The content, not size + mtime: an edit that keeps both (or restores the
    # mtime) must not reuse stale tokens. xxHash3 reads WikiText-103's half
    # gigabyte in a fraction of a second once it is in the page cache.
    try:
        return ";".join(f"{f.name}:{hash_file(f)}" for f in files)
    except UserError as e:
        raise DataError(str(e)) from None


def _folder_ref(folder: Path, name: str) -> DatasetRef:
    folder = folder.resolve()
    missing = [f for f in ("train.txt", "valid.txt") if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"dataset folder {folder} is missing {' and '.join(missing)} "
            "(a dataset folder needs train.txt and valid.txt; test.txt is optional)"
        )
    files = [folder / f"{s}.txt" for s in ("train", "valid", "test") if (folder / f"{s}.txt").is_file()]
    return DatasetRef("folder", name, str(folder), _fingerprint(files), folder)


def resolve_dataset(dataset: str) -> DatasetRef:
    """Decide what `dataset` names: an existing folder, an existing file, or a known hub dataset."""
    check_path_text("data.dataset", dataset)
    path = Path(dataset).expanduser()
    if path.is_dir():
        return _folder_ref(path, _safe_name(path.resolve().name))
    if path.is_file():
        path = path.resolve()
        return DatasetRef("file", _safe_name(path.stem), str(path), _fingerprint([path]), path)
    name = known_name(dataset)
    if name:
        home = data_home()
        if home is not None and (home / name).is_dir():
            return _folder_ref(home / name, name)
        config = HUB_CONFIGS[name]
        return DatasetRef("hub", name, f"hub: {HUB_DATASET}/{config}", f"hub:{HUB_DATASET}/{config}",
                          None, config)
    raise DataError(
        f"dataset {dataset!r} is neither a folder, a text file nor a known dataset "
        f"({', '.join(HUB_CONFIGS)}); a folder needs train.txt and valid.txt"
    )


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file without their newlines; a final newline adds no empty line.

    `str.splitlines` is avoided on purpose: it also splits on form feeds,
    U+2028 and other separators, which would change the line count.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {e.start})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    # Files saved on Windows would otherwise keep a "\r" on every line.
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _carve_valid(lines: list[str], valid_fraction: float, path: Path) -> tuple[list[str], list[str]]:
    if len(lines) < 2:
        raise DataError(
            f"{path} has {len(lines)} line(s); a single text file needs at least 2 lines "
            "so that its end can be held out for validation"
        )
    # The tail, not a random sample: deterministic, and it keeps paragraphs whole.
    n_valid = min(len(lines) - 1, max(1, round(len(lines) * valid_fraction)))
    return lines[:-n_valid], lines[-n_valid:]


def hub_error_message(name: str, reason: str) -> str:
    """Why the hub failed and exactly where a local copy of `name` would be found."""
    home = data_home()
    if home is not None:
        where = (f"put train.txt, valid.txt and test.txt in {home / name} "
                 f"(that is ${DATA_ENV}/{name}/)")
    else:
        where = (f"set {DATA_ENV} to a folder and put train.txt, valid.txt and test.txt "
                 f"in ${DATA_ENV}/{name}/")
    return (f"could not download {name} because the Hugging Face hub could not be reached "
            f"({reason}); to use a local copy, {where}, or pass a folder holding "
            "train.txt and valid.txt to --dataset")


def _read_hub(ref: DatasetRef, log: Callable[[str], None],
              should_stop: Callable[[], bool] | None = None) -> dict[str, list[str]]:
    log(f"downloading {ref.name} from the Hugging Face hub ({HUB_DATASET}/{ref.hub_config})")

    def download():  # type: ignore[no-untyped-def]
        import datasets  # slow to import, and only the hub path needs it

        return datasets.load_dataset(HUB_DATASET, ref.hub_config)

    try:
        # Offline, the hub's connection retries take tens of seconds: a stop must not wait for them.
        ds = run_interruptible(download, should_stop)
        out = {}
        for ours, theirs in _HUB_SPLITS.items():
            # Rows end with "\n" and blank rows are "", so dropping one "\n"
            # gives exactly the lines of the released text files.
            out[ours] = [t[:-1] if t.endswith("\n") else t for t in ds[theirs]["text"]]
        return out
    except Interrupted:
        raise
    except Exception as e:  # offline, DNS, HTTP errors, missing package: all mean "no hub"
        raise DataError(hub_error_message(ref.name, short_reason(e))) from e


def read_splits(
    ref: DatasetRef,
    max_samples: int = 0,
    valid_fraction: float = 0.05,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TextSplits:
    """Read the lines of a resolved dataset; `max_samples` > 0 keeps that many training lines.

    `should_stop`: a hub download returns at once (raising Interrupted) when it turns true.
    """
    log = log or (lambda _: None)
    if ref.kind == "hub":
        parts = _read_hub(ref, log, should_stop)
        train, valid, test = parts["train"], parts["valid"], parts["test"]
    elif ref.kind == "file":
        assert ref.path is not None
        train, valid = _carve_valid(read_lines(ref.path), valid_fraction, ref.path)
        test = []
    else:
        assert ref.path is not None
        train = read_lines(ref.path / "train.txt")
        valid = read_lines(ref.path / "valid.txt")
        test_file = ref.path / "test.txt"
        test = read_lines(test_file) if test_file.is_file() else []
    if max_samples > 0:
        train = train[:max_samples]
    return TextSplits(ref.name, ref.source, ref.fingerprint, train, valid, test)


def load_text_splits(
    dataset: str,
    max_samples: int = 0,
    valid_fraction: float = 0.05,
    log: Callable[[str], None] | None = None,
) -> TextSplits:
    """Resolve `dataset` (folder, text file, known hub name) and read its splits."""
    return read_splits(resolve_dataset(dataset), max_samples, valid_fraction, log)
