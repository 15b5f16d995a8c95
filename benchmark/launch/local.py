"""Local launcher: the jobs one after another on this machine.

A job uses the GPUs the published run used, as far as this machine has them: with 2+ GPUs it runs
under ``torch.distributed.run`` (one process per GPU, env:// initialisation); with one GPU, or on
the CPU, it runs inside this process. A failing job, or one the training guard stopped, is reported
and the next one starts.

Each job runs under its lock (``benchmark.run.lock``). A job that another run-all holds is put off:
the others run first, then this launcher waits for the holder to finish and runs whatever stages it
left (usually none: the other run did them). Both steps are said on the console.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Tuple

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.recipe import Recipe
from benchmark.run.job import Job, Resources, run_job
from benchmark.run.lock import JobHeld, JobLock, held_for_children, lock_path
from benchmark.run.records import diverged_record, record_kinds
from benchmark.run.state import JOB_LOG, read_state


def resources_for(recipe: Recipe) -> Resources:
    """min(recipe GPUs, local GPUs) ranks on this machine; the CPU in-process when there is no GPU."""
    import torch

    local = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local == 0:
        return Resources(nodes=1, tasks_per_node=1, gpus_per_node=0)
    n = min(recipe.runtime.gpus, local)
    return Resources(nodes=1, tasks_per_node=n, gpus_per_node=n)


def _run_distributed(job: Job, job_file: Path, lock: JobLock) -> None:
    """One process per GPU through torchrun; the job's JSON tells each rank what to run."""
    atomic_write_text(job_file, json.dumps(job.to_dict(), indent=2) + "\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={job.resources.tasks_per_node}", "-m", "benchmark.run", str(job_file)]
    with held_for_children(lock):  # the ranks run under this process's lock
        code = subprocess.call(cmd)
    if code != 0:
        raise NLBenchError(f"torchrun exited with status {code}; see {Path(job.work_dir) / JOB_LOG}")


def _run_one(job: Job, lock: JobLock, results_dir: Path, tag: str, report) -> str:
    """Run one job under its lock (held); returns "done", "diverged" (the guard stopped it) or "failed"."""
    started = time.perf_counter()
    report(f"{tag} {job.key} on {job.resources.describe()} (log {Path(job.work_dir) / JOB_LOG})")
    try:
        if job.resources.world_size > 1:
            _run_distributed(job, results_dir / "jobs" / "local" / f"{job.key.replace('/', '__')}.json", lock)
        else:
            run_job(job)
        state = read_state(job.work_dir) or {}
        outcome = "diverged" if state.get("state") == "diverged" else "done"
        what = f"diverged ({state.get('message')})" if outcome == "diverged" else "done"
        report(f"{tag} {job.key}: {what} in {time.perf_counter() - started:.1f} s")
        return outcome
    except Exception as exc:  # one failing row must not stop the others
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        report(f"{tag} {job.key}: FAILED after {time.perf_counter() - started:.1f} s: {message}")
        if not isinstance(exc, NLBenchError) and os.environ.get("NLBENCH_DEBUG"):
            traceback.print_exc()
        return "failed"


def _complete(job: Job) -> bool:
    return set(job.stages) <= record_kinds(job.results_dir, job.name, job.profile, job.seed, job.recipe.hash,
                                           job.checkpoint_source)


def run_local(jobs: List[Job], results_dir: Path, report=print) -> Dict[str, str]:
    """Run every job; returns {job key: "done" | "diverged" | "failed"} (diverged: the guard stopped
    it). Jobs held by another run-all come last, after waiting for their holder."""
    outcome: Dict[str, str] = {}
    put_off: List[Tuple[str, Job, JobLock]] = []
    for i, job in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}]"
        lock = JobLock(lock_path(results_dir, job.key), what="nlbench run-all (local)")
        try:
            lock.acquire()
        except JobHeld as held:
            report(f"{tag} {job.key}: {held} (another run); running the other jobs first, then waiting for it")
            put_off.append((tag, job, lock))
            continue
        with lock:
            outcome[job.key] = _run_one(job, lock, results_dir, tag, report)
    for tag, job, lock in put_off:
        lock.acquire(wait=True, on_wait=lambda held, tag=tag, job=job: report(
            f"{tag} {job.key}: waiting for the run that holds it: {held}"))
        with lock:
            if _complete(job):
                report(f"{tag} {job.key}: done by the other run; nothing left to run here")
                outcome[job.key] = "done"
            elif diverged_record(results_dir, job.name, job.profile, job.seed, job.recipe.hash) is not None:
                report(f"{tag} {job.key}: the other run's guard stopped it (diverged); not run again here")
                outcome[job.key] = "diverged"
            else:
                outcome[job.key] = _run_one(job, lock, results_dir, tag, report)
    return outcome
