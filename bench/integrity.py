"""Costs of run integrity: BPE training on a hostile line, checksum speed, checkpoint save overhead.

    python bench/integrity.py            # a few minutes on a CPU
    python bench/integrity.py --quick    # smaller sizes

Prints three tables:
1. BPE training time on one line without spaces, growing in length, with the
   engine's bounded pre-tokenizer and with GPT-2's plain byte-level one (the
   latter only up to the size where its super-linear growth is already plain).
2. xxHash3-128 (the checksum of checkpoints and the data fingerprint) against
   SHA-256 and BLAKE2b on an in-memory buffer.
3. save_checkpoint (hash while writing) against a bare torch.save to the same
   folder, for a checkpoint of the tiny preset's size.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from engine.data.tokenizers import EOT, train_bpe  # noqa: E402
from engine.files import new_hash  # noqa: E402


def plain_bpe(lines: list[str], vocab_size: int) -> Tokenizer:
    """train_bpe before the bound: GPT-2's byte-level pre-tokenizer alone."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((line + "\n" for line in lines), trainer=trainer, length=len(lines))
    return tok


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hostile_table(sizes: list[int], plain_up_to: int) -> None:
    print("BPE training on one line without spaces (vocab 2,000, 26 letters at random)")
    print(f"{'chars':>12} {'bounded s':>10} {'s/Mchar':>8} {'plain s':>9} {'s/Mchar':>8}")
    rng = np.random.default_rng(0)
    for n in sizes:
        line = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=n))
        lines = ["a normal line ."] * 100 + [line]
        bounded = timed(lambda: train_bpe(lines, 2000))
        plain = timed(lambda: plain_bpe(lines, 2000)) if n <= plain_up_to else None
        plain_cols = f"{plain:9.2f} {plain / n * 1e6:8.2f}" if plain is not None else f"{'-':>9} {'-':>8}"
        print(f"{n:12,} {bounded:10.2f} {bounded / n * 1e6:8.2f} {plain_cols}")


def hash_table(mib: int) -> None:
    data = np.random.default_rng(1).bytes(mib << 20)
    print(f"\nchecksum speed on {mib} MiB in memory")
    print(f"{'hash':>12} {'GB/s':>8}")
    for name, make in (("xxh3_128", new_hash), ("blake2b", hashlib.blake2b), ("sha256", hashlib.sha256)):
        h = make()
        s = timed(lambda: h.update(data))
        print(f"{name:>12} {len(data) / s / 1e9:8.2f}")


def save_table(repeats: int) -> None:
    import torch

    from engine.config.run_config import ModelConfig
    from engine.model.gpt import GPT
    from engine.runs.checkpoints import save_checkpoint

    model = GPT(ModelConfig(vocab_size=8192))
    state = {"model": model.state_dict(), "opt": {k: v.clone() for k, v in model.state_dict().items()}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain, ours = [], []
        for i in range(repeats):
            plain.append(timed(lambda: torch.save(state, folder / f"plain_{i}.pt")))
            ours.append(timed(lambda: save_checkpoint(folder / "snapshots" / f"step_{i:07d}.pt", state, {"step": i})))
        size = (folder / "plain_0.pt").stat().st_size
    print(f"\ncheckpoint save, {size / 2**20:.0f} MiB, median of {repeats}")
    print(f"{'torch.save':>22} {np.median(plain):6.3f} s")
    print(f"{'save_checkpoint':>22} {np.median(ours):6.3f} s  (temp file + hash while writing + fsync + sidecar)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        hostile_table([25_000, 50_000, 100_000, 1_000_000], plain_up_to=50_000)
        hash_table(256)
        save_table(2)
    else:
        hostile_table([25_000, 50_000, 100_000, 1_000_000, 4_000_000], plain_up_to=100_000)
        hash_table(1024)
        save_table(5)


if __name__ == "__main__":
    main()
