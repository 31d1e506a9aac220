"""The setup form's messages in the user's words, each beside the field it is about.

engine.config.run_config.validation_errors speaks the config's language ("model.d_model
(512) must be divisible by model.num_heads (3)", keyed to model.d_model). The
form says it the way the fields are labelled, next to the field to change:
"heads must divide d_model: 512 / 3" beside heads. Checks between fields are
rewritten here; any other message loses its own key (it sits beside its
field) and names other settings by their labels. The dataset is checked here
too (`dataset_problem`), so Start stays disabled until it can be read.
"""

from __future__ import annotations

import re
from typing import Any

from engine.config.run_config import SCHEMA, RunConfig
from engine.config.schema import value_problem

SETTINGS = {s.key: s for s in SCHEMA}
LABELS = {s.key: s.label for s in SCHEMA}
_KEY = re.compile(r"\b(model|train|data|run)\.([a-z_0-9]+)\b")


def label(key: str) -> str:
    return LABELS.get(key, key.split(".")[-1].replace("_", " "))


def _between(cfg: RunConfig) -> dict[str, tuple[str, str]]:
    """{engine key: (the field to show it beside, the message)} for the checks between fields that fail.

    The same conditions as engine.config.run_config.validation_errors' checks between fields.
    """
    m, t, d = cfg.model, cfg.train, cfg.data
    out: dict[str, tuple[str, str]] = {}
    if m.num_heads > 0 and m.d_model % m.num_heads:
        out["model.d_model"] = ("model.num_heads", f"{label('model.num_heads')} must divide "
                                                   f"{label('model.d_model')}: {m.d_model} / {m.num_heads}")
    elif m.arch == "modern" and m.num_heads > 0 and (m.d_model // m.num_heads) % 2:
        out["model.num_heads"] = ("model.num_heads", f"modern blocks need an even head size: {m.d_model} / "
                                                     f"{m.num_heads} = {m.d_model // m.num_heads}")
    if t.grad_accum_steps > 0 and t.batch_size % t.grad_accum_steps:
        out["train.batch_size"] = ("train.batch_size", f"must be a multiple of {label('train.grad_accum_steps')}: "
                                                       f"{t.batch_size} / {t.grad_accum_steps}")
    if t.epochs <= 0 and t.max_steps <= 0:
        out["train.epochs"] = ("train.epochs", f"set {label('train.epochs')} or {label('train.max_steps')} above 0")
    if not d.dataset.strip():
        out["data.dataset"] = ("data.dataset", "name a dataset: wikitext-2, a folder or a .txt file")
    return out


def user_messages(errors: dict[str, str], cfg: RunConfig) -> dict[str, str]:
    """`errors` (engine keys and messages) as {field key: message in the user's words}."""
    between = _between(cfg)
    out: dict[str, str] = {}
    for key, message in errors.items():
        field, text = key, message
        setting = SETTINGS.get(key)
        own = setting is not None and value_problem(setting, cfg.get(key)) == message
        if key in between and not own:  # a check between fields: said about the field to change
            field, text = between[key]
        elif message.startswith(key):  # beside its own field, its name is redundant
            text = message[len(key):].lstrip()
        text = _KEY.sub(lambda m_: LABELS.get(m_.group(0), m_.group(0)), text)  # "train.txt" stays
        out.setdefault(field, text)
    return out


def waiting_for(messages: dict[str, str]) -> str:
    """What the estimate waits for: 'batch size (must be ...)'."""
    return "; ".join(f"{label(k)} ({m})" for k, m in messages.items())


def dataset_problem(dataset: str) -> tuple[str, str]:
    """(problem, note) for the dataset field: the problem keeps Start disabled; the note only informs.

    Cheap: resolving a dataset stats a few files, never reads text or the network.
    """
    from engine.data.sources import resolve_dataset
    from engine.errors import UserError

    if not dataset.strip():
        return "", ""  # validation_errors already says it
    try:
        ref: Any = resolve_dataset(dataset)
    except UserError as e:
        return str(e).replace(f"dataset {dataset!r} is", "is"), ""
    except OSError as e:
        return f"cannot be read: {e}", ""
    if ref.kind == "hub":
        return "", f"{ref.name} will be downloaded from the Hugging Face hub"  # short: the status has 3 lines
    return "", ""
