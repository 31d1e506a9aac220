"""Everything a training loop needs, built once: data, plan, run folder, model, optimizer, loader, restore.

`build_state(...)` returns a `RunState` with every part built (nothing
optional), so engine.train.trainer's loop reads top to bottom without checks. The
numbers come from the run plan (engine.config.plan), made here once the tokenizer's
real vocabulary and the training split's length are known. Resources that
must be released whatever happens next (the memory monitor) are registered on
the caller's ExitStack as soon as they exist.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from engine import events as ev
from engine.config.costs import count_params
from engine.config.loading import load_preset, preset_names, write_toml
from engine.config.plan import RunPlan, plan_run
from engine.config.run_config import ModelConfig, RunConfig
from engine.data.loader import TrainLoader
from engine.errors import ConfigError
from engine.memory.monitor import MemoryMonitor
from engine.model.gpt import GPT
from engine.model.kernels import compile_options
from engine.optim.groups import make_optimizer
from engine.runs.checkpoints import CONFIG, LOADER, MODEL, OPTIMIZER, RNG, SCALER, TRAINER, load_latest_checkpoint
from engine.runs.folder import check_data, claim_run, create_run, run_tokenizer
from engine.runs.layout import RUN_CONFIG
from engine.runs.recorder import RunRecorder
from engine.runs.requests import clear_request
from engine.train.launch import check_memory_is_sane
from engine.train.runtime import DTYPES, Runtime, all_gather, autocast, rng_state, set_rng_state

# Resuming on a different number of ranks: the saved RNG streams do not map
# onto the new ranks, so each rank is seeded from (seed, step, rank). A prime
# far above any rank count keeps the (step, rank) pairs from colliding.
RESEED_STRIDE = 1000003


class Relay:
    """An event sink whose destination changes once the run folder's recorder exists."""

    def __init__(self, target: ev.EventSink) -> None:
        self.target = target

    def __call__(self, event: ev.Event) -> None:
        self.target(event)


@dataclass
class Progress:
    """The loop's counters; all but last_checkpoint saved in every checkpoint (engine.runs.checkpoints.TRAINER)."""

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    elapsed_s: float = 0.0  # training wall time; compilation, evaluation and checkpoints excluded
    last_checkpoint: str = ""


@dataclass
class RunState:
    rt: Runtime
    plan: RunPlan
    cfg: RunConfig  # plan.config: the caller's settings with the real vocabulary (what run.toml holds)
    data: Any  # engine.data.token_cache.PreparedData
    run_dir: Path
    raw_model: GPT
    model: torch.nn.Module  # raw_model, DDP-wrapped and/or compiled
    ddp: Any  # the DistributedDataParallel wrapper, None on one process
    optimizer: Any  # torch.optim.AdamW, or engine.optim.groups.MuonAdamW
    scaler: torch.amp.GradScaler
    loader: TrainLoader
    progress: Progress
    resumed_from: str  # checkpoint path, "" for a new run
    compile_s: float  # compilation time before the first step
    bad_checkpoints: list[Path]  # found corrupt on resume: never counted as kept when pruning

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.rt.device, self.plan.precision)


