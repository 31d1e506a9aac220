"""What a planned run can be expected to learn, honestly: data per parameter, repetition, published references.

Three things beside the time (`tui-lm estimate`, its --json, the setup screen), never a guess:

- tokens per parameter of the planned run (every step's tokens / all the
  model's parameters), against Chinchilla's ~20 (Hoffmann et al. 2022,
  "Training Compute-Optimal Large Language Models": for a fixed compute
  budget the loss is lowest near 20 training tokens per parameter; they
  count all parameters, embeddings included, as done here);
- epochs over the training split, with a warning above REPEAT_EPOCHS: in
  Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models") up to
  about 4 epochs of repeated data are worth almost as much as new data, and
  beyond that each repeat is worth quickly less while the model increasingly
  memorises its training split (overfitting: watch the validation loss);
- published word-level perplexities of models of similar sizes, as
  references: other models, tokenizers, regularisation and budgets, so
  never a prediction of this run.

A predicted perplexity comes only from runs this project measured
(bench/quality.py, bench/README.md "Quality at equal budget"), and only for
a plan that is exactly such a run (shape, arch, optimizer, dataset,
tokenizer, batch, steps and the LR schedule); any other plan gets none.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.plan import RunPlan

CHINCHILLA_TOKENS_PER_PARAM = 20.0
REPEAT_EPOCHS = 4.0


@dataclass(frozen=True)
class Reference:
    """A published word-level perplexity (test split)."""

    model: str
    params: float  # parameters
    dataset: str
    word_ppl: float
    source: str
    short: str  # the setup screen's narrow column


REFERENCES: tuple[Reference, ...] = (
    Reference("AWD-LSTM", 33e6, "WikiText-2", 65.8, "Merity et al. 2017", "AWD-LSTM"),
    Reference("linear Transformer (fast weights)", 44e6, "WikiText-103", 34.1, "Schlag et al. 2021", "fast wts"),
    Reference("GPT-2 small, zero-shot", 117e6, "WikiText-103", 37.5, "Radford et al. 2019", "GPT-2 0-shot"),
    Reference("Transformer-XL", 151e6, "WikiText-103", 24.0, "Dai et al. 2019", "Trans-XL"),
)


@dataclass(frozen=True)
class MeasuredQuality:
    """A run bench/quality.py measured: the settings that make it that run, and its validation word perplexity."""

    arch: str
    optimizer: str
    batch_size: int
    steps: int
    warmup_steps: int
    word_ppl: float  # validation, whole split, mean of the seeds
    seeds: int
    compile: str
    lr: float = 1e-3
    muon_lr: float = 0.02
    min_lr_ratio: float = 0.1
    dropout: float = 0.1
    source: str = "bench/README.md, quality at equal budget, NVIDIA H200, bf16"

    def settings(self) -> dict[str, object]:
        """{setting key: value} a plan must have to be this run."""
        out: dict[str, object] = {
            "model.d_model": 256, "model.num_layers": 4, "model.num_heads": 4, "model.d_ff": 1024,
            "model.max_seq_len": 256, "model.dropout": self.dropout, "model.arch": self.arch,
            "model.tie_embeddings": True, "data.dataset": "wikitext-2", "data.tokenizer": "bpe",
            "data.vocab_size": 50257, "train.optimizer": self.optimizer, "train.batch_size": self.batch_size,
            "train.warmup_steps": self.warmup_steps, "train.lr": self.lr, "train.min_lr_ratio": self.min_lr_ratio,
        }
        if self.optimizer == "muon":
            out["train.muon_lr"] = self.muon_lr
        return out


# bench/quality.py on the tiny shape, WikiText-2 with its BPE (bench/README.md).
MEASURED: tuple[MeasuredQuality, ...] = (
    MeasuredQuality("gpt2", "adamw", 8, 300, 30, 588.1, 2, "off"),
    MeasuredQuality("gpt2", "muon", 8, 300, 30, 536.8, 2, "off"),
    MeasuredQuality("modern", "adamw", 8, 300, 30, 518.3, 2, "off"),
    MeasuredQuality("modern", "muon", 8, 300, 30, 460.8, 2, "off"),
    MeasuredQuality("gpt2", "adamw", 64, 150, 15, 541.0, 1, "on"),
    MeasuredQuality("modern", "adamw", 64, 150, 15, 464.4, 1, "on"),
    MeasuredQuality("modern", "muon", 64, 150, 15, 362.7, 1, "on"),
)


@dataclass(frozen=True)
class QualityGuide:
    tokens: int  # trained tokens to the end of the schedule (0: unknown)
    params: int
    tokens_per_param: float | None
    epochs: float | None  # None while the training split's size is unknown
    repeat_warning: str  # "" when the data is seen at most REPEAT_EPOCHS times
    measured: MeasuredQuality | None  # the bench run this plan is exactly, if any

    @property
    def data_verdict(self) -> str:
        """Below, near or above the compute-optimal ~20 tokens per parameter."""
        r = self.tokens_per_param
        if r is None:
            return ""
        if r < CHINCHILLA_TOKENS_PER_PARAM / 2:
            return "fewer than compute-optimal: for this compute a smaller model would likely reach a lower loss"
        if r > 2 * CHINCHILLA_TOKENS_PER_PARAM:
            return "more than compute-optimal: for this compute a larger model would likely reach a lower loss"
        return "near compute-optimal"


def measured_run(plan: RunPlan) -> MeasuredQuality | None:
    """The bench/quality.py run `plan` is exactly, or None."""
    cfg = plan.config
    for row in MEASURED:
        if plan.total_steps == row.steps and all(cfg.get(k) == v for k, v in row.settings().items()):
            return row
    return None


def quality_guide(plan: RunPlan, num_params: int, train_tokens: int | None) -> QualityGuide:
    """The guide for `plan` (its total steps known, else tokens 0); `train_tokens`: the training split's size."""
    tokens = plan.total_steps * plan.tokens_per_step
    epochs = tokens / train_tokens if tokens and train_tokens else None
    warning = ""
    if epochs is not None and epochs > REPEAT_EPOCHS:
        warning = (f"past ~{REPEAT_EPOCHS:.0f} epochs each repeat is worth less and overfitting is likely "
                   f"(Muennighoff et al. 2023): watch the validation loss")
    return QualityGuide(tokens=tokens, params=num_params, tokens_per_param=tokens / num_params if tokens else None,
                        epochs=epochs, repeat_warning=warning, measured=measured_run(plan))


def measured_line(m: MeasuredQuality) -> str:
    return (f"expected validation word perplexity ~{m.word_ppl:.0f}: measured by this project for exactly this run "
            f"(bench/quality.py, {m.seeds} seed{'s' if m.seeds > 1 else ''}; {m.source})")


def reference_rows(short: bool = False) -> list[tuple[str, str, str, str]]:
    """(model, parameters, dataset, word perplexity) of the published references, as shown; `short`: for a
    narrow column."""
    return [(r.short if short else f"{r.model} ({r.source})", f"{r.params / 1e6:.0f}M",
             r.dataset.replace("WikiText-", "WT-") if short else r.dataset, f"{r.word_ppl:.1f}") for r in REFERENCES]


REFERENCES_CAPTION = ("published test word perplexities, for scale: other models, tokenizers and budgets, "
                      "not a prediction of this run")
