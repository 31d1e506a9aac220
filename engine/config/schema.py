"""The settings schema: how one setting is declared, and everything derived from a declaration.

Each setting is declared once, as a field of a config dataclass in
engine/config/run_config.py whose default comes from `setting(...)`: the default, the
help text, the form label, the flag spellings, the unit, the allowed values
and bounds, the setup-form group, whether `tui-lm estimate` takes it (and
whether it changes a step's speed or only the run's length), and
whether it may change when a run is resumed. From those declarations come the
main CLI and `estimate`'s flags (tui_lm/flags.py), the setup form
(tui_lm/widgets/setup/fields.py), the TOML reader/writer and the per-field
validation below. Adding a setting = one `setting(...)` line plus the code that
uses the value.

Resume policy (`resume=`):
- "fixed": changes what is being trained (shape, data, tokenizer, batch,
  accumulation, sequence length, seed, optimizer recipe): refused on resume.
- "safe": changes how long or how visibly it trains (steps, epochs, intervals,
  evaluation, sampling, checkpoints kept, device): applied on resume,
  reported and recorded with the step it took effect.
- "ignore": only says where to look for runs (the output folder); a resumed
  run keeps its own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

SCHEMA_KEY = "tui_lm.setting"
KINDS = ("int", "float", "str", "bool", "choice")
RESUME_POLICIES = ("fixed", "safe", "ignore")


@dataclass(frozen=True)
class Setting:
    """One setting, as declared next to its dataclass field."""

    section: str  # "model" | "train" | "data" | "run"
    name: str  # the field name, also the TOML key
    kind: str  # one of KINDS
    default: Any
    help: str
    label: str  # the setup form's label
    flags: tuple[str, ...]  # command-line spellings, the first one shown in --help
    unit: str = ""  # "steps", "tokens", ...: shown after the value where it helps
    choices: tuple[str, ...] = ()
    gt: float | None = None  # bounds: value > gt, >= ge, < lt, <= le
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    zero: str = ""  # what 0 means ("off", "whole split"), said in messages and help
    resume: str = "fixed"
    group: str = ""  # setup-form group title; every setting has one unless derived
    # `tui-lm estimate` takes this flag too: True where it changes the memory and the speed of a step, "time"
    # where it changes only how long the run is (steps, evaluations, the data), not a step's speed.
    estimate: bool | str = False
    metavar: str = ""  # N, FLOAT, PATH, ...; derived from the kind when empty
    placeholder: str = ""  # the form's hint for an empty input
    allowed: str = ""  # message for a custom `valid` check: "must be ..."
    valid: Callable[[Any], bool] | None = None  # an extra per-value check
    derived: bool = False  # filled in by the engine, not by the user (no flag, no form field)

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def type(self) -> type:
        return {"int": int, "float": float, "bool": bool}.get(self.kind, str)


def setting(default: Any, help: str, *, label: str = "", flags: tuple[str, ...] = (), **spec: Any) -> Any:
    """A dataclass field carrying its setting's declaration (see `Setting` for the keywords)."""
    unknown = set(spec) - {f.name for f in dataclasses.fields(Setting)}
    if unknown:
        raise TypeError(f"setting(): unknown keyword(s) {', '.join(sorted(unknown))}")
    meta = {"help": help, "label": label, "flags": flags, **spec}
    return field(default=default, metadata={SCHEMA_KEY: meta})


