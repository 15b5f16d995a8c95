"""torch.distributed set-up from the environment, the few collective helpers the engine uses, and
the device facts (name, versions, peak memory) that every figure is reported with.

The rank variables (torchrun's names) are read by ``benchmark.io.jobenv``. With WORLD_SIZE > 1 the
process group is created with ``init_method="env://"``: nccl when the device is CUDA, gloo on CPU.
Without those variables everything runs as a single rank and every helper here is a no-op.

SyncBN: torch's SyncBatchNorm refuses CPU tensors in training (torch 2.13 raises "SyncBatchNorm
expected input tensor to be on GPU ..."), so multi-process CPU runs keep plain BatchNorm (each rank
normalises with its own batch statistics; DDP broadcasts rank 0's running statistics) and say so.
CUDA runs with world size > 1 always convert to SyncBatchNorm when the recipe asks for it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist
from torch import nn

from benchmark.errors import NLBenchError
from benchmark.io.jobenv import job_environment


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]  # None when single-process

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> this rank's CUDA device when CUDA is available, else CPU; 'cuda' -> cuda:LOCAL_RANK."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise NLBenchError(f"expected cpu, cuda, cuda:N or auto, got {device!r}", key="--device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NLBenchError("CUDA was requested but torch sees no CUDA device", key="--device")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise NLBenchError(f"expected cpu, cuda, cuda:N or auto, got {device!r}", key="--device")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (idempotent) and pick this rank's device."""
    env = job_environment()
    world_size, rank, local_rank = env.world_size, env.rank, env.local_rank
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, dev, None)
    if not 0 <= rank < world_size:
        raise NLBenchError(f"RANK={rank} is outside 0..{world_size - 1}", key="environment variable RANK")
    for name, value in (("MASTER_ADDR", env.master_addr), ("MASTER_PORT", env.master_port)):
        if not value:
            raise NLBenchError(f"WORLD_SIZE={world_size} but {name} is not set (torchrun sets it)",
                               key=f"environment variable {name}")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        # Binding the device up front lets nccl set up its communicator eagerly (torch >= 2.3).
        extra = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **extra)
    return DistInfo(rank, world_size, local_rank, dev, dist.get_backend())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (unchanged when single-process)."""
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest ``value`` over ranks (e.g. peak memory, which MMSeg reports as a max)."""
    if get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BN running statistics).

    With plain BN (CPU ranks) each rank's last forward updated its own running statistics; before an
    evaluation they are made equal, so all ranks score the very model rank 0 saves.
    """
    if get_world_size() > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src)


def convert_sync_bn(model: nn.Module, info: DistInfo, enabled: bool, log: Callable[[str], None] = print) -> nn.Module:
    """SyncBatchNorm when the world size is > 1 and the recipe asks for it, on CUDA; plain BN on CPU."""
    if info.world_size == 1 or not enabled:
        return model
    if info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if info.is_main:
        log(f"note: SyncBatchNorm needs CUDA in torch {torch.__version__}; the {info.world_size} CPU ranks "
            "train with plain BatchNorm (per-rank batch statistics)")
    return model


# ----------------------------------------------------------------------------- device facts


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(device: torch.device, amp: Optional[str] = None) -> Dict[str, Any]:
    """What a figure was measured on: device name and count, dtype, torch/CUDA/cuDNN versions.

    ``device_name`` is the GPU's name, or "cpu" for every CPU (the device class that figures are
    compared by); ``cpu_model`` names the processor either way."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        count = torch.cuda.device_count()
    else:
        name, count = "cpu", 1
    return {
        "device": str(device),
        "device_type": device.type,
        "device_name": name,
        "cpu_model": _cpu_name(),
        "device_count": count,
        "dtype": {None: "float32", "bf16": "bfloat16", "fp16": "float16"}[amp],
        "torch_version": str(torch.__version__),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }


class PeakMemory:
    """Peak memory of this process on its device, in GiB (bytes / 1024^3, as MMSeg prints Mem (GB)).

    CUDA: ``torch.cuda.max_memory_allocated`` (kind "cuda_max_allocated"). CPU: the peak resident set
    size, VmHWM from /proc/self/status (kind "peak_rss"); ``reset`` clears it through
    /proc/self/clear_refs where the kernel allows, so one phase can be measured alone.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "peak_rss"

    def reset(self) -> bool:
        """Start a new peak; False when the platform cannot (the peak then covers the whole process)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return True
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def peak_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 1024**3
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / 1024**3
        except OSError:
            pass
        import resource  # ru_maxrss is in KiB on Linux

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024**3
