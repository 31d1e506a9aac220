"""Tests for text loading (engine.data.sources) and tokenization + caching (engine.data.token_cache).

Everything runs on small generated text in tmp_path with TUI_LM_CACHE in
tmp_path, except the WikiText-2 checks, which use the shared read-only copy
next to the repository when it exists and are skipped otherwise.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.config.run_config import DataConfig
from engine.data import token_cache as tok_mod
from engine.data.sources import canonical_name, count_words, load_text_splits
from engine.data.token_cache import EOT, cache_root, prepare_data
from engine.errors import DataError

WIKITEXT2 = Path(__file__).resolve().parents[3] / "shared/data/wikitext-2"
WORDS = ("the cat dog sat on a mat , . and of history river king café naïve 日本 "
         "@-@ <unk> 1 @,@ 000 was is in to").split()


def make_lines(n: int, seed: int = 0) -> list[str]:
    """WikiText-like lines: headings, paragraphs, empty lines, some non-ASCII."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        r = rng.random()
        if r < 0.2:
            lines.append("")
        elif r < 0.3:
            lines.append(f" = Heading {i} = ")
        else:
            lines.append(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) + " ")
    return lines


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    write_lines(d / "train.txt", make_lines(300, seed=1))
    write_lines(d / "valid.txt", make_lines(40, seed=2))
    write_lines(d / "test.txt", make_lines(30, seed=3))
    return d


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # prepare_data also reuses a cache found there
    monkeypatch.delenv("TUI_LM_DATA", raising=False)


