"""A straightforward reference training loop, written apart from the engine, to check its speed against.

A textbook nanoGPT-style GPT-2 (pre-LayerNorm, learned positions, tanh GELU,
fused qkv, tied embeddings, vocabulary padded to a multiple of 64 as the
engine pads it, so the FLOPs per token are the same) trained with the plainest
loop there is: fp32, eager, `torch.optim.AdamW` (decay on matrices only),
gradient clipping at 1.0, `zero_grad(set_to_none=True)`. It imports nothing
from `engine`, so a slowdown in the engine cannot hide in it. With
`precision="bf16", compile=True` it is nanoGPT's train.py loop instead: bf16
autocast, TF32 matmuls, `torch.compile(model)` and fused AdamW, so the engine
is compared with what nanoGPT users run at the same settings.

`measure_reference(...)` returns the tokens/s of N timed steps after a few
warm-up steps; `bench/throughput.py` runs it interleaved with the engine's
real trainer and prints engine/reference. On its own:

    python bench/reference_gpt.py --d-model 256 --layers 4 --heads 4 --seq-len 256 --batch-size 8 --steps 5
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_MULTIPLE = 64  # the engine pads its embedding rows the same way


@dataclass
class RefConfig:
    vocab_size: int = 50257
    d_model: int = 256
    num_heads: int = 4
    num_layers: int = 4
    d_ff: int = 1024
    seq_len: int = 256
    dropout: float = 0.1
    attention: str = "sdpa"  # "sdpa": F.scaled_dot_product_attention; "math": explicit softmax

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // PAD_MULTIPLE) * PAD_MULTIPLE


class SelfAttention(nn.Module):
    def __init__(self, c: RefConfig) -> None:
        super().__init__()
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.n_head = c.num_heads
        self.p = c.dropout
        self.attn_drop = nn.Dropout(c.dropout)
        self.resid_drop = nn.Dropout(c.dropout)
        self.math = c.attention == "math"
        if self.math:
            self.register_buffer("mask", torch.tril(torch.ones(c.seq_len, c.seq_len, dtype=torch.bool)),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.math:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
            y = self.attn_drop(F.softmax(att, dim=-1)) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, c: RefConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model)
        self.attn = SelfAttention(c)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.fc = nn.Linear(c.d_model, c.d_ff)
        self.out = nn.Linear(c.d_ff, c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class ReferenceGPT(nn.Module):
    def __init__(self, c: RefConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(c.padded_vocab, c.d_model)
        self.pos = nn.Embedding(c.seq_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.padded_vocab, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.num_layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


@dataclass
class RefResult:
    tokens_per_s: float  # median over the timed steps
    step_times_s: list[float] = field(default_factory=list)
    peak_bytes: int = 0  # torch.cuda.max_memory_allocated on a GPU; 0 on the CPU (the caller reads RSS)
    num_params: int = 0
    final_loss: float = float("nan")
    precision: str = "fp32"  # the loop's: fp32 | bf16 (autocast)
    compiled: bool = False


def measure_reference(
    cfg: RefConfig,
    *,
    batch_size: int,
    steps: int,
    warmup: int = 1,
    device: str = "cpu",
    tokens: np.ndarray | None = None,
    seed: int = 0,
    lr: float = 3e-4,
    window: int = 1,
    precision: str = "fp32",
    compile: bool = False,
) -> RefResult:
    """Train `steps` timed steps (after `warmup` untimed ones); tokens/s is the median step's.

    The host syncs once per `window` steps (the engine's log interval) and the
    clock is read after each sync, so per-step times are window means.

    `tokens` is a 1-D token stream (e.g. the engine's memmap) to cut random
    windows from, nanoGPT's get_batch; None trains on random tokens (same
    FLOPs). `precision` "fp32": on CUDA the loop runs true fp32 (TF32 off for
    its duration); "bf16": bf16 autocast with TF32 on, as nanoGPT runs.
    `compile`: torch.compile(model) (its default mode; the warm-up steps
    compile); on CUDA AdamW is then fused, as nanoGPT's is.
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ReferenceGPT(cfg).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if compile and dev.type == "cuda" else {}))
    step_model = torch.compile(model) if compile else model
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else
                contextlib.nullcontext())
    T = cfg.seq_len

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if tokens is None:
            data = torch.randint(0, cfg.vocab_size, (batch_size, T + 1))
        else:
            starts = rng.integers(0, len(tokens) - T - 1, size=batch_size)
            data = torch.from_numpy(np.stack([tokens[s:s + T + 1] for s in starts]).astype(np.int64))
        if dev.type == "cuda":
            data = data.pin_memory().to(dev, non_blocking=True)
        return data[:, :-1], data[:, 1:]

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "bf16"
        torch.cuda.reset_peak_memory_stats(dev)
    model.train()
    times: list[float] = []
    loss_value = float("nan")
    window_loss = torch.zeros((), device=dev)
    done = 0  # timed steps since the last sync
    try:
        t0 = time.perf_counter()
        for i in range(warmup + steps):
            timed = i >= warmup
            x, y = get_batch()
            with autocast:
                loss = step_model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            window_loss += loss.detach()
            done += timed
            # One host sync per `window` timed steps, as the engine syncs once per log
            # interval; the clock is read after it, so queued device work counts alike.
            if not timed or done == window or i == warmup + steps - 1:
                loss_value = window_loss.item() / max(done, 1)
                window_loss.zero_()
                if timed:
                    times.extend([(time.perf_counter() - t0) / done] * done)
                    done = 0
                t0 = time.perf_counter()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    step = statistics.median(times)
    return RefResult(batch_size * T / step, times, peak, sum(p.numel() for p in params), loss_value, precision,
                     compile)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=0, help="default 4 x d-model")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--attention", choices=("sdpa", "math"), default="sdpa")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, as nanoGPT")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (and fused AdamW on CUDA)")
    a = p.parse_args(argv)
    cfg = RefConfig(a.vocab_size, a.d_model, a.heads, a.layers, a.d_ff or 4 * a.d_model, a.seq_len,
                    attention=a.attention)
    r = measure_reference(cfg, batch_size=a.batch_size, steps=a.steps, warmup=a.warmup, device=a.device,
                          precision=a.precision, compile=a.compile)
    print(f"reference GPT ({r.num_params / 1e6:.1f}M params) on {a.device}: {r.tokens_per_s:,.0f} tokens/s "
          f"(median of {a.steps} steps: {statistics.median(r.step_times_s) * 1e3:.0f} ms), loss {r.final_loss:.3f}")


if __name__ == "__main__":
    main()
