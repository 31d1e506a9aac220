"""The dataset's size in tokens before it is tokenized: exact from the token cache, else estimated.

An epoch's time needs the training split's token count. When the token cache
for these data settings exists, its meta.json has the exact counts. Otherwise
a local folder or file is measured in bytes and divided by the bytes per token
WikiText-2's own 47,610-token BPE reached on its training split (4.87); a hub
dataset without a local copy by its published word counts times that BPE's
tokens per word (1.065). Both are said to be estimates. A single text file's
validation share is carved off as the trainer does (data.valid_fraction);
with data.max_samples and no cache the size is unknown (None).
"""

from __future__ import annotations

from pathlib import Path

from engine.config.run_config import DataConfig
from engine.data.sources import HUB_CONFIGS, known_name, resolve_dataset
from engine.data.token_cache import cached_meta
from engine.errors import UserError
from engine.speed.model import SplitSizes

# Measured on /work/shared/data/wikitext-2 (meta.json of its token cache, BPE target 50257):
# train 10,825,480 bytes, 2,088,651 words -> 2,224,629 tokens.
BYTES_PER_TOKEN = 10_825_480 / 2_224_629
TOKENS_PER_WORD = 2_224_629 / 2_088_651
# Merity et al. (2016), word-level tokens of train / valid / test.
PUBLISHED_WORDS = {
    "wikitext-2": (2_088_628, 217_646, 245_569),
    "wikitext-103": (103_227_021, 217_646, 245_569),
}


def _from_cache(meta: dict) -> SplitSizes:
    splits = meta["splits"]
    return SplitSizes(splits["train"]["tokens"], splits["valid"]["tokens"],
                      splits.get("test", {}).get("tokens", 0), exact=True, how="from the token cache")


def split_sizes(cfg: DataConfig) -> SplitSizes | None:
    """The splits of `cfg`'s dataset in tokens (module docstring); None when nothing tells their size."""
    meta = cached_meta(cfg)
    if meta is not None:
        return _from_cache(meta)
    if cfg.max_samples:  # the first N lines: their size is not known without reading them
        return None
    try:
        ref = resolve_dataset(cfg.dataset)
    except (UserError, OSError):
        return None
    if ref.path is None:  # the hub, no local copy
        name = known_name(cfg.dataset) or ""
        words = PUBLISHED_WORDS.get(name.removesuffix("-raw")) if name in HUB_CONFIGS else None
        if words is None:
            return None
        train, valid, test = (round(w * TOKENS_PER_WORD) for w in words)
        return SplitSizes(train, valid, test, exact=False,
                          how=f"estimated from {name}'s published word counts at {TOKENS_PER_WORD:.3f} tokens a word")
    if ref.kind == "folder":
        sizes = [_bytes(ref.path / f"{s}.txt") for s in ("train", "valid", "test")]
    else:
        total = _bytes(ref.path)
        sizes = [round(total * (1 - cfg.valid_fraction)), round(total * cfg.valid_fraction), 0]
    train, valid, test = (round(b / BYTES_PER_TOKEN) for b in sizes)
    return SplitSizes(train, valid, test, exact=False,
                      how=f"estimated from {sum(sizes) / 1e6:.1f} MB of text at {BYTES_PER_TOKEN:.2f} bytes a token")


def _bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

