"""What to change when a run does not fit: the fixes the estimator can vouch for, and the OOM advice.

Pure arithmetic on engine.memory.estimate's estimate (no torch). One search serves
both faces: the setup screen offers each fix on a key (F6-F10), and a run
that ran out of memory names the same fixes in its failure message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config.plan import DeviceInfo, RunPlan, plan_run, replan, with_train
from engine.config.run_config import RunConfig
from engine.memory.estimate import TIGHT, estimate_memory, format_bytes, max_batch_size

# The chunk a fix proposes: large enough that each chunk's matmul still fills a GPU, small enough that
# its (chunk x vocab) logits are a fraction of a typical micro-batch's.
SUGGESTED_LOSS_CHUNK = 4096


@dataclass(frozen=True)
class MemoryFix:
    """One change of train settings and the estimate with it applied."""

    changes: dict[str, Any]  # {"batch_size": 24}: train settings
    total_bytes: int
    largest_batch: int  # the largest batch_size that fits with the change (0: none)


def memory_fixes(cfg: RunConfig, capacity: int, plan: RunPlan) -> list[MemoryFix]:
    """Changes that lower the estimate towards `capacity`, most direct first.

    The largest batch that fits; the same batch through more gradient
    accumulation (the training recipe is kept, one forward holds less); the
    loss computed in chunks (train.loss_chunk: no (tokens x vocab) logits,
    nothing recomputed); checkpointing; half precision on a GPU (bf16 where
    the card does it natively, else fp16 with loss scaling).
    """
    t = cfg.train

    def fix(**train: Any) -> MemoryFix:
        trial = with_train(cfg, **train)
        trial_plan = replan(plan, trial)
        return MemoryFix(train, estimate_memory(trial, plan=trial_plan).total_bytes,
                         max_batch_size(trial, capacity, plan=trial_plan))

    found = []
    largest = max_batch_size(cfg, capacity, plan=plan)
    if 0 < largest < t.batch_size:
        found.append(fix(batch_size=largest))
    for accum in range(max(1, t.grad_accum_steps) + 1, t.batch_size + 1):
        if t.batch_size % accum == 0 and (accumulated := fix(grad_accum_steps=accum)).total_bytes <= capacity:
            found.append(accumulated)
            break
    if not t.loss_chunk:
        found.append(fix(loss_chunk=SUGGESTED_LOSS_CHUNK))
    if not t.grad_checkpointing:
        found.append(fix(grad_checkpointing=True))
    if plan.precision == "fp32" and plan.device.type == "cuda":
        found.append(fix(precision="bf16" if plan.device.bf16_native else "fp16"))
    return found


def oom_advice(cfg: RunConfig, gpu_name: str, gpu_bytes: int, *, plan: RunPlan | None = None) -> str:
    """One paragraph: the estimate, the card, and the changes that make it fit (memory_fixes).

    `plan` is the run's (its device, ranks, precision, compile and
    vocabulary); without one, a generic GPU's.
    """
    plan = plan or plan_run(cfg, device=DeviceInfo.gpu(), vocab_size=cfg.model.vocab_size)
    est = estimate_memory(cfg, plan=plan)
    t, m = cfg.train, cfg.model
    big = sorted(((v, k) for k, v in est.rows.items() if v), reverse=True)[:2]
    parts = ", ".join(f"{k} {format_bytes(v)}" for v, k in big)
    head = (f"The estimated peak of this run is {format_bytes(est.total_bytes)} (largest: {parts}) "
            f"against {format_bytes(gpu_bytes)} on {gpu_name}.")
    if est.total_bytes <= TIGHT * gpu_bytes:
        return head + (" The estimate fits with room to spare, so another process may be holding GPU "
                       "memory (check nvidia-smi), or torch.compile's first steps needed extra.")
    best = max_batch_size(cfg, gpu_bytes, plan=plan)
    tips: list[str] = []
    for f in memory_fixes(cfg, gpu_bytes, plan):
        (name, value), = f.changes.items()
        if name == "batch_size":
            tips.append(f"batch_size {value} fits")
        elif name == "grad_accum_steps":
            tips.append(f"or keep batch_size {t.batch_size} with grad_accum_steps {value} "
                        f"(micro-batch {t.batch_size // value})")
        elif f.largest_batch > best:
            setting = {"grad_checkpointing": "turn on grad checkpointing (train.grad_checkpointing = true",
                       "loss_chunk": f"compute the loss in chunks (train.loss_chunk = {value}",
                       }.get(name, f"use {value} (train.precision = \"{value}\"")
            tips.append(f"{setting}; up to batch_size {f.largest_batch} then fits)")
    if not tips:
        tips.append(f"even batch_size {max(1, t.grad_accum_steps)} does not fit; reduce model.max_seq_len "
                    f"({m.max_seq_len}), the model size or the vocabulary")
    return head + " To fit: " + "; ".join(tips) + "."
