"""torch.distributed set-up from the environment, the few collective helpers the engine uses, and
the device facts (name, versions, peak memory) that every figure is reported with.

The rank variables (torchrun's names) are read by ``benchmark.io.jobenv``. With WORLD_SIZE > 1 the
process group is created with ``init_method="env://"``: nccl when the device is CUDA, gloo on CPU.
Without those variables everything runs as a single rank and every helper here is a no-op.

SyncBN: torch's SyncBatchNorm refuses CPU tensors in training (torch 2.13 raises "SyncBatchNorm
expected input tensor to be on GPU ..."), so multi-process CPU runs keep plain BatchNorm (each rank
normalises with its own batch statistics; DDP broadcasts rank 0's running statistics) and say so.
CUDA runs with world size > 1 always convert to SyncBatchNorm when the recipe asks for it.

A failing rank (``RankWatch``). A rank that raises, or dies, would leave the others waiting in their
next collective until the NCCL (10 min) or gloo (30 min) timeout, or the SLURM time limit. Every
rank therefore runs a watch thread with its own connection to the job's c10d store (the TCPStore at
MASTER_ADDR:MASTER_PORT that env:// rendezvous uses: rank 0's under srun, torchrun's agent's under
torchrun). Once a second it bumps its heartbeat counter, reads a shared failure flag, and checks
one peer (rank r + 1 round the ring, or the next one that has not finished): on the same host,
whether its pid still runs; anywhere, whether its heartbeat moved within ``NLBENCH_RANK_TIMEOUT_S``
(default 30 s: generous, because a main thread that holds the GIL for long, e.g. pickling a large
checkpoint, also holds up its watch thread's heartbeat).
A rank that raises sets the flag (``report_failure``), naming itself and the error; a watcher that
finds its peer dead or silent sets it naming that peer; a watcher that cannot reach the store any
more names rank 0 (whose process, or agent, hosts it). Every rank that sees the flag prints one line
(``nlbench: rank R stops: rank K failed: ...``), runs the callbacks registered with ``on_abort``
(the job notes the failure in its state file) and exits with status 1 at once, from the watch
thread, whatever the main thread is blocked in. Nothing here depends on torchrun's agent, which
also kills the siblings of a failed rank; under srun each rank is started alone and this is what
stops them. A normal exit (``cleanup``) first marks the rank done, so its silence is not a failure,
and rank 0 waits a moment for the others' marks before its store goes away.
"""

from __future__ import annotations

import atexit
import os
import platform
import re
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from benchmark.errors import NLBenchError
from benchmark.io.jobenv import env_int, job_environment


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


