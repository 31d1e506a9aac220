"""The training loop: from a RunConfig to a trained model, exactly resumable.

`Trainer(cfg, emit, control).run()` starts the runtime, builds everything
(engine.train.build: data, the run plan, the run folder, model, optimizer,
loader, a restored checkpoint), announces the plan in `RunStarted`, and loops
over optimizer steps. It talks to the outside world only through events
(engine.events) and the control object (engine.control), so the dashboard and
the headless CLI drive it the same way. Everything exact resumption needs is
in each checkpoint; the LR is a pure function of the step (the plan's schedule).
The caller's config is never modified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from engine import events as ev
from engine.artifacts.final_model import save_final_model
from engine.config.costs import count_params
from engine.config.run_config import RunConfig
from engine.control import Interrupted, TrainingControl
from engine.errors import DataError, FileError, RunLocked, UserError
from engine.memory.estimate import MemoryEstimate, estimate_memory
from engine.memory.gpus import peak_flops_of
from engine.model.losses import backward_scale
from engine.optim.groups import set_lr
from engine.runs.checkpoints import checkpoint_path, prune_checkpoints, save_checkpoint
from engine.runs.layout import RUN_CONFIG
from engine.speed.model import scored_windows
from engine.train.budget import BudgetWatch, fix_total
from engine.train.build import Progress, Relay, RunState, build_state, checkpoint_state, preset_params, zero_grad
from engine.train.evaluate import (EvalInterrupted, EvalProgressReporter, eval_metrics, eval_windows,
                                   final_eval_notice, score_tokens)
from engine.train.runtime import Runtime, all_gather, all_reduce_sum, oom_cause, oom_message, resolve_runtime, rng_state
from engine.train.steering import EVALUATING, FINAL_EVALUATION, PREPARING, TRAINING, Detached, Steering


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class LossWindow:
    """The summed training loss of the steps since the last logging step, kept on the device (no sync)."""

    total: torch.Tensor
    steps: int = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.steps += 1

    def reset(self) -> None:
        self.total.zero_()
        self.steps = 0


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        emit: ev.EventSink = lambda _: None,
        control: TrainingControl | None = None,
        *,
        run_dir: Path | None = None,
        resume: bool = False,
        changes: dict[str, tuple[Any, Any]] | None = None,
        accept_data_change: bool = False,
    ) -> None:
        """`run_dir` + `resume`: continue that run; `changes`: the settings the resume changed (engine.train.launch).

        A resume refuses data that changed since the run was trained unless
        `accept_data_change`; either way it keeps the run's own tokenizer.
        """
        self.cfg = cfg
        self.control = control or TrainingControl()
        self.emit = Relay(emit)  # points at the run folder's recorder once there is one
        self.run_dir = run_dir if resume else None
        self.changes = changes or {}
        self.accept_data_change = accept_data_change
        self.progress = Progress()
        self.rt: Runtime | None = None  # for failure messages only; the loop reads self.s.rt
        self.s: RunState  # set by run(), fully built, before the loop starts
        self.estimate: MemoryEstimate  # set by _announce(), before the loop starts
        self.window: LossWindow  # set by _loop(): the losses not yet checked for NaN
        self.steering: Steering  # set by _loop(): pause / stop requests (engine.train.steering)
        self.phase = PREPARING  # what a stop interrupts now (engine.train.steering.stop_notice)
        self.final: Detached | None = None  # the final evaluation, once it runs

    # ------------------------------------------------------------------ entry point

    def run(self) -> ev.Event:
        """Train until done, stopped or failed; returns the Finished or Failed event."""
        with contextlib.ExitStack() as resources:
            try:
                self.rt = resolve_runtime(self.cfg.train)
                if self.rt.distributed:
                    resources.callback(torch.distributed.destroy_process_group)
                self.s = build_state(self.cfg, self.rt, self.emit, self.progress, resources,
                                     run_dir=self.run_dir, changes=self.changes,
                                     accept_data_change=self.accept_data_change,
                                     # A stop during data preparation returns at once.
                                     should_stop=self._stop_check())
                self._announce()
                return self._loop()
            except Interrupted:  # stopped while the data was prepared: no run folder touched, nothing saved
                event = ev.Finished(step=self.progress.step, run_dir="", stopped=True)
                self.emit(event)
                return event
            except NonFiniteLoss as e:
                return self._fail(str(e), "nan")
            except DataError as e:
                return self._fail(str(e), "data")
            except FileError as e:  # full disk, file-size limit, a file where a folder belongs
                return self._fail(str(e), "io")
            except UserError as e:  # RunLocked: another process took the run folder first
                return self._fail(str(e), "busy" if isinstance(e, RunLocked) else "config")
            except Exception as e:
                oom = oom_cause(e)  # an OOM inside torch.compile arrives wrapped (BackendCompilerFailed)
                if oom is not None:
                    # The path that runs (device, compile, micro-batch) once the plan exists.
                    built = hasattr(self, "s")
                    return self._fail(oom_message(oom, self.rt, self.s.cfg if built else self.cfg,
                                                  self.s.plan if built else None), "oom")
                # any other crash still reports and keeps the checkpoints
                return self._fail(f"{type(e).__name__}: {e}", "error", traceback.format_exc())

    def _fail(self, message: str, kind: str, tb: str = "") -> ev.Failed:
        if self.rt is not None and self.rt.distributed:
            message = f"[rank {self.rt.rank}] {message}"
        p = self.progress
        event = ev.Failed(message=message, step=p.step, kind=kind, checkpoint=p.last_checkpoint, traceback=tb)
        self.emit(event)
        return event

    def _stop_check(self) -> Callable[[], bool] | None:
        """What data preparation and evaluation poll to end early on a stop. None under DDP: every rank
        must reach the collectives that follow (rank 0's tokens, the evaluation's all-reduce)."""
        return None if self.rt.distributed else (lambda: self.control.should_stop)

    def _announce(self) -> None:
        s, plan = self.s, self.s.plan
        # What the run is expected to hold; its evaluation batch is sized by it.
        self.estimate = estimate_memory(s.cfg, plan=plan)
        # MFU's denominator: every rank's peak at the precision the matmuls run in.
        card = s.rt.info.name if s.rt.device.type == "cuda" else ""  # "": the CPU
        peak = peak_flops_of(card, plan.precision, s.rt.tf32)
        self.peak_flops = peak * plan.world_size if peak else None
        if plan.compile:
            self.emit(ev.Log(f"torch.compile: compiled in {s.compile_s:.1f} s (not counted as training time)"))
        self.emit(ev.Log(f"speed levers: {plan.levers.describe()}"))
        if s.cfg.train.loss_chunk and plan.levers.fused_loss == "off":
            self.emit(ev.Log(f"loss computed in chunks of {s.cfg.train.loss_chunk:,} tokens (train.loss_chunk): "
                             f"no whole (tokens x vocab) logits"))
        self.emit(ev.RunStarted(
            run_dir=str(s.run_dir), num_params=count_params(plan.model), total_steps=plan.total_steps,
            start_step=self.progress.step, steps_per_epoch=plan.steps_per_epoch,
            tokens_per_step=plan.tokens_per_step, device=s.rt.describe(), precision=plan.precision,
            world_size=plan.world_size, resumed_from=s.resumed_from, preset_params=preset_params(plan.vocab_size),
            vocab_size=plan.vocab_size, micro_batch=plan.micro_batch, compiled=plan.compile,
            compile_s=s.compile_s, schedule=plan.schedule,
            estimated_bytes=self.estimate.total_bytes, levers=dataclasses.asdict(plan.levers),
        ))
        self.emit(ev.Log(final_eval_notice(plan, self.estimate, s.data, card)))

    # ------------------------------------------------------------------ loop

    def _loop(self) -> ev.Event:
        s, p, t = self.s, self.progress, self.s.cfg.train
        rt, plan = s.rt, s.plan
        s.model.train()
        window = self.window = LossWindow(torch.zeros((), device=rt.device))
        self.steering = Steering(self.control, rt, s.run_dir, t.log_interval, self.emit)
        self.phase = TRAINING
        window_start = time.perf_counter()
        budget = self._budget_watch()
        while p.step < plan.total_steps:
            request = self.steering.agreed(p.step)
            if request == "pause":
                # The pause (its checkpoint and the wait) is not training time: the
                # window's clock restarts where training does, as after evaluations.
                rt.synchronize()
                paused_at = time.perf_counter()
                request = self._pause()
                window_start += time.perf_counter() - paused_at
            if request == "stop":
                return self._finish(stopped=True)
            # Each group's own peak LR (AdamW's lr, Muon's muon_lr) times the schedule's multiplier.
            lr = set_lr(s.optimizer, t, plan.schedule.multiplier(p.step))
            epoch = s.loader.epoch
            loss, grad_norm = self._train_step(s.loader.next_step())
            window.add(loss)
            p.step += 1
            p.tokens_seen += plan.tokens_per_step
            if p.step % t.log_interval == 0 or p.step == plan.total_steps:
                # The only host sync of the step, and only on logging steps. The clock
                # is read after it: on CUDA the host runs ahead of the GPU, and a
                # reading before the sync would count work the GPU has not done yet.
                mean_loss = self._checked_loss()
                now = time.perf_counter()
                dt = now - window_start
                p.elapsed_s += dt
                tokens_per_s = window.steps * plan.tokens_per_step / dt
                self.emit(ev.StepMetrics(
                    step=p.step, total_steps=plan.total_steps, epoch=epoch, loss=mean_loss, lr=lr,
                    grad_norm=float(grad_norm), tokens_per_s=tokens_per_s,
                    step_time_s=dt / window.steps, elapsed_s=p.elapsed_s, tokens_seen=p.tokens_seen,
                    mfu=self.estimate.flops_per_token * tokens_per_s / self.peak_flops if self.peak_flops else None,
                ))
                window.reset()
                window_start = now
                fixed = budget.observe(p.step, p.elapsed_s) if budget is not None else None
                if fixed is not None:  # the time budget's total: from here on the run's length
                    s.cfg, s.plan = fix_total(s.cfg, plan, p.step, *fixed, self.emit,
                                              s.run_dir / RUN_CONFIG if rt.is_main else None)
                    plan = s.plan  # the watch stays: a later window may fix the total again
            evaluate = bool(t.eval_interval) and p.step % t.eval_interval == 0 and p.step < plan.total_steps
            save = bool(t.save_interval) and p.step % t.save_interval == 0
            if evaluate or save:
                # Evaluation and checkpoints are not training time: stop the window's
                # clock once the queued training work is done, restart it after.
                rt.synchronize()
                paused_at = time.perf_counter()
                # "Best" is decided by these periodic validations (the first
                # eval_batches batches, the same tokens every time), and a new best
                # writes a checkpoint that pruning keeps.
                try:
                    self.phase = EVALUATING if evaluate else TRAINING
                    best = self._evaluate("valid", t.eval_batches).best if evaluate else False
                except EvalInterrupted:  # a stop request does not wait for the evaluation
                    return self._finish(stopped=True)
                self.phase = TRAINING
                if save or best:
                    self._save("interval" if not best else "best", best=best)
                window_start += time.perf_counter() - paused_at
        return self._finish(stopped=False)

    def _budget_watch(self) -> BudgetWatch | None:
        """The time budget's watch while its total is not fixed yet (engine.train.budget)."""
        s = self.s
        if not s.cfg.train.time_budget or s.cfg.train.budget_steps:
            return None
        return BudgetWatch(s.cfg, s.plan, start_step=self.progress.step, spent_s=self.progress.elapsed_s,
                           valid_tokens=len(s.data.valid.ids), test_tokens=len(s.data.test.ids) if s.data.test else 0,
                           reduce=lambda xs: [x / s.rt.world_size for x in all_reduce_sum(xs, s.rt)])

    def _train_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.s, self.s.cfg.train
        total = torch.zeros((), device=s.rt.device)
        for i, (x, y) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            # DDP all-reduces gradients only on the micro-step that steps the optimizer.
            sync = s.ddp.no_sync() if s.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with s.autocast():
                    # Only the loss: holding the (tokens x vocab) logits through
                    # backward would cost as much memory as the log-probs.
                    loss = s.model(x, y, grad_scale=backward_scale(s.scaler, len(micro_batches), s.rt.device))[1]
                loss = loss / len(micro_batches)
                s.scaler.scale(loss).backward()
            total += loss.detach()
        s.scaler.unscale_(s.optimizer)
        clip = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(s.raw_model.parameters(), clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        zero_grad(s.optimizer, s.ddp)
        return total, grad_norm

    # ------------------------------------------------------------------ evaluation, checkpoints, end

    def _evaluate(self, split_name: str, max_batches: int, emit: ev.EventSink | None = None) -> ev.EvalResult:
        """`max_batches` (0 = the whole split): train.eval_batches' unit, batches of the training micro-batch."""
        s, p, emit = self.s, self.progress, emit or self.emit
        rt = s.rt
        split = getattr(s.data, split_name)
        micro, seq_len = s.plan.micro_batch, s.plan.seq_len
        windows = scored_windows(max_batches, micro, seq_len, len(split.ids))
        partial = windows < eval_windows(len(split.ids), seq_len)
        progress = EvalProgressReporter(emit, p.step, split_name, batches=-(-windows // micro),
                                        partial=partial) if rt.is_main else None
        nll, count = score_tokens(
            s.raw_model, split.ids, seq_len=seq_len, device=rt.device,
            batch_size=micro * self.estimate.eval_multiple,
            max_windows=windows, autocast=s.autocast(), rank=rt.rank, world_size=rt.world_size,
            progress=progress, loss_rows=micro,
            should_stop=self._stop_check(),
        )
        nll, count = all_reduce_sum([nll, float(count)], rt)
        m = eval_metrics(nll, int(count), len(split.ids) - 1, split.n_words, split.n_bytes)
        best = split_name == "valid" and m.loss < p.best_val_loss
        if best:
            p.best_val_loss = m.loss
        result = ev.EvalResult(step=p.step, split=split_name, loss=m.loss, perplexity=m.perplexity,
                               word_perplexity=m.word_perplexity, bits_per_byte=m.bits_per_byte,
                               tokens=m.tokens, partial=m.partial, best=best)
        emit(result)
        if split_name == "valid" and s.cfg.train.sample_tokens and rt.is_main:
            self._sample(emit)
        return result

    def _final_evaluation(self, emit: ev.EventSink) -> ev.EvalResult | None:
        """The valid and test splits, whole by default; train.final_eval_batches bounds (partial) or skips it."""
        limit = self.s.cfg.train.final_eval_batches
        if limit < 0:
            emit(ev.Log("final evaluation skipped (train.final_eval_batches = -1): "
                        "no final validation or test figures", "warning"))
            return None
        self._evaluate("valid", limit, emit)
        return self._evaluate("test", limit, emit) if self.s.data.test is not None else None

    def _sample(self, emit: ev.EventSink) -> None:
        from engine.model.sampling import sample_text

        s, t = self.s, self.s.cfg.train
        # Seeded with the run's seed at every evaluation, so samples differ only
        # because the model changed (and never disturb the training RNG).
        text = sample_text(s.raw_model, s.data.tokenizer, t.sample_prompt, max_new_tokens=t.sample_tokens,
                           temperature=t.sample_temperature, top_k=t.sample_top_k or None, seed=t.seed,
                           device=s.rt.device)
        emit(ev.SampleGenerated(step=self.progress.step, prompt=t.sample_prompt, text=text))

    def _checked_loss(self) -> float:
        """The mean training loss of the steps since the last logging step, over all ranks; NonFiniteLoss if
        it is NaN or infinite. Called by every rank at the same steps (it all-reduces): logging steps and saves."""
        s, w = self.s, self.window
        mean = all_reduce_sum([w.total.item()], s.rt)[0] / (w.steps * s.rt.world_size)
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"training loss is {mean} at step {self.progress.step}; "
                                f"try a lower train.lr (now {s.cfg.train.lr}) or fp32/bf16 precision")
        return mean

    def _save(self, reason: str, best: bool = False) -> str:
        s, p = self.s, self.progress
        if self.window.steps:  # steps since the last logging step: never checkpoint weights a NaN step made
            self._checked_loss()
        rngs = all_gather(rng_state(), s.rt)  # every rank's stream, so same-size resumes are exact
        path = checkpoint_path(s.run_dir, p.step)
        if s.rt.is_main:
            state = checkpoint_state(s, rngs)
            meta = {"step": p.step, "total_steps": s.plan.total_steps, "epoch": s.loader.state.epoch,
                    "reason": reason, "best": best, "best_val_loss": p.best_val_loss,
                    "world_size": s.rt.world_size, "tokenizer_xxh3_128": s.data.tokenizer_hash}
            save_checkpoint(path, state, meta)
            prune_checkpoints(s.run_dir, s.cfg.train.keep_checkpoints, bad=s.bad_checkpoints)
            self.emit(ev.CheckpointSaved(step=p.step, path=str(path), reason=reason))
        s.rt.slow_barrier()  # the other ranks wait out the write here, not in a collective with NCCL's timeout
        p.last_checkpoint = str(path)
        return str(path)

    def _pause(self) -> str | None:
        """Checkpoint, then wait for resume (returns None) or stop (returns "stop"), on every rank."""
        path = self._save("pause")
        self.emit(ev.Paused(step=self.progress.step, checkpoint=path))
        request = self.steering.wait_paused(self.progress.step)
        if request is None:
            self.emit(ev.Resumed(step=self.progress.step))
        return request

    def _finish(self, stopped: bool) -> ev.Finished:
        s, p = self.s, self.progress
        if stopped:
            # Step 0 of a new run has nothing worth a checkpoint: nothing was trained.
            if p.step > 0 and not p.last_checkpoint.endswith(checkpoint_path(s.run_dir, p.step).name):
                self._save("stop")
            event = ev.Finished(step=p.step, run_dir=str(s.run_dir), stopped=True, best_val_loss=p.best_val_loss)
            self.emit(event)
            return event
        # The trained weights are on disk before the (long, interruptible) final
        # evaluation, which scores the whole splits; it may lower best_val_loss.
        if not p.last_checkpoint.endswith(checkpoint_path(s.run_dir, p.step).name):
            self._save("final")
        model_dir = ""
        if s.rt.is_main:
            model_dir = str(save_final_model(s.run_dir, s.raw_model, s.cfg))
        s.rt.slow_barrier()
        self.phase = FINAL_EVALUATION
        # In a thread of its own, so a stop returns at once (nothing is left to save) rather than after
        # the batch being scored (tens of seconds on a CPU); the evaluation ends at its next batch.
        self.final = Detached(self.emit, self._stop_check())
        try:
            test, stopped = self.final.run(self._final_evaluation), False
        except (EvalInterrupted, Interrupted):
            self.emit(ev.Log(f"final evaluation interrupted; the trained model is saved in {model_dir}, and "
                             "resuming the run runs the evaluation again", "warning"))
            test, stopped = None, True
        event = ev.Finished(step=p.step, run_dir=str(s.run_dir), stopped=stopped, model_dir=model_dir,
                            best_val_loss=p.best_val_loss, test=test)
        self.emit(event)
        return event
