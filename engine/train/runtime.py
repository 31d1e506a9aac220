"""Where a run executes: the device, distributed ranks, autocast and RNG state.

Resolves train.device ("auto" included) into a torch device and describes it
as an `engine.config.plan.DeviceInfo` (name, compute capability), which the run plan
turns into the precision and compile choices (bf16 on GPUs of compute
capability 8.0 or newer, fp16 with a scaler on older ones, fp32 on the CPU;
torch.compile on CUDA). Nothing here decides them a second time.
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
# Rank 0 may tokenize a large corpus (WikiText-103: tens of minutes) while the
# other ranks wait; NCCL's default 10-minute collective timeout would kill them.
PREPARE_TIMEOUT = timedelta(hours=6)


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
    slow_group: Any = None  # gloo group with PREPARE_TIMEOUT, for waits on rank 0's data preparation

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wait_for_main(self) -> None:
        """Barrier on the slow group: ranks wait here while rank 0 prepares the data."""
        if self.distributed:
            dist.barrier(group=self.slow_group)

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
    device = _resolve_device(cfg.device, local_rank if world_size > 1 else None)
    slow_group = None
    if world_size > 1 and device.type == "cuda":
        # Before any collective or pin_memory(): otherwise every rank's NCCL
        # communicator and CUDA context land on GPU 0.
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    if world_size > 1:
        slow_group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    if device.type == "cuda":
        configure_cuda_allocator()
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_info(device), rank, local_rank, world_size, slow_group)


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
