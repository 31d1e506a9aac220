"""Text generation: autoregressive sampling with a KV cache, and a prompt-to-text helper.

`generate` feeds the prompt as one chunk into a `KVCache`, then one token at a
time, so each new token costs one position rather than the whole context.
When the sequence would outgrow `max_seq_len` the learned positions run out;
from then on every step re-encodes the last `max_seq_len` tokens without a
cache (a sliding window), which is slower but keeps generating. The no-cache
path (`use_cache=False`) always uses that window, so both paths pick the same
tokens given the same generator.

Randomness comes only from the `torch.Generator` passed in (or a private one
seeded from the OS): the trainer samples in the middle of training, and exact
resumption depends on the global torch RNG stream being left untouched.
"""

from __future__ import annotations

import torch

from engine.model.gpt import GPT, KVCache

EOT = "<|endoftext|>"


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from last-position logits (B, V) -> (B, 1)."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy: no randomness at all
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if generator is None:
        # A fresh OS-seeded generator: random, yet never touching the global stream.
        generator = torch.Generator(device=probs.device)
        generator.seed()
    # multinomial needs the generator on the tensor's device; move the small
    # probability vector rather than asking callers to match devices.
    out = torch.multinomial(probs.to(generator.device), 1, generator=generator)
    return out.to(logits.device)


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 50,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    eot_id: int | None = None,
) -> torch.Tensor:
    """`idx` (B, T) followed by up to `max_new_tokens` sampled tokens, as one (B, T + n) tensor.

    temperature 0 is greedy decoding. Padded vocabulary rows (ids >=
    `model.cfg.vocab_size`) are cut off before sampling, so they are never
    produced. Generation stops once every row has produced `eot_id` (the
    token is kept; rows that finished early are filled with it). The model is
    put in eval mode and returned to its previous mode afterwards.
    """
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("generate needs a (batch, tokens) prompt with at least one token")
    cfg = model.cfg
    window = cfg.max_seq_len
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = idx
            done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
            cache: KVCache | None = None
            cached = use_cache  # turns False for good once the window starts sliding
            for _ in range(max_new_tokens):
                if cached and cache is None and out.size(1) <= window:
                    dtype = next(model.parameters()).dtype
                    cache = KVCache(cfg, out.size(0), out.device, dtype)
                    logits, _ = model(out, cache=cache)
                elif cached and cache is not None and cache.length < window:
                    logits, _ = model(out[:, -1:], cache=cache)
                else:
                    # Positions past max_seq_len do not exist: slide a window
                    # over the most recent tokens and re-encode it whole.
                    cached, cache = False, None
                    logits, _ = model(out[:, -window:])
                # Slicing off the padded rows is masking them to -inf, minus the work.
                nxt = _pick(logits[:, -1, :cfg.vocab_size], temperature, top_k, generator)
                if eot_id is not None:
                    nxt = torch.where(done.unsqueeze(1), torch.full_like(nxt, eot_id), nxt)
                    done = done | (nxt.squeeze(1) == eot_id)
                out = torch.cat([out, nxt], dim=1)
                if eot_id is not None and bool(done.all()):
                    break
            return out
    finally:
        model.train(was_training)


def sample_text(
    model: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
) -> str:
    """The prompt followed by the decoded continuation; `seed` makes it repeatable.

    `tokenizer` is a `tokenizers.Tokenizer`. Generation stops early at
    <|endoftext|>, which is not part of the returned text. An empty prompt
    starts from <|endoftext|>, the token that opens every training stream.
    """
    device = torch.device(device)
    eot_id = tokenizer.token_to_id(EOT)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []
    if not ids:
        if eot_id is None:
            raise ValueError(f"empty prompt and the tokenizer has no {EOT} token to start from")
        ids = [eot_id]
        prompt = ""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                   generator=generator, use_cache=use_cache, eot_id=eot_id)
    new = out[0, len(ids):].tolist()
    # Decoding the continuation on its own keeps the prompt byte-for-byte as given.
    return prompt + tokenizer.decode(new, skip_special_tokens=True)