def settings_of(section: str, cls: type) -> list[Setting]:
    """The declared settings of one config dataclass, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata.get(SCHEMA_KEY) or {})
        if not meta:
            raise TypeError(f"{cls.__name__}.{f.name} has no setting(...) declaration")
        type_name = f.type if isinstance(f.type, str) else f.type.__name__
        kind = "choice" if meta.get("choices") else type_name
        if kind not in KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {type_name}")
        flags = meta.pop("flags") or (f"--{f.name}",)
        label = meta.pop("label") or f.name
        s = Setting(section=section, name=f.name, kind=kind, default=f.default, label=label, flags=tuple(flags),
                    **meta)
        if s.resume not in RESUME_POLICIES:
            raise TypeError(f"{s.key}: resume must be one of {RESUME_POLICIES}")
        if not s.derived and not s.group:
            raise TypeError(f"{s.key}: a user setting needs a form group")
        out.append(s)
    return out


# ----------------------------------------------------------------------------- values

def format_value(value: Any) -> str:
    """How a value is shown in the form and in --help: 3e-4 not 0.0003, true not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def coerce(s: Setting, value: Any, where: str) -> Any:
    """`value` from a TOML file as the setting's type, or ValueError naming the field."""
    tp = s.type
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where} must be {tp.__name__}, got {type(value).__name__} {value!r}")


def parse_text(s: Setting, text: str) -> Any:
    """Typed text (a flag's argument, a form input) as the setting's type; ValueError says what is wrong."""
    if s.kind in ("int", "float"):
        raw = text.strip().replace("_", "")
        try:
            return int(raw) if s.kind == "int" else float(raw)
        except ValueError:
            what = "a whole number" if s.kind == "int" else "a number, e.g. 0.1 or 3e-4"
            raise ValueError(f"must be {what}" if raw else f"required: {what}") from None
    if s.kind == "bool":
        low = text.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ValueError("must be true or false")
    return text.strip() if s.kind == "str" else text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bounds_text(s: Setting) -> str:
    """What the bounds allow, as the end of "must be ..."."""
    zero = f"0 ({s.zero}) or " if s.zero else "0 or "
    low_open, low = (True, s.gt) if s.gt is not None else (False, s.ge)
    high_open, high = (True, s.lt) if s.lt is not None else (False, s.le)
    if low is not None and high is None:
        if low == 0 and low_open:
            return "a positive integer" if s.kind == "int" else "positive"
        if low == 0:
            return zero + "positive"
        if s.kind == "int" and not low_open:
            return f"at least {_num(low)}"
        return f"{'above' if low_open else 'at least'} {_num(low)}"
    if low is not None and high is not None:
        if s.kind == "int" and not low_open and not high_open:
            return f"between {_num(low)} and {_num(high)}"
        return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if high is not None:
        return f"{'below' if high_open else 'at most'} {_num(high)}"
    return ""


def value_problem(s: Setting, value: Any) -> str:
    """Why `value` is not allowed for `s` ("" when it is): finite, within bounds, one of the choices."""
    if s.kind == "float" and not math.isfinite(value):
        return f"{s.key} must be a finite number, got {value}"
    if s.kind in ("int", "float"):
        ok = ((s.gt is None or value > s.gt) and (s.ge is None or value >= s.ge)
              and (s.lt is None or value < s.lt) and (s.le is None or value <= s.le))
        if not ok:
            return f"{s.key} must be {bounds_text(s)}, got {value}"
    if s.kind == "choice" and value not in s.choices:
        return f"{s.key} must be one of {', '.join(s.choices)}, got {value!r}"
    if isinstance(value, str) and "\x00" in value:
        return f"{s.key} must not contain NUL bytes"
    if s.valid is not None and not s.valid(value):
        return f"{s.key} must be {s.allowed}, got {value!r}"
    return ""


def help_text(s: Setting) -> str:
    """--help line: the help, what 0 means, the default."""
    if s.kind == "bool":
        return f"{s.help} (default {'on' if s.default else 'off'})"
    default = format_value(s.default) if s.default != "" else (s.placeholder or "none")
    unit = f" {s.unit}" if s.unit and s.default not in ("", 0) else ""
    zero = f"; 0 = {s.zero}" if s.zero else ""
    return f"{s.help}{zero} (default {default}{unit})"


def metavar(s: Setting) -> str:
    if s.metavar:
        return s.metavar
    if s.kind == "choice":
        return "{" + ",".join(s.choices) + "}"
    return {"int": "N", "float": "FLOAT"}.get(s.kind, "TEXT")
