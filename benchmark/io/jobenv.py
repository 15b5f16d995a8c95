"""The one reader of the job environment: torchrun's rank variables and SLURM's job ids.

Whoever starts the processes exports torchrun's names (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): torchrun itself, or the SLURM launcher, which copies submitit's environment into them.
SLURM adds the job and array ids and SLURM_RESTART_COUNT (requeues so far). Like submitit's
``JobEnvironment``, this module reads them once per call into a typed value; a malformed integer is
one clear error naming the variable.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

from benchmark.errors import NLBenchError

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def process_start(pid: int) -> Optional[str]:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid from the one recorded);
    None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, recorded_start: Optional[str] = None) -> bool:
    """Whether ``pid`` runs on this host and, when its start time was recorded, is still that process
    (not a newer one that got the same pid)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # it runs, as another user
    except OSError:
        return False
    if _zombie(pid):  # ended, not yet reaped (an orphan waits for its new parent to reap it)
        return False
    return recorded_start is None or process_start(pid) == recorded_start


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def env_int(name: str, default: int, environ: Optional[Mapping[str, str]] = None) -> int:
    """An integer environment variable ('' or unset: ``default``); anything else is an NLBenchError."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise NLBenchError(f"expected an integer, got {raw!r}", key=f"environment variable {name}") from None


@dataclass(frozen=True)
class JobEnvironment:
    rank: int
    world_size: int
    local_rank: int
    master_addr: Optional[str]
    master_port: Optional[str]
    slurm_job_id: Optional[str]
    slurm_array_job_id: Optional[str]
    slurm_array_task_id: Optional[str]
    slurm_restart_count: int
    hostname: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def job_id(self) -> Optional[str]:
        """``<array job>_<task>`` inside an array task, else the plain SLURM job id (None outside SLURM)."""
        if self.slurm_array_job_id and self.slurm_array_task_id:
            return f"{self.slurm_array_job_id}_{self.slurm_array_task_id}"
        return self.slurm_job_id

    @property
    def attempt(self) -> int:
        """1 for a first start; SLURM counts requeues in SLURM_RESTART_COUNT."""
        return self.slurm_restart_count + 1


def job_environment(environ: Optional[Mapping[str, str]] = None) -> JobEnvironment:
    env = os.environ if environ is None else environ
    return JobEnvironment(
        rank=env_int("RANK", 0, env),
        world_size=env_int("WORLD_SIZE", 1, env),
        local_rank=env_int("LOCAL_RANK", 0, env),
        master_addr=env.get("MASTER_ADDR") or None,
        master_port=env.get("MASTER_PORT") or None,
        slurm_job_id=env.get("SLURM_JOB_ID") or None,
        slurm_array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
        slurm_array_task_id=env.get("SLURM_ARRAY_TASK_ID") or None,
        slurm_restart_count=env_int("SLURM_RESTART_COUNT", 0, env),
        hostname=socket.gethostname(),
    )


class single_process_env:
    """Hide the multi-rank variables for a block (rank 0 benchmarking alone after the others left the
    process group; the engine would otherwise try to join it again)."""

    def __enter__(self) -> None:
        self.saved = {k: os.environ.pop(k) for k in RANK_VARIABLES if k in os.environ}

    def __exit__(self, *exc: object) -> None:
        os.environ.update(self.saved)