def use_cpu_threads(threads: Optional[int], device: torch.device) -> None:
    """On the CPU, run with ``threads`` intra-op threads (the recipe's runtime.cpu_threads; None
    leaves torch's default)."""
    if threads is not None and device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def use_tf32(allowed: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions as the recipe's ``runtime.tf32`` says, set
    explicitly either way: torch allows it for cuDNN by default, and the published runs (V100s, which
    have no TF32) computed in true fp32. No effect on a CPU, where the flags are still set."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def use_runtime(runtime, device: torch.device) -> None:
    """A recipe's ``runtime`` section's process-wide settings: CPU threads and TF32 (train, eval, bench)."""
    use_cpu_threads(runtime.cpu_threads, device)
    use_tf32(runtime.tf32)


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
        _open_host_group(backend)
        _start_watch(env.master_addr, int(env.master_port), rank, world_size)
    return DistInfo(rank, world_size, local_rank, dev, dist.get_backend())


def cleanup() -> None:
    """Leave the process group: mark this rank done (see RankWatch), then destroy the group. After a
    failure this rank reported, the group is left as it is (a collective may still hang in it)."""
    global _WATCH
    watch, _WATCH = _WATCH, None
    if watch is not None:
        watch.finish()
        if watch.failed_here:
            return
    global _HOST_GROUP
    _HOST_GROUP = None
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


# A gloo group beside an nccl one, for flags that ranks agree on every iteration (a stop request):
# a CPU tensor all-reduced there waits for the other ranks' hosts only, never for this GPU's queue,
# so the training loop keeps no host synchronisation per iteration. None: use the default group.
_HOST_GROUP: Optional[Any] = None


def _open_host_group(backend: str) -> None:
    global _HOST_GROUP
    _HOST_GROUP = dist.new_group(backend="gloo") if backend == "nccl" else None


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank, agreed by all ranks without touching the device."""
    if get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_HOST_GROUP)
    return bool(t.item())


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` (picklable) on every rank (``value`` itself when single-process)."""
    if get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


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


# ----------------------------------------------------------------------------- a failing rank

TIMEOUT_ENV = "NLBENCH_RANK_TIMEOUT_S"
POLL_S = 1.0
_WATCH: Optional["RankWatch"] = None


def _process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs on this host (a zombie, killed and not yet reaped, counts)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        return False


class RankWatch:
    """The watch thread of one rank (see the module docstring)."""

    def __init__(self, store: Any, rank: int, world_size: int, timeout_s: float):
        self.store, self.rank, self.world_size, self.timeout_s = store, rank, world_size, timeout_s
        self.host = socket.gethostname()
        self.failed_here = False
        self.callbacks: List[Callable[[str], None]] = []
        self._stop = threading.Event()
        store.set(f"who/{rank}", f"{self.host} {os.getpid()}")
        self._thread = threading.Thread(target=self._run, name="nlbench-rank-watch", daemon=True)
        self._thread.start()

    # -- the thread
    def _run(self) -> None:
        peer, seen, since = None, -1, time.monotonic()
        while not self._stop.wait(POLL_S):
            flag = self.failure()
            if flag is not None:
                return None if self._stop.is_set() else self.abort(flag)
            try:
                self.store.add(f"hb/{self.rank}", 1)
                # The next rank round the ring that has not finished (one that has is not watched).
                ring = [(self.rank + k) % self.world_size for k in range(1, self.world_size)]
                live = next((r for r in ring if not self.store.check([f"done/{r}"])), None)
                if live is None:
                    continue
                beats = self.store.add(f"hb/{live}", 0)
                if (live, beats) != (peer, seen):
                    peer, seen, since = live, beats, time.monotonic()
                why = self._peer_problem(peer, time.monotonic() - since)
                if why is not None:
                    self.fail(peer, why)
            except Exception:  # noqa: BLE001 - the store went away: the next failure() says so
                continue
        return None

    def _peer_problem(self, peer: int, silent_s: float) -> Optional[str]:
        if self.store.check([f"who/{peer}"]):
            host, _, pid = self.store.get(f"who/{peer}").decode().partition(" ")
            if host == self.host and pid.isdigit() and _process_gone(int(pid)):
                return f"its process (pid {pid} on {host}) is gone (killed?)"
        if silent_s > self.timeout_s:
            return f"no heartbeat for {silent_s:.0f} s (killed, or its host is down)"
        return None

    # -- the flag
    def failure(self) -> Optional[str]:
        """The failure flag's text, unless this rank set it itself (a rank declared dead while it
        still runs stops too); when the store cannot be reached, that its host (rank 0, or the
        launcher's agent) is gone."""
        try:
            if not self.store.check(["failed"]):
                return None
            return None if self.failed_here else self.store.get("failed").decode()
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the store is gone
            if self.failed_here:
                return None
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"rank 0 failed: the job's store (on rank 0, or its launcher) cannot be reached: {first}"

    def fail(self, rank: int, why: str) -> None:
        """Set the flag naming ``rank`` (the first failure reported wins)."""
        self.store.compare_set("failed", "", f"rank {rank} failed: {why}")

    def abort(self, text: str) -> None:
        """Stop this process now: one line, the callbacks, exit status 1."""
        print(f"nlbench: rank {self.rank} stops: {text}", file=sys.stderr, flush=True)
        for callback in self.callbacks:
            try:
                callback(text)
            except Exception:  # noqa: BLE001 - exiting is what matters now
                pass
        try:
            self.store.add("stopped", 1)
        except Exception:  # noqa: BLE001
            pass
        os._exit(1)

    def wait_for(self, seconds: float, what: Callable[[], bool]) -> bool:
        """Poll ``what`` until it is true (True) or ``seconds`` pass, or the store is gone (False)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if what():
                    return True
            except Exception:  # noqa: BLE001 - the store went away: nobody is left to wait for
                return False
            time.sleep(0.1)
        return False

    def finish(self) -> None:
        """A normal exit: stop watching, mark this rank done; rank 0 keeps its store up a little
        longer, until the others have marked themselves done too."""
        self._stop.set()
        self._thread.join(timeout=2 * POLL_S)
        if self.failed_here:
            return
        try:
            self.store.set(f"done/{self.rank}", "1")
        except Exception:  # noqa: BLE001 - rank 0 has already left
            return
        if self.rank == 0:
            keys = [f"done/{r}" for r in range(self.world_size)]
            self.wait_for(30.0, lambda: self.store.check(keys))


def _start_watch(host: Optional[str], port: int, rank: int, world_size: int) -> None:
    global _WATCH
    if _WATCH is not None:
        return
    # A fresh namespace per process group: keys of an earlier group on the same store do not count.
    token = broadcast_object(secrets.token_hex(6) if rank == 0 else None)
    client = dist.TCPStore(host or "127.0.0.1", port, is_master=False, timeout=timedelta(seconds=30))
    store = dist.PrefixStore(f"nlbench/watch/{token}/", client)
    timeout_s = float(env_int(TIMEOUT_ENV, 30))
    _WATCH = RankWatch(store, rank, world_size, timeout_s)
    if not _HOOKED:
        _hook_exit()


_HOOKED = False


def _hook_exit() -> None:
    """A program that calls the engine directly and ends without ``cleanup`` still tells the others:
    an uncaught exception is reported as this rank's failure, and a normal exit stops the watch
    before the interpreter tears down the store client under it."""
    global _HOOKED
    _HOOKED = True
    previous = sys.excepthook

    def report_uncaught(kind, value, tb) -> None:
        if isinstance(value, Exception):
            report_failure(value)
        previous(kind, value, tb)

    def stop_watch() -> None:
        watch = _WATCH
        if watch is not None:
            watch.finish()

    sys.excepthook = report_uncaught
    atexit.register(stop_watch)


def on_abort(callback: Callable[[str], None]) -> None:
    """Call ``callback(text)`` (text: which rank failed and why) before this rank stops because
    another rank failed. No-op outside a multi-process job."""
    if _WATCH is not None:
        _WATCH.callbacks.append(callback)


_LOST_PEER = re.compile(r"gloo|NCCL|Connection (reset|closed) by peer|Broken pipe|Socket Timeout", re.IGNORECASE)


def _looks_like_a_lost_peer(exc: BaseException) -> bool:
    """A collective that failed because a peer went away (gloo: "Connection reset by peer")."""
    return isinstance(exc, getattr(dist, "DistError", ())) or bool(_LOST_PEER.search(str(exc)))


def report_failure(exc: BaseException) -> None:
    """Tell the other ranks that this one fails with ``exc``, so that they stop within seconds.

    When ``exc`` is a collective that lost a peer, the peer is the culprit: wait for the watchers
    to name it (up to the heartbeat timeout) and stop as they do. No-op outside a multi-process job."""
    watch = _WATCH
    if watch is None or watch.failed_here:
        return
    if _looks_like_a_lost_peer(exc) and watch.wait_for(watch.timeout_s + 3 * POLL_S,
                                                       lambda: watch.failure() is not None):
        watch.abort(watch.failure() or "another rank failed")
    text = str(exc).splitlines()[0] if str(exc) else ""
    if not isinstance(exc, NLBenchError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    watch.failed_here = True
    try:
        watch.fail(watch.rank, text)
        # The flag must be read before this process (perhaps the store's host) exits.
        others = watch.world_size - 1
        watch.wait_for(5.0, lambda: watch.store.add("stopped", 0) >= others)
    except Exception:  # noqa: BLE001 - the store is gone too: the others find out from that
        pass


# ----------------------------------------------------------------------------- device facts


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo's "model name"; elsewhere what platform knows)."""
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
    compared by); ``cpu_model`` names the processor either way, and ``cpu_capability`` is the instruction
    set ATen dispatches its CPU kernels to (AVX512, AVX2, DEFAULT: as capped by ATEN_CPU_CAPABILITY), on
    which a CPU result's rounding depends."""
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
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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