def build_state(cfg: RunConfig, rt: Runtime, emit: Relay, progress: Progress, resources: contextlib.ExitStack,
                *, run_dir: Path | None, changes: dict[str, tuple[Any, Any]] | None = None,
                accept_data_change: bool = False, should_stop: Callable[[], bool] | None = None) -> RunState:
    """Prepare the data, plan, create or reopen the run folder, build and (with `run_dir`) restore.

    A resume locks the folder before touching it, tokenizes with the run's own
    tokenizer and refuses data that changed since (unless `accept_data_change`).
    A new run's folder is created exclusively and locked, with run.toml, its
    tokenizer and data.json (engine.runs.folder). Locks are released by `resources`.
    """
    from engine.data.token_cache import prepare_data

    ui = emit.target
    log = (lambda m: emit(ev.Log(m))) if rt.is_main else (lambda m: None)
    resuming = run_dir is not None
    if run_dir is not None and rt.is_main:
        resources.callback(claim_run(run_dir, log).release)
    if not rt.is_main:
        rt.slow_barrier()  # rank 0 trains the tokenizer and writes the token cache first
    # should_stop: a stop during the download or tokenizing raises engine.control.Interrupted.
    data = prepare_data(cfg.data, log=log, tokenizer_file=run_tokenizer(run_dir) if run_dir is not None else None,
                        should_stop=should_stop)
    if run_dir is not None and rt.is_main:
        check_data(run_dir, data.fingerprint, data.source, accept_data_change, log)
    if rt.is_main:
        rt.slow_barrier()  # the others prepare now, from rank 0's cache
    # ...or tokenize again, on a node without the shared cache: every rank waits
    # for the slowest here, not in the next collective under its default timeout.
    rt.slow_barrier()
    plan = plan_run(cfg, world_size=rt.world_size, device=rt.info, vocab_size=data.vocab_size,
                    train_tokens=len(data.train.ids))
    if plan.errors:
        raise ConfigError(plan.errors[0])
    check_memory_is_sane(plan.config)
    resolved = plan.config
    if run_dir is None:
        run_dir = Path()
        if rt.is_main:  # created exclusively and locked, with run.toml, tokenizer and data.json
            run_dir, lock = create_run(resolved, data.name, data.tokenizer_path, data.fingerprint, data.source)
            resources.callback(lock.release)
        if rt.distributed:
            run_dir = Path(all_gather(str(run_dir), rt)[0])
    if rt.is_main:
        clear_request(run_dir)  # a request left in the folder was meant for an earlier process
        emit.target = RunRecorder(run_dir, ui)
        monitor = MemoryMonitor(emit, device=str(rt.device))
        monitor.start()
        resources.callback(monitor.stop)
    else:  # other ranks stay quiet unless they fail
        emit.target = lambda e: ui(e) if isinstance(e, ev.Failed) else None
    for warning in plan.warnings:
        emit(ev.Log(warning, "warning"))

    t = resolved.train
    torch.manual_seed(t.seed + rt.rank)  # ranks differ in dropout masks; rank 0's weights are broadcast by DDP
    raw_model = GPT(resolved.model, grad_checkpointing=t.grad_checkpointing, loss_chunk=t.loss_chunk,
                    levers=plan.levers).to(rt.device)
    optimizer = make_optimizer(raw_model, t, ns_dtype=DTYPES[plan.muon_dtype], shard=rt.distributed)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=plan.precision == "fp16")
    loader = TrainLoader(data.train.ids, plan, rank=rt.rank, device=str(rt.device))
    resumed_from, bad_checkpoints = "", []
    if resuming:
        resumed_from = _restore(run_dir, rt, t.seed, raw_model, optimizer, scaler, loader, progress, emit,
                                bad_checkpoints)
        # Only now, with the checkpoint known to fit the settings, does run.toml
        # take the flags given with --resume (the resume policy's safe changes).
        # The run keeps its own tokenizer: it is never rewritten.
        if rt.is_main:
            write_toml(resolved, run_dir / RUN_CONFIG)
        if changes:
            _announce_changes(changes, progress.step, plan, emit)

    ddp = wrap_ddp(raw_model, rt, emit) if rt.distributed else None
    model: torch.nn.Module = ddp or raw_model
    state = RunState(rt, plan, resolved, data, run_dir, raw_model, model, ddp, optimizer, scaler, loader, progress,
                     resumed_from, 0.0, bad_checkpoints)
    if plan.compile:
        # A session that trains many runs (the dashboard) would otherwise pile
        # each run's graphs onto the one GPT.forward code object, and past
        # dynamo's recompile limit (8) run eagerly without a word.
        torch._dynamo.reset()
        # The order of DDP and compile does not decide the graph split: dynamo's
        # DDPOptimizer splits any graph it compiles inside a DDP forward at the
        # bucket boundaries (DistributedDataParallel._get_active_ddp_module(), read
        # in torch/_dynamo/convert_frame.py), so all-reduce overlaps the backward
        # either way, and DDP's own forward stays eager (_inside_ddp_forward is
        # dynamo-disabled). Compiling the wrapper keeps one object for the loop to
        # call while no_sync() stays on the wrapper.
        # dynamic=False: every training batch has one shape, so one static graph.
        state.model = torch.compile(model, dynamic=False, **compile_options(plan.levers.compile_mode))
        state.compile_s = _compile_warmup(state)
    rt.reset_peak_memory()  # the memory "peak" covers training from here, not the warm-up or an earlier run
    return state


