"""The speed levers (fused loss, attention kernel, FP8, compile mode): what each setting resolves to on a device.

`resolve_levers(config, device, compiled)` is pure and torch-free: from the
four settings (train.fused_loss, train.attention_backend, train.fp8 with
train.fp8_modules, train.compile_mode), the device's type and compute
capability and which optional kernel libraries are installed
(`DeviceInfo.kernels`), it returns the `Levers` the model is built with, plus
errors (an explicit choice this device cannot run: one line, the run does not
start) and warnings (a missing library: the choice falls back to today's path
and says so once).

`auto` resolves to today's behaviour on every device: the plain (or chunked)
loss, torch's own SDPA kernel order, no FP8, torch.compile's default mode.
No device run has shown a lever to win yet (bench/gpu_check.sh holds the rows
that will); `auto` changes only with such a measurement.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

LEVER_AUTO = "auto = today's path on every device until a GPU run shows a win"  # said in each lever's help
FUSED_LOSSES = ("auto", "off", "liger", "cce")
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")
FP8_RECIPES = ("auto", "off", "tensorwise", "rowwise")
FP8_MODULES = ("mlp+head", "mlp", "head")
COMPILE_MODES = ("auto", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
# The importable module of each optional library, and its pip name (the [gpu] extra installs them).
LIBRARIES = {"liger": ("liger_kernel", "liger-kernel"), "cce": ("cut_cross_entropy", "cut-cross-entropy"),
             "fp8": ("torchao", "torchao")}
FP8_CAPABILITY = (8, 9)  # Ada / Hopper: FP8 tensor cores
FP8_DIVISOR = 16  # FP8 matmuls need both dimensions of a weight divisible by 16 (cuBLAS / CUTLASS)
# Lowest compute capability of each SDPA kernel on CUDA (torch's sdp_utils checks); the CPU runs flash and math.
ATTENTION_CAPABILITY = {"flash": (8, 0), "cudnn": (8, 0), "efficient": (5, 0), "math": (0, 0)}
CPU_ATTENTION = ("flash", "math")


def installed_kernels() -> frozenset[str]:
    """The optional kernel libraries importable here (by LIBRARIES key), found without importing them."""
    return frozenset(k for k, (module, _) in LIBRARIES.items() if importlib.util.find_spec(module) is not None)


@dataclass(frozen=True)
class Levers:
    """The resolved choices the model is built with (what RunStarted and the log report)."""

    fused_loss: str = "off"  # off | liger | cce
    attention_backend: str = "default"  # default (torch's own order) | flash | cudnn | efficient | math
    fp8: str = "off"  # off | tensorwise | rowwise
    fp8_modules: str = ""  # which Linear layers run in FP8 ("" when fp8 is off)
    compile_mode: str = "default"  # torch.compile's mode, when compiled

    def describe(self) -> str:
        """One log line: "fused loss off, attention default, fp8 off, compile mode default"."""
        fp8 = f"{self.fp8} ({self.fp8_modules})" if self.fp8 != "off" else "off"
        return (f"fused loss {self.fused_loss}, attention {self.attention_backend}, fp8 {fp8}, "
                f"compile mode {self.compile_mode}")


def _missing(key: str, setting: str, value: str, kernels: frozenset[str] | None) -> str:
    """The warning for an explicit choice whose library is not installed ("" when it is or may be)."""
    if kernels is None or key in kernels:
        return ""
    module, pip_name = LIBRARIES[key]
    return (f"{setting} {value}: {pip_name} is not installed (pip install -e \".[gpu]\"), so it is off "
            f"for this run")


def resolve_levers(cfg, device, compiled: bool) -> tuple[Levers, list[str], list[str]]:
    """(levers, errors, warnings) for `cfg`'s lever settings on `device` (an engine.config.plan.DeviceInfo)."""
    t, m = cfg.train, cfg.model
    cuda = device.type == "cuda"
    cap = device.capability
    where = device.name or ("this GPU" if cuda else f"the {device.type.upper()}")
    errors: list[str] = []
    warnings: list[str] = []

    fused = "off" if t.fused_loss == "auto" else t.fused_loss
    if fused != "off":
        if not cuda:
            errors.append(f"train.fused_loss {fused} needs a CUDA GPU (its kernels are Triton); on {where} use "
                          f"off or auto (the plain loss, or train.loss_chunk)")
        elif warning := _missing(fused, "train.fused_loss", fused, device.kernels):
            warnings.append(warning)
            fused = "off"
        elif t.loss_chunk:
            warnings.append(f"train.loss_chunk ({t.loss_chunk}) is unused: train.fused_loss {fused} computes the "
                            f"loss without (tokens x vocab) logits")

    attention = "default" if t.attention_backend == "auto" else t.attention_backend
    if attention != "default":
        if m.attention != "fused":
            errors.append(f"train.attention_backend {attention} picks a scaled_dot_product_attention kernel; "
                          f"model.attention math does not use one (use model.attention fused, or auto)")
        elif cuda and cap is not None and cap < ATTENTION_CAPABILITY[attention]:
            need = ".".join(map(str, ATTENTION_CAPABILITY[attention]))
            errors.append(f"train.attention_backend {attention} needs compute capability {need}, {where} has "
                          f"{cap[0]}.{cap[1]}; use auto")
        elif not cuda and attention not in (CPU_ATTENTION if device.type == "cpu" else ("math",)):
            allowed = ", ".join(("auto",) + (CPU_ATTENTION if device.type == "cpu" else ("math",)))
            errors.append(f"train.attention_backend {attention} has no kernel on {where}; use {allowed}")

    fp8 = "off" if t.fp8 == "auto" else t.fp8
    modules = t.fp8_modules
    if fp8 != "off":
        if not cuda or (cap is not None and cap < FP8_CAPABILITY):
            has = f" (compute capability {cap[0]}.{cap[1]})" if cuda and cap is not None else ""
            errors.append(f"train.fp8 {fp8} needs a GPU of compute capability 8.9 or newer (Ada, Hopper); "
                          f"{where}{has} has no FP8 tensor cores; use off or auto")
        elif warning := _missing("fp8", "train.fp8", fp8, device.kernels):
            warnings.append(warning)
            fp8 = "off"
        elif "head" in modules and (fused != "off" or t.loss_chunk):
            # The fused and the chunked loss multiply by the head's weight themselves, past its Linear.
            modules = "mlp"
            warnings.append(f"train.fp8_modules {t.fp8_modules}: the head stays in bf16, since the "
                            f"{'fused' if fused != 'off' else 'chunked'} loss does its own matmul")
            if t.fp8_modules == "head":
                fp8 = "off"
    mode = "default" if t.compile_mode == "auto" else t.compile_mode
    if mode != "default" and not compiled:
        warnings.append(f"train.compile_mode {mode} has no effect: this run is not compiled (train.compile)")
    return Levers(fused, attention, fp8, modules if fp8 != "off" else "", mode), errors, warnings
