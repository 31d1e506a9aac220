"""Where a run executes: the device, distributed ranks, autocast and RNG state.

Resolves train.device ("auto" included) into a torch device and describes it
as an `engine.config.plan.DeviceInfo` (name, compute capability), which the run plan
turns into the precision and compile choices (bf16 on GPUs of compute
capability 8.0 or newer, fp16 with a scaler on older ones, fp32 on the CPU;
torch.compile on CUDA). Nothing here decides them a second time.

The distributed path (process group, DDP, rank-0 writes, votes) runs under
torchrun with two or more ranks, or in one process with TUI_LM_FORCE_DDP=1
(world size 1: gloo on the CPU, NCCL on CUDA), which is how a one-GPU check
exercises NCCL and the DDP wrapper.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from engine.config.levers import installed_kernels
from engine.config.plan import DeviceInfo
from engine.config.run_config import TrainConfig
from engine.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Ranks wait for each other's long host-side work (rank 0 tokenizing
# WikiText-103: tens of minutes; a checkpoint on slow storage): NCCL's default
# 10-minute collective timeout would kill them, so those waits use a gloo group
# with this timeout instead.
PREPARE_TIMEOUT = timedelta(hours=6)
FORCE_DDP_ENV = "TUI_LM_FORCE_DDP"  # "1": the distributed path at world size 1


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward's autocast for a resolved precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


@dataclass
class Runtime:
    device: torch.device
    info: DeviceInfo  # what the run plan needs to know about the device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    slow_group: Any = None  # gloo group with PREPARE_TIMEOUT, for waits on another rank's long work
    distributed: bool = False  # process group and DDP: world_size > 1, or TUI_LM_FORCE_DDP=1
    tf32: bool = False  # fp32 matmuls run as TF32 (CUDA): the MFU peak of an fp32 run

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def slow_barrier(self) -> None:
        """Barrier on the slow group, where ranks wait for another rank's long work (data preparation,
        rank 0's checkpoint and model writes) instead of in a collective with the default timeout."""
        if self.distributed:
            dist.barrier(group=self.slow_group)

    def reset_peak_memory(self) -> None:
        """Start the allocator's peak (torch.cuda.max_memory_allocated) afresh: from here it covers
        this run's training, evaluations and checkpoints, not its compile warm-up or an earlier run."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def synchronize(self) -> None:
        """Wait for the device's queued work, so a clock read after it is honest."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        """"cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"."""
        return self.info.describe()


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    """The device train.device names (this rank's under torchrun), with the process group started."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    distributed = world_size > 1 or os.environ.get(FORCE_DDP_ENV, "") == "1"
    # Under torchrun (LOCAL_RANK set) each rank takes its own GPU; a forced single process keeps train.device.
    device = _resolve_device(cfg.device, local_rank if distributed and "LOCAL_RANK" in os.environ else None)
    slow_group = None
    if distributed and device.type == "cuda":
        # Before any collective or pin_memory(): otherwise every rank's NCCL
        # communicator and CUDA context land on GPU 0.
        torch.cuda.set_device(device)
    if distributed and not dist.is_initialized():
        _init_process_group("nccl" if device.type == "cuda" else "gloo", device)
    if distributed:
        slow_group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    if device.type == "cuda":
        configure_cuda_allocator()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = device_info(device)
    # TF32 units came with bf16's (Ampere, 8.0): on older cards allow_tf32 changes nothing.
    tf32 = info.bf16_native
    return Runtime(device, info, rank, local_rank, world_size, slow_group, distributed, tf32)


def _init_process_group(backend: str, device: torch.device) -> None:
    """The default process group: torchrun's env:// rendezvous, or one forced rank without one.

    A process started without torchrun (TUI_LM_FORCE_DDP=1) has no MASTER_ADDR;
    its group of one is rendezvoused through an in-process store, so no port
    is opened and none can clash with another run on the machine.
    """
    device_id = device if device.type == "cuda" else None
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend=backend, device_id=device_id)
    else:
        dist.init_process_group(backend=backend, device_id=device_id, store=dist.HashStore(), rank=0, world_size=1)


def configure_cuda_allocator() -> None:
    """Expandable segments for the caching allocator, unless the user configured it.

    A training step allocates a few very large, differently sized transients
    (logits, their fp32 copy, gradients); in fixed segments they fragment and
    the allocator reserved up to 1.5x what was allocated (H200, bench/gpu_check).
    Expandable segments grow one mapping instead, so reserved stays close to
    allocated and the memory estimate holds for both. Applies to segments
    created from now on: call before the first CUDA allocation.
    """
    if os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or os.environ.get("PYTORCH_ALLOC_CONF"):
        return
    _set_allocator_settings("expandable_segments:True")


def _set_allocator_settings(conf: str) -> None:
    # No public API sets this at run time (only the environment variable, read
    # once): torch >= 2.9 names it torch._C._accelerator_setAllocatorSettings,
    # earlier releases torch.cuda.memory._set_allocator_settings.
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    (setter or torch.cuda.memory._set_allocator_settings)(conf)


def device_info(device: torch.device) -> DeviceInfo:
    """Name, compute capability and installed kernel libraries of the chosen device, for the run plan's rules.

    The capability is the chosen device's (not torch.cuda.is_bf16_supported(),
    which asks the *current* device and by default counts emulation: T4 and
    V100 "support" bf16 at a fraction of fp16's speed). ROCm devices report
    no capability and are taken as bf16-capable.
    """
    kernels = installed_kernels()  # which optional kernel libraries the speed levers can use here
    if device.type != "cuda":
        return DeviceInfo(device.type, device.index, kernels=kernels)
    capability = None
    if not torch.version.hip:
        major, minor = torch.cuda.get_device_capability(device)
        capability = (major, minor)
    return DeviceInfo("cuda", device.index, torch.cuda.get_device_name(device), capability, kernels)


def _resolve_device(name: str, local_rank: int | None) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {name!r} but no CUDA GPU is available; use --device cpu")
        if local_rank is not None:
            return torch.device("cuda", local_rank)
        index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device {name!r}: only {torch.cuda.device_count()} GPU(s) present")
        return torch.device("cuda", index)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device is 'mps' but MPS is not available; use --device cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------- RNG

def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def all_gather(obj: Any, rt: Runtime) -> list[Any]:
    if not rt.distributed:
        return [obj]
    out: list[Any] = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    if not rt.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.tolist()


def oom_cause(e: BaseException | None) -> BaseException | None:
    """The out-of-memory error `e` is or wraps (torch.compile re-raises it as its cause)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, torch.OutOfMemoryError):
            return e
        seen.add(id(e))
        e = getattr(e, "inner_exception", None) or e.__cause__ or e.__context__
    return None


def oom_message(e: BaseException, rt: Runtime | None, cfg: Any, plan: Any) -> str:
    """The one line an out-of-memory failure reports: the device's memory and the fixes for `cfg` (its `plan`)."""
    from engine.memory.advice import oom_advice

    if rt is not None and rt.device.type == "cuda":
        props = torch.cuda.get_device_properties(rt.device)
        return "CUDA out of memory. " + oom_advice(cfg, props.name, props.total_memory, plan=plan)
    import psutil

    return f"out of memory ({e}). " + oom_advice(cfg, "this machine's RAM", psutil.virtual_memory().total,
                                                 plan=plan)
