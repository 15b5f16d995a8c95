"""Local launcher: the jobs one after another on this machine.

A job uses the GPUs the published run used, as far as this machine has them: with 2+ GPUs it runs
under ``torch.distributed.run`` (one process per GPU, env:// initialisation); with one GPU, or on
the CPU, it runs inside this process. A failing job, or one the training guard stopped, is reported
and the next one starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.recipe import Recipe
from benchmark.run.job import Job, Resources, run_job
from benchmark.run.state import JOB_LOG, read_state


def resources_for(recipe: Recipe) -> Resources:
    """min(recipe GPUs, local GPUs) ranks on this machine; the CPU in-process when there is no GPU."""
    import torch

    local = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local == 0:
        return Resources(nodes=1, tasks_per_node=1, gpus_per_node=0)
    n = min(recipe.runtime.gpus, local)
    return Resources(nodes=1, tasks_per_node=n, gpus_per_node=n)


def _run_distributed(job: Job, job_file: Path) -> None:
    """One process per GPU through torchrun; the job's JSON tells each rank what to run."""
    atomic_write_text(job_file, json.dumps(job.to_dict(), indent=2) + "\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={job.resources.tasks_per_node}", "-m", "benchmark.run", str(job_file)]
    code = subprocess.call(cmd)
    if code != 0:
        raise NLBenchError(f"torchrun exited with status {code}; see {Path(job.work_dir) / JOB_LOG}")


def run_local(jobs: List[Job], results_dir: Path, report=print) -> Dict[str, str]:
    """Run every job; returns {job key: "done" | "diverged" | "failed"} (diverged: the guard stopped it)."""
    outcome: Dict[str, str] = {}
    for i, job in enumerate(jobs, 1):
        started = time.perf_counter()
        report(f"[{i}/{len(jobs)}] {job.key} on {job.resources.describe()} (log {Path(job.work_dir) / JOB_LOG})")
        try:
            if job.resources.world_size > 1:
                _run_distributed(job, results_dir / "jobs" / "local" / f"{job.key.replace('/', '__')}.json")
            else:
                run_job(job)
            state = read_state(job.work_dir) or {}
            outcome[job.key] = "diverged" if state.get("state") == "diverged" else "done"
            what = f"diverged ({state.get('message')})" if outcome[job.key] == "diverged" else "done"
            report(f"[{i}/{len(jobs)}] {job.key}: {what} in {time.perf_counter() - started:.1f} s")
        except Exception as exc:  # one failing row must not stop the others
            outcome[job.key] = "failed"
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            report(f"[{i}/{len(jobs)}] {job.key}: FAILED after {time.perf_counter() - started:.1f} s: {message}")
            if not isinstance(exc, NLBenchError) and os.environ.get("NLBENCH_DEBUG"):
                traceback.print_exc()
    return outcome
