"""Which hyperparameters the setup form shows, and how text becomes a typed value.

The form is data-driven: one `FieldSpec` per editable setting, grouped in
sections. Keys are the same "section.field" strings that
`engine.config.validation_errors` uses, so its messages land next to the right
field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.config import PRECISIONS


@dataclass(frozen=True)
class FieldSpec:
    key: str  # "model.d_model"
    label: str
    kind: str  # "int" | "float" | "str" | "bool" | "choice"
    choices: tuple[str, ...] = ()
    placeholder: str = ""

    @property
    def section(self) -> str:
        return self.key.split(".")[0]

    @property
    def name(self) -> str:
        return self.key.split(".")[1]

    @property
    def widget_id(self) -> str:
        return "f-" + self.key.replace(".", "-")


GROUPS: list[tuple[str, list[FieldSpec]]] = [
    ("Model", [
        FieldSpec("model.d_model", "d_model", "int"),
        FieldSpec("model.num_heads", "heads", "int"),
        FieldSpec("model.num_layers", "layers", "int"),
        FieldSpec("model.d_ff", "d_ff (MLP width)", "int"),
        FieldSpec("model.max_seq_len", "sequence length", "int"),
        FieldSpec("model.dropout", "dropout", "float"),
        FieldSpec("model.grad_checkpointing", "grad checkpointing", "bool"),
    ]),
    ("Training", [
        FieldSpec("train.batch_size", "batch size", "int"),
        FieldSpec("train.epochs", "epochs", "int"),
        FieldSpec("train.max_steps", "max steps", "int", placeholder="0 = from epochs"),
        FieldSpec("train.lr", "learning rate", "float"),
        FieldSpec("train.warmup_steps", "warmup steps", "int"),
        FieldSpec("train.min_lr_ratio", "min lr ratio", "float"),
        FieldSpec("train.weight_decay", "weight decay", "float"),
        FieldSpec("train.grad_clip", "grad clip", "float", placeholder="0 = off"),
        FieldSpec("train.precision", "precision", "choice", PRECISIONS),
        FieldSpec("train.eval_interval", "eval interval", "int"),
    ]),
    ("Data and output", [
        FieldSpec("data.dataset", "dataset", "str", placeholder="wikitext-2, a folder or a .txt"),
        FieldSpec("data.vocab_size", "BPE vocabulary", "int"),
        FieldSpec("run.out_dir", "output folder", "str", placeholder="lm_<dataset>"),
        FieldSpec("run.run_name", "run name", "str", placeholder="<preset>-<time>"),
    ]),
]
FIELDS: dict[str, FieldSpec] = {f.key: f for _, group in GROUPS for f in group}


def to_text(value: Any) -> str:
    """How a config value is shown in its input box."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse(spec: FieldSpec, text: str) -> tuple[Any, str]:
    """(value, "") or (None, what is wrong with the text)."""
    raw = text.strip().replace("_", "") if spec.kind in ("int", "float") else text
    if spec.kind == "int":
        try:
            return int(raw), ""
        except ValueError:
            return None, "must be a whole number" if raw else "required: a whole number"
    if spec.kind == "float":
        try:
            value = float(raw)
        except ValueError:
            return None, "must be a number, e.g. 0.1 or 3e-4" if raw else "required: a number"
        return (value, "") if math.isfinite(value) else (None, "must be a finite number")
    if spec.kind == "str":
        return text.strip(), ""
    return text, ""