def fail_hub(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'wikitext' on the Hub (offline test)")


# ----------------------------------------------------------------------------- text loading

def test_count_words_known_answer() -> None:
    assert count_words(["a b c", "", " d  e "]) == 8
    assert count_words([]) == 0


def test_folder_dataset_keeps_every_line(folder: Path) -> None:
    splits = load_text_splits(str(folder))
    assert splits.train == make_lines(300, seed=1)
    assert splits.valid == make_lines(40, seed=2)
    assert splits.test == make_lines(30, seed=3)
    assert "" in splits.train  # empty lines are kept
    assert splits.name == "corpus"
    assert splits.source == str(folder)


def test_folder_without_test_split(folder: Path) -> None:
    (folder / "test.txt").unlink()
    assert load_text_splits(str(folder)).test == []


def test_file_without_final_newline_and_crlf(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.txt").write_bytes(b"one\r\n\r\ntwo \xe2\x80\xa8 still two")
    (d / "valid.txt").write_bytes(b"x\n")
    splits = load_text_splits(str(d))
    # U+2028 is not a line break for us: only "\n" splits lines.
    assert splits.train == ["one", "", "two \u2028 still two"]
    assert splits.valid == ["x"]


def test_missing_valid_names_folder_and_file(folder: Path) -> None:
    (folder / "valid.txt").unlink()
    with pytest.raises(DataError) as err:
        load_text_splits(str(folder))
    assert str(folder) in str(err.value)
    assert "missing valid.txt (" in str(err.value)


def test_single_file_carves_last_lines_for_validation(tmp_path: Path) -> None:
    lines = make_lines(200, seed=4)
    path = write_lines(tmp_path / "book.txt", lines)
    splits = load_text_splits(str(path), valid_fraction=0.05)
    assert splits.train == lines[:190] and splits.valid == lines[190:]
    assert splits.test == [] and splits.name == "book"
    tiny = write_lines(tmp_path / "two.txt", ["first", "second"])
    s = load_text_splits(str(tiny), valid_fraction=0.05)
    assert s.train == ["first"] and s.valid == ["second"]  # at least one validation line


def test_single_file_needs_two_lines(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least 2 lines"):
        load_text_splits(str(write_lines(tmp_path / "one.txt", ["only"])))


def test_max_samples_limits_train_only(folder: Path) -> None:
    splits = load_text_splits(str(folder), max_samples=25)
    assert splits.train == make_lines(300, seed=1)[:25]
    assert len(splits.valid) == 40 and len(splits.test) == 30


def test_unknown_dataset_message() -> None:
    with pytest.raises(DataError) as err:
        load_text_splits("no-such-corpus")
    assert str(err.value).startswith(
        "dataset 'no-such-corpus' is neither a folder, a text file nor a known dataset "
        "(wikitext-2, wikitext-103, wikitext-2-raw, wikitext-103-raw)"
    )


def test_canonical_names(folder: Path, tmp_path: Path) -> None:
    assert canonical_name("wikitext") == "wikitext-2"
    assert canonical_name("wikitext-2-v1") == "wikitext-2"
    assert canonical_name("wikitext-103-raw-v1") == "wikitext-103-raw"
    assert canonical_name("WikiText-103") == "wikitext-103"
    assert canonical_name(str(folder)) == "corpus"
    assert canonical_name(str(write_lines(tmp_path / "my book.txt", ["a", "b"]))) == "my_book"


def test_hub_unreachable_says_where_to_put_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    monkeypatch.setattr(datasets, "load_dataset", fail_hub)
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("TUI_LM_DATA", str(empty))
    with pytest.raises(DataError) as err:
        load_text_splits("wikitext-2")
    msg = str(err.value)
    assert "hub could not be reached" in msg and "ConnectionError" in msg
    assert str(empty / "wikitext-2") in msg
    assert "train.txt, valid.txt and test.txt" in msg and "--dataset" in msg

    monkeypatch.delenv("TUI_LM_DATA")
    with pytest.raises(DataError, match=r"set TUI_LM_DATA .*\$TUI_LM_DATA/wikitext-103-raw/"):
        load_text_splits("wikitext-103-raw-v1")


def test_local_copy_in_tui_lm_data_wins_over_hub(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    monkeypatch.setattr(datasets, "load_dataset", fail_hub)  # the hub must not be asked
    home = folder.parent / "data"
    home.mkdir()
    folder.rename(home / "wikitext-2")
    monkeypatch.setenv("TUI_LM_DATA", str(home))
    splits = load_text_splits("wikitext-2-v1")
    assert splits.name == "wikitext-2"
    assert splits.source == str(home / "wikitext-2")
    assert splits.valid == make_lines(40, seed=2)


def test_hub_rows_become_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    rows = {"train": {"text": ["", " = T = \n", "", " a b \n"]},
            "validation": {"text": [" v \n"]}, "test": {"text": ["\n"]}}
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a: calls.append(a) or rows)
    splits = load_text_splits("wikitext-103")
    assert calls == [("wikitext", "wikitext-103-v1")]
    assert splits.train == ["", " = T = ", "", " a b "]
    assert splits.valid == [" v "] and splits.test == [""]
    assert splits.source == "hub: wikitext/wikitext-103-v1"


# ----------------------------------------------------------------------------- tokens and cache

def cfg_for(path: Path, **kw) -> DataConfig:
    return DataConfig(dataset=str(path), vocab_size=kw.pop("vocab_size", 400), **kw)


def test_prepare_writes_cache_and_reuses_it(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs: list[str] = []
    first = prepare_data(cfg_for(folder), logs.append)
    assert first.cache_dir.parent == tmp_path / "cache"
    assert first.cache_dir.name.startswith("corpus-")
    names = {"tokenizer.json", "train.bin", "valid.bin", "test.bin", "meta.json"}
    assert names <= {p.name for p in first.cache_dir.iterdir()}
    assert any(m.startswith("training BPE tokenizer (target vocab 400) on 300 lines") for m in logs)
    assert any(m.startswith("tokenizing train: ") for m in logs)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.cache_dir.iterdir()}

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(tok_mod, "train_bpe", boom)
    monkeypatch.setattr(tok_mod, "encode_lines", boom)
    logs.clear()
    second = prepare_data(cfg_for(folder), logs.append)
    assert logs == [f"using cached tokens from {first.cache_dir}"]
    assert {p.name: p.stat().st_mtime_ns for p in second.cache_dir.iterdir()} == mtimes
    assert np.array_equal(first.train.ids, second.train.ids)
    assert second.vocab_size == first.vocab_size and second.eot_id == first.eot_id


def test_changed_inputs_get_a_new_cache(folder: Path) -> None:
    a = prepare_data(cfg_for(folder))
    b = prepare_data(cfg_for(folder, vocab_size=300))
    c = prepare_data(cfg_for(folder, max_samples=50))
    assert len({a.cache_dir, b.cache_dir, c.cache_dir}) == 3
    assert c.train.n_lines == 50
    write_lines(folder / "train.txt", make_lines(310, seed=9))
    assert prepare_data(cfg_for(folder)).cache_dir != a.cache_dir


def test_truncated_cache_is_rebuilt(folder: Path) -> None:
    first = prepare_data(cfg_for(folder))
    n = len(first.train.ids)
    del first
    path = next((Path(os.environ["TUI_LM_CACHE"])).glob("corpus-*/train.bin"))
    with open(path, "r+b") as f:
        f.truncate(10)
    logs: list[str] = []
    again = prepare_data(cfg_for(folder), logs.append)
    assert len(again.train.ids) == n
    assert not any(m.startswith("using cached") for m in logs)


def test_token_stream_round_trips(folder: Path) -> None:
    prep = prepare_data(cfg_for(folder))
    lines = make_lines(300, seed=1)
    ids = prep.train.ids
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and ids.ndim == 1
    assert not ids.flags.writeable
    assert ids[0] == prep.eot_id == prep.tokenizer.token_to_id(EOT)
    assert prep.vocab_size == prep.tokenizer.get_vocab_size() <= 400
    text = "".join(line + "\n" for line in lines)
    assert prep.tokenizer.decode(ids[1:].tolist()) == text
    # Batched encoding equals encoding each line on its own.
    per_line = [i for line in lines for i in prep.tokenizer.encode(line + "\n").ids]
    assert ids[1:].tolist() == per_line
    assert EOT not in prep.tokenizer.decode(ids[:5].tolist(), skip_special_tokens=True)


def test_split_sizes(folder: Path) -> None:
    prep = prepare_data(cfg_for(folder))
    for split, lines in (("train", make_lines(300, seed=1)), ("valid", make_lines(40, seed=2)),
                         ("test", make_lines(30, seed=3))):
        ts = getattr(prep, split)
        assert ts.n_lines == len(lines)
        assert ts.n_words == count_words(lines)
        assert ts.n_bytes == len("".join(line + "\n" for line in lines).encode("utf-8"))
    assert prep.train.n_bytes == (folder / "train.txt").stat().st_size


def test_single_file_has_no_test_split(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "book.txt", make_lines(200, seed=5))
    prep = prepare_data(cfg_for(path))
    assert prep.test is None and prep.name == "book"
    assert prep.valid.n_lines == 10 and prep.train.n_lines == 190
    assert not (prep.cache_dir / "test.bin").exists()


def test_gpt2_without_hub_suggests_bpe(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class OfflineTokenizer:
        @staticmethod
        def from_pretrained(name):
            raise ConnectionError("offline")

    monkeypatch.setattr(tok_mod, "Tokenizer", OfflineTokenizer)
    with pytest.raises(DataError, match='tokenizer = "bpe"'):
        prepare_data(DataConfig(dataset=str(folder), tokenizer="gpt2"))


def test_gpt2_tokenizer_from_local_copy(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any tokenizer.json with an end-of-text token stands in for GPT-2's own.
    local = tmp_path / "data" / "gpt2"
    local.mkdir(parents=True)
    tok_mod.train_bpe(make_lines(100), 300).save(str(local / "tokenizer.json"))
    monkeypatch.setenv("TUI_LM_DATA", str(tmp_path / "data"))
    prep = prepare_data(DataConfig(dataset=str(folder), tokenizer="gpt2"))
    assert prep.train.ids[0] == prep.eot_id
    assert prep.tokenizer.decode(prep.valid.ids[1:].tolist()) == "".join(x + "\n" for x in make_lines(40, seed=2))


def test_cache_root_choices(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root(folder) == tmp_path / "cache"
    monkeypatch.delenv("TUI_LM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(folder) == folder / ".tui-lm-cache"
    assert cache_root(folder / "train.txt") == folder / ".tui-lm-cache"
    assert cache_root(None) == tmp_path / "xdg" / "tui-lm"
    folder.chmod(0o555)  # read-only data, as the shared WikiText copy is
    try:
        assert cache_root(folder) == tmp_path / "xdg" / "tui-lm"
    finally:
        folder.chmod(0o755)


def test_data_modules_import_neither_textual_nor_datasets() -> None:
    code = ("import sys, engine.data.sources, engine.data.token_cache; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'datasets'}))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- real WikiText-2

needs_wikitext = pytest.mark.skipif(not (WIKITEXT2 / "valid.txt").is_file(),
                                    reason=f"no WikiText-2 copy at {WIKITEXT2}")


@needs_wikitext
def test_wikitext2_word_and_line_counts() -> None:
    splits = load_text_splits(str(WIKITEXT2))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (36_718, 3_760, 4_358)
    assert count_words(splits.valid) == 213_886 + 3_760 == 217_646
    assert count_words(splits.test) == 241_211 + 4_358
    assert count_words(splits.train) == 2_051_933 + 36_718


@needs_wikitext
def test_wikitext2_prepare(tmp_path: Path) -> None:
    prep = prepare_data(DataConfig(dataset=str(WIKITEXT2)))
    assert prep.cache_dir.parent == tmp_path / "cache"  # never written into the shared folder
    assert 20_000 < prep.vocab_size <= 50_257
    assert prep.valid.n_words == 217_646 and prep.valid.n_lines == 3_760
    for ts in (prep.train, prep.valid, prep.test):
        assert 1.0 < len(ts.ids) / ts.n_words < 1.5
    head = prep.tokenizer.decode(prep.valid.ids[:200].tolist())
    assert (WIKITEXT2 / "valid.txt").read_text(encoding="utf-8").startswith(head)

