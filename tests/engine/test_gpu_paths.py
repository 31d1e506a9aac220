"""The CUDA-only paths, checked on the CPU: honest clock, one compiled graph, bf16 choice, OOM in compile.

Each test stands in for what a GPU would show: a fake clock whose time passes
only when the host waits for the device, dynamo's own graph counter with the
aot_eager backend, a monkeypatched torch.cuda reporting an old card's
compute capability, and a compiler backend that runs out of memory.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from engine import events as ev
from engine.config.plan import plan_run
from engine.config.run_config import RunConfig, TrainConfig
from engine.control import TrainingControl
from engine.memory.gpus import GPU_CATALOGUE, find_gpu
from engine.model.gpt import GPT
from engine.runs.checkpoints import list_checkpoints
from engine.train import runtime as runtime
from engine.train.trainer import Trainer
from tests.conftest import tiny_config

GiB = 1024**3


class DeviceClock:
    """perf_counter for the trainer: time moves only when the host waits for queued device work.

    On a GPU the host enqueues kernels and runs ahead; the work's time is spent
    at the next sync. Here every `.item()` (the loop's sync) costs `per_sync` s.
    """

    def __init__(self, per_sync: float) -> None:
        self.now = 0.0
        self.per_sync = per_sync

    def perf_counter(self) -> float:
        return self.now


def test_throughput_counts_the_time_spent_waiting_for_the_device(corpus: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = DeviceClock(per_sync=10.0)
    monkeypatch.setattr("engine.train.trainer.time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    real_item = torch.Tensor.item

    def item(self: torch.Tensor):
        if sys._getframe(1).f_code.co_filename.endswith("trainer.py"):  # the training loop's sync
            clock.now += clock.per_sync
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "item", item)
    seen: list[ev.Event] = []
    cfg = tiny_config(corpus, tmp_path, max_steps=4, log_interval=2, eval_interval=0)
    Trainer(cfg, seen.append).run()
    steps = [e for e in seen if isinstance(e, ev.StepMetrics)]
    assert [e.step for e in steps] == [2, 4]
    for e in steps:
        # the window's sync waited 10 s for its 2 steps: 5 s a step, not ~0
        assert e.step_time_s == pytest.approx(5.0)
        assert e.tokens_per_s == pytest.approx(4 * 16 / 5.0)
    assert steps[-1].elapsed_s == pytest.approx(20.0)


@pytest.mark.parametrize("loss_chunk", [0, 24])
def test_one_compiled_graph_over_warmup_training_and_evaluation(corpus: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                loss_chunk: int) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    seen: list[ev.Event] = []
    cfg = tiny_config(corpus, tmp_path, max_steps=6, eval_interval=3, compile="on", grad_accum_steps=2,
                      loss_chunk=loss_chunk)
    done = Trainer(cfg, seen.append).run()
    assert isinstance(done, ev.Finished) and not done.stopped
    assert sum(isinstance(e, ev.EvalResult) for e in seen) >= 2
    # The warm-up's graph serves every real step; a chunked loss runs eagerly after it.
    assert counters["stats"]["unique_graphs"] == 1
    breaks = [reason for reason in counters["graph_break"] if "chunked_linear_cross_entropy" in reason]
    assert len(breaks) == (loss_chunk > 0)
    assert any(isinstance(e, ev.Log) and "torch.compile" in e.message for e in seen)
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.compiled and started.compile_s > 0  # a typed field, so the bench needs no log parsing
    torch._dynamo.reset()


def test_out_of_memory_inside_compilation_is_reported_as_oom(corpus: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def backend(gm, example_inputs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    torch._dynamo.reset()
    seen: list[ev.Event] = []
    failed = Trainer(tiny_config(corpus, tmp_path, compile="on"), seen.append).run()
    torch._dynamo.reset()
    assert isinstance(failed, ev.Failed)
    assert failed.kind == "oom" and "out of memory" in failed.message
    assert "estimated peak" in failed.message  # the estimator's advice, not a compiler traceback
    assert failed.traceback == ""


class FakeCuda:
    """torch.cuda as seen on a machine with one card of the given compute capability."""

    def __init__(self, name: str, capability: tuple[int, int]) -> None:
        self.name, self.capability = name, capability

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(runtime, "_set_allocator_settings", lambda conf: None)  # no real allocator here
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: self.capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: self.name)
        # the emulation check torch's own is_bf16_supported() would pass on these cards
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize("name,capability,expected", [
    ("Tesla T4", (7, 5), "fp16"),
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
    ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16"),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
])
def test_auto_precision_follows_the_cards_compute_capability(name: str, capability: tuple[int, int],
                                                             expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(name, capability).patch(monkeypatch)
    monkeypatch.setattr(torch.version, "hip", None)
    rt = runtime.resolve_runtime(TrainConfig(device="cuda"))
    assert rt.info.capability == capability and rt.info.name == name
    # the run plan turns the device's capability into the precision
    assert plan_run(RunConfig(train=TrainConfig(device="cuda")), device=rt.info).precision == expected
    # the catalogue, which the memory estimate reads, says the same about the card
    assert find_gpu(name).bf16 == (expected == "bf16")


def test_explicit_bf16_on_a_card_that_only_emulates_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda("Tesla T4", (7, 5)).patch(monkeypatch)
    monkeypatch.setattr(torch.version, "hip", None)
    train = TrainConfig(device="cuda", precision="bf16")
    plan = plan_run(RunConfig(train=train), device=runtime.resolve_runtime(train).info)
    assert len(plan.errors) == 1 and re.search("emulated on Tesla T4.*7.5", plan.errors[0])


def test_torchrun_sets_each_ranks_device_before_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda("NVIDIA H100 80GB HBM3", (9, 0)).patch(monkeypatch)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", str(device))))
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group",
                        lambda backend, **kw: calls.append(("init", backend, str(kw.get("device_id")))))
    monkeypatch.setattr(runtime.dist, "new_group",
                        lambda backend, timeout: calls.append(("new_group", backend, timeout)) or "slow")
    rt = runtime.resolve_runtime(TrainConfig(device="auto", batch_size=4))
    assert calls[:2] == [("set_device", "cuda:1"), ("init", "nccl", "cuda:1")]
    # the wait for rank 0's data preparation has its own, long timeout
    assert calls[2] == ("new_group", "gloo", runtime.PREPARE_TIMEOUT)
    assert runtime.PREPARE_TIMEOUT.total_seconds() >= 3600
    assert rt.device == torch.device("cuda", 1) and rt.slow_group == "slow"


@pytest.mark.parametrize("name,memory,expected", [
    ("NVIDIA H100 NVL", 95830 * 1024**2, "H100 NVL 94GB"),
    ("NVIDIA H100 80GB HBM3", None, "H100 80GB"),
    ("NVIDIA H100 PCIe", 81559 * 1024**2, "H100 PCIe 80GB"),
    ("NVIDIA H800", 81559 * 1024**2, "H800 80GB"),
    ("NVIDIA GH200 480GB", 97871 * 1024**2, "GH200 96GB"),
    ("NVIDIA L40S", 46068 * 1024**2, "L40S 48GB"),
    ("NVIDIA GeForce RTX 5090", 32607 * 1024**2, "RTX 5090 32GB"),
    ("NVIDIA H200", 143771 * 1024**2, "H200 141GB"),
])
def test_common_cards_have_a_peak_for_mfu(name: str, memory: int | None, expected: str) -> None:
    gpu = find_gpu(name, memory)
    assert gpu.name == expected and gpu.peak_bf16_tflops > 0


def test_catalogue_bf16_flags_follow_the_compute_capability_rule() -> None:
    pre_ampere = {"T4 16GB", "V100 16GB", "V100 32GB"}
    assert {g.name for g in GPU_CATALOGUE if not g.bf16} == pre_ampere


def test_cuda_runs_use_expandable_segments_unless_the_user_configured_the_allocator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda("NVIDIA H100 80GB HBM3", (9, 0)).patch(monkeypatch)
    settings: list[str] = []
    monkeypatch.setattr(runtime, "_set_allocator_settings", settings.append)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    runtime.resolve_runtime(TrainConfig(device="cuda"))
    assert settings == ["expandable_segments:True"]
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    runtime.resolve_runtime(TrainConfig(device="cuda"))
    assert settings == ["expandable_segments:True"]  # the user's own setting is left alone


# ----------------------------------------------------------------------------- the distributed path in one process

def test_forced_ddp_runs_the_distributed_path_in_one_process(corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """TUI_LM_FORCE_DDP=1: process group (gloo here, NCCL on a GPU), the DDP wrapper, no_sync on accumulation
    micro-steps, rank-0 writes and the stop vote, at world size 1; same numbers as without. (Compiled DDP:
    test_distributed's matrix.)"""
    import torch.distributed as dist

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    def config(out: Path) -> RunConfig:
        cfg = tiny_config(corpus, out, max_steps=4, eval_interval=0, grad_accum_steps=2)
        cfg.model.arch, cfg.model.dropout = "modern", 0.0  # the rotary tables are the model's buffers
        return cfg

    plain: list[ev.Event] = []
    Trainer(config(tmp_path / "plain"), plain.append).run()

    monkeypatch.setenv(runtime.FORCE_DDP_ENV, "1")
    broadcasts, no_syncs = [], []
    real_broadcast = dist._broadcast_coalesced
    monkeypatch.setattr(dist, "_broadcast_coalesced", lambda *a: broadcasts.append(a) or real_broadcast(*a))
    from torch.nn.parallel import DistributedDataParallel as DDP

    real_no_sync = DDP.no_sync
    monkeypatch.setattr(DDP, "no_sync", lambda self: no_syncs.append(1) or real_no_sync(self))
    control = TrainingControl()
    seen: list[ev.Event] = []

    def sink(e: ev.Event) -> None:
        seen.append(e)
        if isinstance(e, ev.StepMetrics) and e.step == 3:
            control.stop()  # decided by the ranks' vote (an all-reduce) at the next step

    done = Trainer(config(tmp_path / "forced"), sink, control).run()
    assert isinstance(done, ev.Finished) and done.stopped and done.step == 3
    logs = [e.message for e in seen if isinstance(e, ev.Log)]
    assert "DistributedDataParallel over 1 rank(s), gloo (forced by TUI_LM_FORCE_DDP=1)" in logs
    assert not dist.is_initialized()  # the group is gone with the run
    assert len(no_syncs) == 3 * 1  # one per accumulation micro-step but the last
    # DDP's start-up broadcast only: the rotary buffers are not broadcast before every forward
    assert len(broadcasts) == 1
    meta = json.loads(list_checkpoints(tmp_path / "forced" / "r")[-1].with_suffix(".json").read_text())
    assert meta["world_size"] == 1 and meta["reason"] == "stop" and meta["step"] == 3
    losses = [e.loss for e in seen if isinstance(e, ev.StepMetrics)]
    assert losses == pytest.approx([e.loss for e in plain if isinstance(e, ev.StepMetrics)][:3], rel=1e-5)


def test_forced_ddp_under_torchrun_uses_its_rendezvous(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forced rank started by torchrun --nproc_per_node 1 joins torchrun's env:// group; alone, an in-process one."""
    calls: list[dict] = []
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(runtime.dist, "new_group", lambda backend, timeout: "slow")
    monkeypatch.setenv(runtime.FORCE_DDP_ENV, "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    rt = runtime.resolve_runtime(TrainConfig(device="cpu"))
    assert rt.distributed and rt.world_size == 1 and rt.slow_group == "slow"
    assert calls[-1]["backend"] == "gloo" and calls[-1]["world_size"] == 1
    assert isinstance(calls[-1]["store"], torch.distributed.HashStore)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    runtime.resolve_runtime(TrainConfig(device="cpu"))
    assert calls[-1] == {"backend": "gloo", "device_id": None}  # env://, as torchrun set it
    monkeypatch.setenv(runtime.FORCE_DDP_ENV, "0")
    assert not runtime.resolve_runtime(TrainConfig(device="cpu")).distributed


# ----------------------------------------------------------------------------- memory peak, many runs, TF32

def test_peak_memory_is_reset_after_the_compile_warmup(corpus: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda("NVIDIA H100 80GB HBM3", (9, 0)).patch(monkeypatch)
    resets: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", resets.append)
    runtime.Runtime(torch.device("cuda", 0), runtime.device_info(torch.device("cuda", 0))).reset_peak_memory()
    assert resets == [torch.device("cuda", 0)]
    monkeypatch.undo()

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    forwards, seen, at_reset = [], [], []
    real_forward = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, *a, **k: forwards.append(1) or real_forward(self, *a, **k))
    real_reset = runtime.Runtime.reset_peak_memory
    monkeypatch.setattr(runtime.Runtime, "reset_peak_memory",
                        lambda self: at_reset.append((len(forwards), len(seen))) or real_reset(self))
    Trainer(tiny_config(corpus, tmp_path, max_steps=2, eval_interval=0, compile="on"), seen.append).run()
    # once, after the warm-up's forward and before the first training step (or its RunStarted)
    assert len(at_reset) == 1 and at_reset[0][0] == 1
    assert not any(isinstance(e, (ev.RunStarted, ev.StepMetrics)) for e in seen[:at_reset[0][1]])


def test_a_session_of_many_compiled_runs_compiles_each_afresh(corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Dynamo keeps compiled graphs per code object: without a reset, a dashboard's ninth run of another shape
    would pass the recompile limit and silently run eagerly. Here the limit is 1, so the second run shows it."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    for i, d_ff in enumerate((64, 96)):
        counters.clear()
        cfg = tiny_config(corpus, tmp_path / str(i), max_steps=2, eval_interval=0, compile="on")
        cfg.model.d_ff = d_ff
        done = Trainer(cfg, lambda e: None).run()
        assert isinstance(done, ev.Finished) and not done.stopped
        assert counters["stats"]["unique_graphs"] == 1, f"run {i}: {dict(counters['stats'])}"
    torch._dynamo.reset()


@pytest.mark.parametrize("name,capability,tf32,fp32_peak", [
    ("NVIDIA A100-SXM4-80GB", (8, 0), True, 156.0),  # TF32 tensor cores: half the bf16 rate
    ("NVIDIA H100 80GB HBM3", (9, 0), True, 494.7),
    ("Tesla V100-SXM2-16GB", (7, 0), False, 15.7),  # no TF32: allow_tf32 changes nothing, plain FP32
])
def test_fp32_mfu_peak_is_the_tf32_peak_where_the_runtime_turns_tf32_on(
        name: str, capability: tuple[int, int], tf32: bool, fp32_peak: float, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(name, capability).patch(monkeypatch)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # restored after: the runtime sets it
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    rt = runtime.resolve_runtime(TrainConfig(device="cuda"))
    assert rt.tf32 == tf32 and torch.backends.cuda.matmul.allow_tf32
    gpu = find_gpu(name)
    assert gpu.peak_tflops("fp32", rt.tf32) == pytest.approx(fp32_peak)
    assert gpu.peak_tflops("bf16", rt.tf32) == gpu.peak_bf16_tflops
    assert not runtime.resolve_runtime(TrainConfig(device="cpu")).tf32
