"""Data that changes or attacks: content-keyed token cache, no litter after a failed preparation, hostile lines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.config.run_config import DataConfig
from engine.data import token_cache as tok_mod
from engine.data import tokenizers as bpe
from engine.data.token_cache import prepare_data
from engine.data.tokenizers import MAX_PRETOKEN, bounded_pre_tokenizer
from engine.errors import DataError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TUI_LM_DATA", raising=False)
    return tmp_path / "cache"


def cfg_for(path: Path) -> DataConfig:
    return DataConfig(dataset=str(path), vocab_size=300)


def test_same_size_edit_with_restored_mtime_is_not_served_from_the_cache(corpus: Path) -> None:
    first = prepare_data(cfg_for(corpus))
    train = corpus / "train.txt"
    st = train.stat()
    text = train.read_text()
    edited = text.replace("cat", "dog", 5)
    assert edited != text and len(edited) == len(text)
    train.write_text(edited)
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    second = prepare_data(cfg_for(corpus))
    assert second.cache_dir != first.cache_dir
    assert second.tokenizer.decode(second.train.ids[1:].tolist()) == edited


@pytest.mark.parametrize("damage", ["not utf-8", "no hub for gpt2"])
def test_failed_preparation_leaves_no_cache_folder(tmp_path: Path, isolated_cache: Path, monkeypatch,
                                                   damage: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "valid.txt").write_text("a b c\n")
    cfg = cfg_for(folder)
    if damage == "not utf-8":
        (folder / "train.txt").write_bytes(b"caf\xe9 au lait\n")
    else:
        (folder / "train.txt").write_text("the cat sat\n" * 20)
        cfg = DataConfig(dataset=str(folder), tokenizer="gpt2")

        def offline(*_a, **_k):
            raise ConnectionError("offline")

        monkeypatch.setattr(tok_mod.Tokenizer, "from_pretrained", offline)
    with pytest.raises(DataError):
        prepare_data(cfg)
    assert not isolated_cache.exists() or not any(isolated_cache.iterdir())


def test_long_runs_are_cut_into_bounded_pre_tokens() -> None:
    pieces = bounded_pre_tokenizer().pre_tokenize_str("x" * 1000 + " " * 250 + "7" * 301 + "!" * 120)
    assert max(len(p) for p, _ in pieces) <= MAX_PRETOKEN + 1  # +1: ByteLevel's "Ġ" for a leading space
    # Ordinary text is pre-tokenized exactly as by GPT-2's byte-level rule alone.
    from tokenizers import pre_tokenizers

    normal = "The history of music , from 1850 to 1900 , is told here ."
    plain = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(normal)
    assert bounded_pre_tokenizer().pre_tokenize_str(normal) == plain


def test_a_huge_line_without_spaces_trains_encodes_and_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    rng = np.random.default_rng(0)
    line = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=300_000))
    (folder / "train.txt").write_text("a normal line .\n" * 50 + line + "\n")
    (folder / "valid.txt").write_text("a normal line .\n")
    prep = prepare_data(cfg_for(folder))
    text = "a normal line .\n" * 50 + line + "\n"
    assert prep.tokenizer.decode(prep.train.ids[1:].tolist()) == text
    # The same bound applies when encoding: the longest token is no longer than a pre-token.
    assert max(len(t) for t in prep.tokenizer.get_vocab()) <= MAX_PRETOKEN + 1


def test_large_preparation_reports_progress(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bpe, "PROGRESS_S", -1.0)  # every line counts as "a while": the reporting path runs
    logs: list[str] = []
    prepare_data(cfg_for(corpus), logs.append)
    assert any(m.startswith("training BPE tokenizer: read ") for m in logs)
    assert any(m.startswith("tokenizing train: ") and "%" in m for m in logs)
