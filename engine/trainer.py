"""The training loop: from a resolved RunConfig to a trained model, exactly resumable.

`Trainer(cfg, emit, control).run()` prepares the data, builds the model and
optimizer, and loops over optimizer steps. It talks to the outside world only
through events (engine.events) and the control object (engine.control), so
the dashboard and the headless CLI drive it the same way. Everything exact
resumption needs (weights, optimizer, scaler, RNG, loader position, counters)
is in each checkpoint; the LR is a pure function of the step.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from engine import events as ev
from engine.checkpoint import load_latest_checkpoint, save_checkpoint
from engine.config import RunConfig, load_preset, write_toml
from engine.control import TrainingControl
from engine.errors import ConfigError, DataError, FileError, UserError
from engine.evaluate import EvalInterrupted, eval_metrics, score_tokens
from engine.final_model import save_final_model
from engine.loader import TrainLoader
from engine.model import GPT
from engine.monitor import MemoryMonitor
from engine.optim import make_optimizer, set_lr
from engine.recorder import RunRecorder
from engine.requests import clear_request, take_request
from engine.run_folder import RunLock, check_data, claim_run, create_run, run_tokenizer
from engine.runtime import Runtime, all_gather, all_reduce_sum, resolve_runtime, rng_state, set_rng_state
from engine.schedule import lr_at
from engine.snapshots import checkpoint_path, prune_checkpoints


PAUSE_POLL_S = 0.5  # while paused: how often rank 0 looks for a request and the ranks vote


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


def _oom_cause(e: BaseException) -> BaseException | None:
    """The out-of-memory error `e` is or wraps (torch.compile re-raises it as its cause)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, torch.OutOfMemoryError):
            return e
        seen.add(id(e))
        e = getattr(e, "inner_exception", None) or e.__cause__ or e.__context__
    return None


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        emit: ev.EventSink = lambda _: None,
        control: TrainingControl | None = None,
        *,
        run_dir: Path | None = None,
        resume: bool = False,
        accept_data_change: bool = False,
    ) -> None:
        """`run_dir` is where a resumed run lives; a new run gets a fresh folder.

        A resume refuses data that changed since the run was trained unless
        `accept_data_change`; either way it keeps the run's own tokenizer.
        """
        self.cfg = cfg
        self.control = control or TrainingControl()
        self._emit_ui = emit
        self.emit: ev.EventSink = emit
        self.run_dir = run_dir
        self.resume = resume
        self.accept_data_change = accept_data_change
        self.step = 0
        self.last_checkpoint = ""
        self.lock: RunLock | None = None  # held by rank 0 while it writes the run folder
        self.bad_checkpoints: list[Path] = []  # found corrupt on resume: never counted as kept

    # ------------------------------------------------------------------ entry point

    def run(self) -> ev.Event:
        """Train until done, stopped or failed; returns the Finished or Failed event."""
        self.rt: Runtime | None = None
        self.monitor: MemoryMonitor | None = None
        try:
            self._setup()
            return self._loop()
        except NonFiniteLoss as e:
            return self._fail(str(e), "nan")
        except DataError as e:
            return self._fail(str(e), "data")
        except FileError as e:  # full disk, file-size limit, a file where a folder belongs
            return self._fail(str(e), "io")
        except UserError as e:
            return self._fail(str(e), "config")
        except Exception as e:
            oom = _oom_cause(e)  # an OOM inside torch.compile arrives wrapped (BackendCompilerFailed)
            if oom is not None:
                return self._fail(self._oom_message(oom), "oom")
            # any other crash still reports and keeps the checkpoints
            return self._fail(f"{type(e).__name__}: {e}", "error", traceback.format_exc())
        finally:
            if self.monitor is not None:
                self.monitor.stop()
            if self.rt is not None and self.rt.distributed:
                torch.distributed.destroy_process_group()
            if self.lock is not None:
                self.lock.release()

    def _fail(self, message: str, kind: str, tb: str = "") -> ev.Failed:
        if self.rt is not None and self.rt.distributed:
            message = f"[rank {self.rt.rank}] {message}"
        event = ev.Failed(message=message, step=self.step, kind=kind, checkpoint=self.last_checkpoint, traceback=tb)
        self.emit(event)
        return event

    def _oom_message(self, e: Exception) -> str:
        from engine.memory import oom_advice

        rt = self.rt
        if rt is not None and rt.device.type == "cuda":
            props = torch.cuda.get_device_properties(rt.device)
            return "CUDA out of memory. " + oom_advice(self.cfg, props.name, props.total_memory,
                                                       compiled=rt.compile, world_size=rt.world_size)
        import psutil

        compiled = rt.compile if rt is not None else None  # the path that ran, not the setting
        return f"out of memory ({e}). " + oom_advice(self.cfg, "this machine's RAM", psutil.virtual_memory().total,
                                                     device="cpu", compiled=compiled)

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        from engine.tokenizer import prepare_data

        cfg = self.cfg
        self.rt = rt = resolve_runtime(cfg.train)
        log = (lambda m: self.emit(ev.Log(m))) if rt.is_main else (lambda m: None)
        # Run-folder integrity: a resume locks the folder before touching it, and
        # tokenizes with the run's own tokenizer, on data it checks is unchanged.
        if self.resume and rt.is_main:
            self.lock = claim_run(self.run_dir, log)
        run_tok = run_tokenizer(self.run_dir) if self.resume else None
        if not rt.is_main:
            rt.wait_for_main()  # rank 0 trains the tokenizer and writes the token cache first
        self.data = prepare_data(cfg.data, log=log, tokenizer_file=run_tok)
        if self.resume and rt.is_main:
            check_data(self.run_dir, self.data.fingerprint, self.data.source, self.accept_data_change, log)
        if rt.is_main:
            rt.wait_for_main()
        cfg.model.vocab_size = self.data.vocab_size
        if len(self.data.train.ids) < cfg.model.max_seq_len + 1:
            raise DataError(f"the training split has only {len(self.data.train.ids)} tokens, fewer than "
                            f"one window of model.max_seq_len + 1 = {cfg.model.max_seq_len + 1}")
        if self.run_dir is None:
            self.run_dir = Path()
            if rt.is_main:  # created exclusively and locked, with run.toml, tokenizer and data.json
                self.run_dir, self.lock = create_run(cfg, self.data.name, self.data.tokenizer_path,
                                                     self.data.fingerprint, self.data.source)
            if rt.distributed:
                self.run_dir = Path(all_gather(str(self.run_dir), rt)[0])
        if rt.is_main:
            clear_request(self.run_dir)  # a request left in the folder was meant for an earlier process
        if self.resume and rt.is_main:
            write_toml(cfg, self.run_dir / "run.toml")
        if rt.is_main:
            self.emit = RunRecorder(self.run_dir, self._emit_ui)
            self.monitor = MemoryMonitor(self.emit, device=str(rt.device))
            self.monitor.start()
        else:  # other ranks stay quiet unless they fail
            self.emit = lambda e: self._emit_ui(e) if isinstance(e, ev.Failed) else None

        torch.manual_seed(cfg.train.seed + rt.rank)
        self.raw_model = GPT(cfg.model, grad_checkpointing=cfg.train.grad_checkpointing).to(rt.device)
        self.optimizer = make_optimizer(self.raw_model, cfg.train)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
        self.loader = TrainLoader(
            self.data.train.ids, seq_len=cfg.model.max_seq_len, batch_size=cfg.train.batch_size,
            grad_accum_steps=cfg.train.grad_accum_steps, seed=cfg.train.seed, rank=rt.rank,
            world_size=rt.world_size, device=str(rt.device),
        )
        if self.loader.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) is larger than the "
                              f"{self.loader.num_windows} windows of {cfg.model.max_seq_len} tokens in the training split")
        t = cfg.train
        self.total_steps = t.max_steps or t.epochs * self.loader.steps_per_epoch
        self.tokens_seen = 0
        self.best_val_loss = math.inf
        self.elapsed = 0.0
        resumed_from = ""
        if self.resume:
            resumed_from = self._restore()
        self.model: torch.nn.Module = self.raw_model
        self.ddp: Any = None
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Gradients are reduced in buckets as backward produces them; the
            # buckets alias the .grad tensors (no second copy of the gradients).
            self.model = self.ddp = DDP(self.raw_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                                        gradient_as_bucket_view=True)
        if rt.compile:
            # Compile the DDP wrapper, not the other way round: dynamo then splits
            # the graph at bucket boundaries so all-reduce overlaps the backward.
            # dynamic=False: every training batch has one shape, so one static graph.
            self.model = torch.compile(self.model, dynamic=False)
            self._compile_warmup()
        self.emit(ev.RunStarted(
            run_dir=str(self.run_dir), num_params=self.raw_model.num_params(), total_steps=self.total_steps,
            start_step=self.step, steps_per_epoch=self.loader.steps_per_epoch,
            tokens_per_step=t.batch_size * cfg.model.max_seq_len, device=rt.describe(), precision=rt.precision,
            world_size=rt.world_size, resumed_from=resumed_from, preset_params=self._preset_params(),
        ))

    def _compile_warmup(self) -> None:
        """Compile before the clock starts, so compilation is reported apart from training time.

        One throwaway forward/backward on a zero batch; gradients are dropped
        and the RNG restored, so the run's numbers are as without it.
        """
        rt = self.rt
        assert rt is not None
        saved = rng_state()
        # A real batch, not a fresh (B, T) tensor: inputs and targets are views of
        # one (B, T + 1) buffer, and dynamo guards on their strides; any other
        # layout would compile a second graph inside the timed window.
        x, y = self.loader.example_batch()
        start = time.perf_counter()
        self.model.train()
        sync = self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()
        with sync, rt.autocast():
            _, loss = self.model(x, y)
        with sync:
            loss.backward()
        loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        set_rng_state(saved)
        self.emit(ev.Log(f"torch.compile: compiled in {time.perf_counter() - start:.1f} s (not counted as training time)"))

    def _preset_params(self) -> dict[str, int]:
        from engine.config import ModelConfig, preset_names

        counts = {}
        for name in preset_names():
            m = ModelConfig(**load_preset(name)["model"], vocab_size=self.cfg.model.vocab_size)
            counts[name] = GPT.count_params(m)
        return counts

    def _restore(self) -> str:
        assert self.run_dir is not None and self.rt is not None
        path, state = load_latest_checkpoint(self.run_dir, map_location="cpu",
                                             warn=lambda m: self.emit(ev.Log(m, "warning")),
                                             skipped=self.bad_checkpoints)
        try:
            self.raw_model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ConfigError(f"{path} does not match the model in run.toml (was the model shape changed?): "
                              f"{str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state(state["loader"])
        counters = state["trainer"]
        self.step, self.tokens_seen = int(counters["step"]), int(counters["tokens_seen"])
        self.best_val_loss, self.elapsed = float(counters["best_val_loss"]), float(counters["elapsed_s"])
        rngs = state["rng"]
        if len(rngs) == self.rt.world_size:
            set_rng_state(rngs[self.rt.rank])
        else:  # a different number of ranks: a fresh but deterministic stream per rank
            torch.manual_seed(self.cfg.train.seed + 1000003 * self.step + self.rt.rank)
        self.last_checkpoint = str(path)
        return str(path)

    # ------------------------------------------------------------------ loop

    def _loop(self) -> ev.Event:
        cfg, rt, t = self.cfg, self.rt, self.cfg.train
        assert rt is not None
        self.model.train()
        window_loss = torch.zeros((), device=rt.device)
        window_steps, window_start = 0, time.perf_counter()
        grad_norm = torch.zeros((), device=rt.device)
        while self.step < self.total_steps:
            request = self._agreed_request()
            if request == "pause":
                request = self._pause()
            if request == "stop":
                return self._finish(stopped=True)
            lr = lr_at(self.step, lr=t.lr, warmup_steps=t.warmup_steps, total_steps=self.total_steps,
                       min_lr_ratio=t.min_lr_ratio)
            set_lr(self.optimizer, t, lr / t.lr)
            epoch = self.loader.epoch
            loss, grad_norm = self._train_step(self.loader.next_step())
            window_loss += loss
            window_steps += 1
            self.step += 1
            self.tokens_seen += t.batch_size * cfg.model.max_seq_len
            if self.step % t.log_interval == 0 or self.step == self.total_steps:
                # The only host sync of the step, and only on logging steps. The clock
                # is read after it: on CUDA the host runs ahead of the GPU, and a
                # reading before the sync would count work the GPU has not done yet.
                mean_loss = all_reduce_sum([window_loss.item()], rt)[0] / (window_steps * rt.world_size)
                now = time.perf_counter()
                dt = now - window_start
                self.elapsed += dt
                if not math.isfinite(mean_loss):
                    raise NonFiniteLoss(f"training loss is {mean_loss} at step {self.step}; "
                                             f"try a lower train.lr (now {t.lr}) or fp32/bf16 precision")
                self.emit(ev.StepMetrics(
                    step=self.step, total_steps=self.total_steps, epoch=epoch, loss=mean_loss, lr=lr,
                    grad_norm=float(grad_norm), tokens_per_s=window_steps * t.batch_size * cfg.model.max_seq_len / dt,
                    step_time_s=dt / window_steps, elapsed_s=self.elapsed, tokens_seen=self.tokens_seen,
                ))
                window_loss.zero_()
                window_steps = 0
                window_start = now
            evaluate = bool(t.eval_interval) and self.step % t.eval_interval == 0 and self.step < self.total_steps
            save = bool(t.save_interval) and self.step % t.save_interval == 0
            if evaluate or save:
                # Evaluation and checkpoints are not training time: stop the window's
                # clock once the queued training work is done, restart it after.
                rt.synchronize()
                paused_at = time.perf_counter()
                try:
                    best = self._evaluate("valid", t.eval_batches).best if evaluate else False
                except EvalInterrupted:  # a stop request does not wait for the evaluation
                    return self._finish(stopped=True)
                if save or best:
                    self._save("interval" if not best else "best", best=best)
                window_start += time.perf_counter() - paused_at
        return self._finish(stopped=False)

    def _agreed_request(self) -> str | None:
        """"stop", "pause" or None, the same on every rank.

        Requests come from this process's control (dashboard keys, signals) and,
        at logging steps, from the run folder's request file (`tui-lm pause RUN`
        from another shell), which rank 0 reads. Ranks must agree, or the others
        would hang in the next all-reduce: under DDP the vote is a collective, so
        it runs on logging steps only (one small sync per log interval).
        """
        rt = self.rt
        assert rt is not None
        at_log_step = self.step % self.cfg.train.log_interval == 0
        if rt.distributed and not at_log_step:
            return None
        if at_log_step:
            self._take_request()
        return self._vote()

    def _take_request(self) -> None:
        """Rank 0 applies a request file from another process to its control."""
        if self.rt is None or not self.rt.is_main or self.run_dir is None:
            return
        action = take_request(self.run_dir)
        if action is not None:
            self.emit(ev.Log(f"{action} requested from outside at step {self.step}"))
            {"pause": self.control.pause, "resume": self.control.resume, "stop": self.control.stop}[action]()

    def _vote(self) -> str | None:
        rt = self.rt
        assert rt is not None
        stop, pause = float(self.control.should_stop), float(self.control.should_pause)
        if rt.distributed:
            stop, pause = all_reduce_sum([stop, pause], rt)
        return "stop" if stop else "pause" if pause else None

    def _train_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        rt, t = self.rt, self.cfg.train
        assert rt is not None
        total = torch.zeros((), device=rt.device)
        for i, (x, y) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            # DDP all-reduces gradients only on the micro-step that steps the optimizer.
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with rt.autocast():
                    # Only the loss: holding the (tokens x vocab) logits through
                    # backward would cost as much memory as the log-probs.
                    loss = self.model(x, y)[1]
                loss = loss / len(micro_batches)
                self.scaler.scale(loss).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        clip = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    # ------------------------------------------------------------------ evaluation, checkpoints, end

    def _evaluate(self, split_name: str, max_batches: int) -> ev.EvalResult:
        rt = self.rt
        assert rt is not None
        split = getattr(self.data, split_name)
        nll, count = score_tokens(
            self.raw_model, split.ids, seq_len=self.cfg.model.max_seq_len,
            batch_size=max(1, self.cfg.train.batch_size // self.cfg.train.grad_accum_steps // rt.world_size),
            device=rt.device, max_batches=max_batches, autocast=rt.autocast(), rank=rt.rank, world_size=rt.world_size,
            # Under DDP every rank must reach the all-reduce below, so a stop waits for the evaluation's end.
            should_stop=None if rt.distributed else (lambda: self.control.should_stop),
        )
        nll, count = all_reduce_sum([nll, float(count)], rt)
        m = eval_metrics(nll, int(count), len(split.ids) - 1, split.n_words, split.n_bytes)
        best = split_name == "valid" and m.loss < self.best_val_loss
        if best:
            self.best_val_loss = m.loss
        result = ev.EvalResult(step=self.step, split=split_name, loss=m.loss, perplexity=m.perplexity,
                               word_perplexity=m.word_perplexity, bits_per_byte=m.bits_per_byte,
                               tokens=m.tokens, partial=m.partial, best=best)
        self.emit(result)
        if split_name == "valid" and self.cfg.train.sample_tokens and rt.is_main:
            self._sample()
        return result

    def _sample(self) -> None:
        from engine.sampling import sample_text

        t = self.cfg.train
        text = sample_text(self.raw_model, self.data.tokenizer, t.sample_prompt, max_new_tokens=t.sample_tokens,
                           temperature=t.sample_temperature, top_k=t.sample_top_k or None, seed=t.seed, device=self.rt.device)
        self.emit(ev.SampleGenerated(step=self.step, prompt=t.sample_prompt, text=text))

    def _save(self, reason: str, best: bool = False) -> str:
        rt = self.rt
        assert rt is not None and self.run_dir is not None
        rngs = all_gather(rng_state(), rt)  # every rank's stream, so same-size resumes are exact
        path = checkpoint_path(self.run_dir, self.step)
        if rt.is_main:
            state: dict[str, Any] = {
                "model": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "rng": rngs,
                "loader": self.loader.state.to_dict(),
                "trainer": {"step": self.step, "tokens_seen": self.tokens_seen,
                            "best_val_loss": self.best_val_loss, "elapsed_s": self.elapsed},
                "config": self.cfg.to_dict(),
            }
            meta = {"step": self.step, "total_steps": self.total_steps, "epoch": self.loader.state.epoch,
                    "reason": reason, "best": best, "best_val_loss": self.best_val_loss,
                    "world_size": rt.world_size, "tokenizer_xxh3_128": self.data.tokenizer_hash}
            save_checkpoint(path, state, meta)
            prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints, bad=self.bad_checkpoints)
            self.emit(ev.CheckpointSaved(step=self.step, path=str(path), reason=reason))
        self.last_checkpoint = str(path)
        return str(path)

    def _pause(self) -> str | None:
        """Checkpoint, then wait for resume (returns None) or stop (returns "stop"), on every rank."""
        path = self._save("pause")
        self.emit(ev.Paused(step=self.step, checkpoint=path))
        while True:
            self._take_request()
            request = self._vote()
            if request != "pause":
                break
            if self.rt is not None and self.rt.distributed:
                time.sleep(PAUSE_POLL_S)  # every rank, so they meet in the vote rather than spin in it
            else:
                self.control.wait_for_change(PAUSE_POLL_S)  # a dashboard key wakes it at once
        if request is None:
            self.emit(ev.Resumed(step=self.step))
        return request

    def _finish(self, stopped: bool) -> ev.Finished:
        rt = self.rt
        assert rt is not None and self.run_dir is not None
        if stopped:
            if not self.last_checkpoint.endswith(checkpoint_path(self.run_dir, self.step).name):
                self._save("stop")
            event = ev.Finished(step=self.step, run_dir=str(self.run_dir), stopped=True,
                                best_val_loss=self.best_val_loss)
            self.emit(event)
            return event
        # The trained weights are on disk before the (long, interruptible) final evaluation.
        if not self.last_checkpoint.endswith(checkpoint_path(self.run_dir, self.step).name):
            self._save("final")
        model_dir = ""
        if rt.is_main:
            model_dir = str(save_final_model(self.run_dir, self.raw_model, self.cfg, self.run_dir / "tokenizer.json"))
        try:
            self._evaluate("valid", 0)
            test = self._evaluate("test", 0) if self.data.test is not None else None
        except EvalInterrupted:
            self.emit(ev.Log(f"final evaluation interrupted; the trained model is saved in {model_dir}, and "
                             "resuming the run runs the evaluation again", "warning"))
            event = ev.Finished(step=self.step, run_dir=str(self.run_dir), stopped=True, model_dir=model_dir,
                                best_val_loss=self.best_val_loss)
            self.emit(event)
            return event
        event = ev.Finished(step=self.step, run_dir=str(self.run_dir), stopped=False, model_dir=model_dir,
                            best_val_loss=self.best_val_loss, test=test)
        self.emit(event)
        return event

