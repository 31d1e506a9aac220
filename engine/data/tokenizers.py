"""The tokenizers: a GPT-2 style byte-level BPE trained on the data, or GPT-2's own; batched encoding.

Hostile text cannot make tokenizer training quadratic: a run of more than
`MAX_PRETOKEN` letters, digits, symbols or spaces is cut into pieces of that
length before byte-level BPE (training and encoding alike, since the split is
part of the saved tokenizer), so the work grows linearly with the input.
Ordinary text never has such runs and is pre-tokenized exactly as GPT-2's rule.
"""

from __future__ import annotations

import time
from itertools import chain
from typing import Callable, Iterator

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.data.sources import data_home
from engine.errors import DataError, short_reason

EOT = "<|endoftext|>"
MAX_PRETOKEN = 100  # longest run of one character class that stays one pre-token
PROGRESS_S = 5.0  # seconds between progress lines while a large corpus is prepared
ENCODE_CHUNK = 4096  # lines per encode_batch call: big enough to use every core


def bounded_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """GPT-2's byte-level pre-tokenizer behind a split of over-long runs into MAX_PRETOKEN pieces.

    Only a run of one class (letters, digits, other symbols, spaces) can make
    a long GPT-2 pre-token, and only such runs match, so ordinary text is
    pre-tokenized exactly as by ByteLevel alone.
    """
    n = MAX_PRETOKEN
    long_run = Regex(rf"\p{{L}}{{{n}}}|\p{{N}}{{{n}}}|[^\s\p{{L}}\p{{N}}]{{{n}}}|\s{{{n}}}")
    return pre_tokenizers.Sequence([pre_tokenizers.Split(long_run, behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def _counted(lines: list[str], log: Callable[[str], None]) -> Iterator[str]:
    """line + "\\n" for each line, logging how far the BPE trainer has read every PROGRESS_S seconds."""
    last = time.monotonic()
    for i, line in enumerate(lines):
        if time.monotonic() - last > PROGRESS_S:
            last = time.monotonic()
            log(f"training BPE tokenizer: read {i:,} of {len(lines):,} lines")
        yield line + "\n"


def train_bpe(lines: list[str], vocab_size: int, log: Callable[[str], None] = lambda _: None) -> Tokenizer:
    """A GPT-2 style byte-level BPE trained on `lines` (each as line + "\\n")."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = bounded_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        # All 256 byte symbols, so any text encodes even if unseen in training.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_counted(lines, log), trainer=trainer, length=len(lines))
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
