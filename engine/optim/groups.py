"""The optimizer: AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest.

AdamW decays only tensors with two or more dimensions: biases and norm gains
are not decayed (decaying them only hurts); the tied embedding matrix is, as
in nanoGPT and GPT-2 reproductions. The fused CUDA kernel is used when the
parameters live on a GPU.

`train.optimizer = "muon"` hands the 2-D weights inside the transformer blocks
to Muon (momentum, then Newton-Schulz orthogonalisation of the update; 2-D
tensors only; engine/optim/muon.py: torch.optim.Muon's math, batched over
equal shapes) at `train.muon_lr`, and keeps AdamW at
`train.lr` for embeddings, the head, norms and biases, which Muon is not meant
for. Muon's decoupled weight decay is lr · wd per step, so its wd is set to
give the same per-step shrinkage as AdamW's (weight_decay · lr / muon_lr).

The loop sets LRs with `set_lr(optimizer, cfg, multiplier)`: every group gets
its own peak LR times the schedule's multiplier (engine.config.schedule), so
warmup and decay keep the ratio.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.config.run_config import TrainConfig
from engine.optim.muon import Muon


class MuonAdamW:
    """Muon and AdamW stepping together, seen by the loop (and GradScaler) as one optimizer.

    `param_groups` lists AdamW's groups then Muon's (the same dicts, so
    setting an LR there reaches the real optimizer); the state dict holds both.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.adamw.param_groups + self.muon.param_groups

    @property
    def state(self) -> dict:
        return {**self.adamw.state, **self.muon.state}

    @property
    def _step_supports_amp_scaling(self) -> bool:
        """True when GradScaler may hand the step found_inf instead of syncing on it: Muon always can,
        AdamW with its fused kernel (torch.optim.Adam sets the flag only then)."""
        return getattr(self.adamw, "_step_supports_amp_scaling", False)

    def step(self) -> None:
        # GradScaler sets grad_scale and found_inf on this object for the call: each optimizer needs them.
        amp = {k: getattr(self, k) for k in ("grad_scale", "found_inf") if hasattr(self, k)}
        for opt in (self.adamw, self.muon):
            for k, v in amp.items():
                setattr(opt, k, v)
            try:
                opt.step()
            finally:
                for k in amp:
                    delattr(opt, k)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"adamw", "muon"}:
            raise ValueError("the checkpoint's optimizer state is not Muon + AdamW "
                             "(was train.optimizer changed since it was written?)")
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])


def muon_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The blocks' 2-D weights: the hidden matrices Muon is for (not embeddings or the head)."""
    return [p for name, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and name.startswith("h.")]


def _adamw(params: list[torch.nn.Parameter], cfg: TrainConfig, fused: bool | None) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if fused is None:
        fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool | None = None, *,
                   ns_dtype: torch.dtype = torch.bfloat16, shard: bool = False) -> torch.optim.AdamW | MuonAdamW:
    """The run's optimizer; AdamW's fused kernel when every parameter is on a GPU, unless `fused` says.

    Muon's: `ns_dtype` its Newton-Schulz dtype (the run plan's muon_dtype), `shard` its orthogonalisation
    split over the ranks of the default process group (under DDP).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer != "muon":
        return _adamw(params, cfg, fused)
    hidden = muon_params(model)
    ids = {id(p) for p in hidden}
    muon = Muon(hidden, lr=cfg.muon_lr, momentum=cfg.muon_momentum, nesterov=True,
                weight_decay=cfg.weight_decay * cfg.lr / cfg.muon_lr, ns_dtype=ns_dtype, shard=shard)
    return MuonAdamW(muon, _adamw([p for p in params if id(p) not in ids], cfg, fused))


def set_lr(optimizer: torch.optim.Optimizer | MuonAdamW, cfg: TrainConfig, multiplier: float) -> float:
    """Each group's peak LR (train.lr, or train.muon_lr for Muon's) times the schedule's `multiplier`.

    Returns AdamW's LR as set (what the step metrics report and the dashboard plots).
    """
    if isinstance(optimizer, MuonAdamW):
        parts = [(optimizer.adamw, cfg.lr), (optimizer.muon, cfg.muon_lr)]
    else:
        parts = [(optimizer, cfg.lr)]
    for opt, peak in parts:
        for group in opt.param_groups:
            group["lr"] = peak * multiplier
    return cfg.lr * multiplier
