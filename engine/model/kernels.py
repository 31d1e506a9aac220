"""The speed levers applied to the model: SDPA kernel choice, fused linear + cross-entropy, FP8 layers, compile mode.

Each function takes a choice already resolved by the run plan
(engine.config.levers.Levers) and imports its optional library only when that
choice needs it, so a CPU install without the [gpu] extra never imports one.
"default" / "off" is today's path and adds nothing.

- `attention_kernel(backend)`: the context GPT.forward runs its blocks in:
  torch.nn.attention.sdpa_kernel for an explicit backend (dynamo traces it, so
  a compiled model keeps the choice), nothing for "default".
- `fused_linear_cross_entropy(h, weight, targets, backend)`: the mean loss of
  `h @ weight.T` by liger-kernel or cut-cross-entropy, never the whole
  (tokens x vocab) logits. Eager, like the chunked loss (one graph break in a
  compiled model): both libraries bring their own Triton kernels.
- `convert_to_fp8(model, recipe, modules)`: torchao's float8 training on the
  MLP's and / or the head's Linear layers. The layers keep their fp32 weights
  as Parameters under the same names, so a checkpoint loads either way round.
- `compile_options(mode)`: torch.compile's keywords for a compile mode.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from engine.config.levers import FP8_DIVISOR

SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                 "math": "MATH"}


def attention_kernel(backend: str) -> contextlib.AbstractContextManager:
    """The SDPA kernel context for a resolved train.attention_backend ("default": torch's own order)."""
    if backend == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[backend]))


@torch.compiler.disable
def fused_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               backend: str) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `targets` by `backend` ("liger" or "cce"), no logits kept.

    h: (..., C) hidden states; weight: (V, C); targets: (...) token ids.
    liger takes autocast into account itself; cce needs both operands in one
    dtype, so under autocast they are cast to autocast's, as F.linear would.
    """
    h2, t1 = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    if backend == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        return liger_fused_linear_cross_entropy(h2, weight, t1)
    from cut_cross_entropy import linear_cross_entropy

    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    # filter_eps=None: exact gradients (cce's default skips small softmax entries).
    return linear_cross_entropy(h2.to(dtype), weight.to(dtype), t1, filter_eps=None)


def fp8_filter(modules: str):
    """torchao's module filter for train.fp8_modules: the MLP's Linear layers and / or lm_head, FP8-sized ones."""
    wanted = set(modules.split("+"))

    def keep(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear):
            return False
        part = "head" if fqn == "lm_head" else "mlp" if ".mlp." in f".{fqn}." else ""
        return part in wanted and module.in_features % FP8_DIVISOR == 0 and module.out_features % FP8_DIVISOR == 0

    return keep


def convert_to_fp8(model: nn.Module, recipe: str, modules: str, *, emulate: bool = False) -> nn.Module:
    """`model` with the layers `modules` names swapped for torchao's Float8Linear (recipe: tensorwise | rowwise).

    `emulate`: torchao's emulation of the FP8 matmul (for CPU tests; a run
    never uses it). Converts in place and returns the model, as torchao does.
    """
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name(recipe)
    if emulate:
        import dataclasses

        config = dataclasses.replace(config, emulate=True)
    return convert_to_float8_training(model, module_filter_fn=fp8_filter(modules), config=config)


def compile_options(mode: str) -> dict[str, str]:
    """torch.compile's keywords for a resolved train.compile_mode ("default": none, today's call)."""
    return {} if mode == "default" else {"mode": mode}