def wrap_ddp(raw_model: GPT, rt: Runtime, emit: ev.EventSink) -> torch.nn.Module:
    """The DistributedDataParallel wrapper, its .grad tensors views of the all-reduce buckets from the first
    step, announced in the run's log.

    Gradients are reduced in buckets as backward produces them; with
    gradient_as_bucket_view the buckets are the .grad tensors (no second copy
    of the gradients). DDP makes only gradients that exist views of its
    buckets, so they are made before it; zero_grad keeps the alias.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    # The only buffers are the rotary tables, computed alike on every rank: DDP's
    # broadcast of them before every forward is pure overhead. torch 2.13 renamed
    # the switch (broadcast_buffers is deprecated there).
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    for p in raw_model.parameters():
        p.grad = torch.zeros_like(p)
    ddp = DDP(raw_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
              gradient_as_bucket_view=True, **no_buffer_sync)
    backend = torch.distributed.get_backend()
    forced = " (forced by TUI_LM_FORCE_DDP=1)" if rt.world_size == 1 else ""
    if rt.is_main:
        emit(ev.Log(f"DistributedDataParallel over {rt.world_size} rank(s), {backend}{forced}"))
    return ddp


def zero_grad(optimizer: Any, ddp: Any) -> None:
    """Drop the step's gradients: freed on one process, zeroed in place under DDP.

    DDP's .grad tensors are views of its buckets, which live for the whole run;
    setting them to None breaks that alias (torch/nn/parallel/distributed.py,
    gradient_as_bucket_view), and the next no_sync micro-steps accumulate into
    fresh tensors beside the buckets: every gradient twice until the synced
    micro-step copies them back (4 bytes per parameter above the estimate).
    """
    optimizer.zero_grad(set_to_none=ddp is None)


def _announce_changes(changes: dict[str, tuple[Any, Any]], step: int, plan: RunPlan, emit: ev.EventSink) -> None:
    said = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
    note = ""
    if {"train.max_steps", "train.epochs"} & set(changes):
        note = (f"; the run now has {plan.total_steps:,} steps, so the cosine learning-rate schedule changes "
                f"from step {step:,} on (the run is no longer bit-identical to one started with these settings)")
    emit(ev.Log(f"resumed with changed settings from step {step:,}: {said}{note}", "warning"))
    emit(ev.SettingsChanged(step=step, changes={k: [old, new] for k, (old, new) in changes.items()}))


def checkpoint_state(s: RunState, rngs: list[Any]) -> dict[str, Any]:
    """Every part of a checkpoint (engine.runs.checkpoints.RESUME_PARTS) from the run; `rngs`: every rank's.

    `_restore` puts each back.
    """
    return {MODEL.key: s.raw_model.state_dict(), OPTIMIZER.key: s.optimizer.state_dict(),
            SCALER.key: s.scaler.state_dict(),  # {} unless fp16
            RNG.key: rngs, LOADER.key: LOADER.take(s.loader.state), TRAINER.key: TRAINER.take(s.progress),
            CONFIG.key: s.cfg.to_dict()}


def _restore(run_dir: Path, rt: Runtime, seed: int, model: GPT, optimizer: Any, scaler: torch.amp.GradScaler,
             loader: TrainLoader, progress: Progress, emit: ev.EventSink, bad: list[Path]) -> str:
    """Load the newest good checkpoint into everything (the corrupt ones it skips go to `bad`); returns its path.

    Its config part is not read back: run.toml and the resume policy decide the settings.
    """
    path, state = load_latest_checkpoint(run_dir, map_location="cpu", warn=lambda m: emit(ev.Log(m, "warning")),
                                         skipped=bad)
    try:
        model.load_state_dict(state[MODEL.key])
    except RuntimeError as e:
        raise ConfigError(f"{path} does not match the model in run.toml (was the model shape changed?): "
                          f"{str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(state[OPTIMIZER.key])
    if state[SCALER.key]:  # {} from a run without fp16 (precision auto on another device): a fresh scaler
        scaler.load_state_dict(state[SCALER.key])
    LOADER.put(loader.state, state[LOADER.key])
    TRAINER.put(progress, state[TRAINER.key])
    rngs = state[RNG.key]
    if len(rngs) == rt.world_size:
        set_rng_state(rngs[rt.rank])
    else:
        torch.manual_seed(seed + RESEED_STRIDE * progress.step + rt.rank)
    progress.last_checkpoint = str(path)
    return str(path)


def _compile_warmup(s: RunState) -> float:
    """Compile before the clock starts, so compilation is reported apart from training time.

    One throwaway forward/backward on a real batch; gradients are dropped and
    the RNG restored, so the run's numbers are as without it. Returns seconds.
    """
    saved = rng_state()
    # A real batch, not a fresh (B, T) tensor: inputs and targets are views of
    # one (B, T + 1) buffer, and dynamo guards on their strides; any other
    # layout would compile a second graph inside the timed window.
    x, y = s.loader.example_batch()
    start = time.perf_counter()
    s.model.train()
    # One no_sync context around forward and backward: it is a generator-based
    # context manager, which cannot be entered twice.
    with s.ddp.no_sync() if s.ddp is not None else contextlib.nullcontext():
        with s.autocast():
            _, loss = s.model(x, y)
        loss.backward()
    loss.item()
    zero_grad(s.optimizer, s.ddp)
    set_rng_state(saved)
    return time.perf_counter() - start


def preset_params(vocab_size: int) -> dict[str, int]:
    """Each preset's parameter count at this vocabulary (shown beside the run's own)."""
    return {name: count_params(ModelConfig(**load_preset(name)["model"], vocab_size=vocab_size))
            for name in preset_names()}
