"""Local launcher: the jobs one after another on this machine (or, on a machine without GPUs,
``parallel`` at a time).

A job uses the GPUs the published run used, as far as this machine has them: with 2+ GPUs it runs
under ``torch.distributed.run`` (one process per GPU, env:// initialisation); with one GPU, or on
the CPU, it runs inside this process. With ``parallel`` > 1 (CPU only: ``run-all --parallel N``)
each job runs in a process of its own, N at a time, its console output in
``RESULTS/jobs/local/<job>.out`` beside its job.log. A failing job, or one the training guard
stopped, is reported and the next one starts.

Each job runs under its lock (``benchmark.run.lock``). A job that another run-all holds is put off:
the others run first, then this launcher waits for the holder to finish and runs whatever stages it
left (usually none: the other run did them). Both steps are said on the console.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import multiprocessing.context
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.io.layout import ResultsLayout
from benchmark.recipe import Recipe
from benchmark.run.job import Job, Resources, run_job
from benchmark.run.lock import JobHeld, JobLock, SharedLock, adopt, held_for_children
from benchmark.run.records import RecordStore
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
    with held_for_children(lock):  # the ranks run under this process's lock, which torchrun holds too
        code = subprocess.call(cmd, pass_fds=() if lock.fd is None else (lock.fd,))
    if code != 0:
        raise NLBenchError(f"torchrun exited with status {code}; see {Path(job.work_dir) / JOB_LOG}")


# Side-by-side jobs start from a forkserver that has imported torch and the stages once (with
# torch._dynamo, which the first optimizer imports): about 5 s saved at the start of every job.
_PRELOAD = ["torch", "torch._dynamo", "benchmark.run.job", "benchmark.engine.train", "benchmark.engine.evaluate",
            "benchmark.engine.bench"]


@functools.lru_cache(maxsize=None)
def _job_context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _job_process(job_file: str, console: str, shared: SharedLock, launcher: int) -> None:
    """A side-by-side job's process: its console output into ``console``; it holds the job's lock
    itself (run/lock.py ``adopt``), so the job stays held if the launcher dies while it runs."""
    fd = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    adopt(shared, f"nlbench job (run-all --parallel, launcher pid {launcher})")
    from benchmark.run.__main__ import main

    sys.exit(main([job_file]))


def _run_child(job: Job, job_file: Path, lock: JobLock) -> None:
    """The job in a process of its own (``parallel`` > 1), sharing this process's lock."""
    atomic_write_text(job_file, json.dumps(job.to_dict(), indent=2) + "\n")
    console = job_file.with_suffix(".out")
    process = _job_context().Process(target=_job_process, args=(str(job_file), str(console), lock.shared(),
                                                                         os.getpid()))
    process.start()
    process.join()
    code = process.exitcode
    if code != 0:
        raise NLBenchError(f"the job's process exited with status {code}; see {Path(job.work_dir) / JOB_LOG} "
                           f"and {console}")


def _run_one(job: Job, lock: JobLock, results_dir: Path, tag: str, report, in_child: bool = False) -> str:
    """Run one job under its lock (held); returns "done", "diverged" (the guard stopped it) or "failed"."""
    started = time.perf_counter()
    report(f"{tag} {job.key} on {job.resources.describe()} (log {Path(job.work_dir) / JOB_LOG})")
    job_file = ResultsLayout(results_dir).local_job_file(job.key)
    try:
        if job.resources.world_size > 1:
            _run_distributed(job, job_file, lock)
        elif in_child:
            _run_child(job, job_file, lock)
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


def check_parallel(jobs: List[Job], parallel: int) -> None:
    """``parallel`` jobs at a time need a machine without GPUs (a job takes every GPU it can)."""
    if parallel < 1:
        raise NLBenchError(f"expected a number of jobs >= 1, got {parallel}", key="--parallel")
    if parallel > 1 and any(job.resources.gpus_per_node > 0 for job in jobs):
        raise NLBenchError("jobs run side by side only on a machine without GPUs (here each job takes the "
                           "GPUs it can); leave --parallel at 1", key="--parallel")


def run_local(jobs: List[Job], results_dir: Path, report=print, parallel: int = 1) -> Dict[str, str]:
    """Run every job, ``parallel`` at a time (see ``check_parallel``); returns {job key: "done" |
    "diverged" | "failed"} (diverged: the guard stopped it). Jobs held by another run-all come last,
    after waiting for their holder."""
    check_parallel(jobs, parallel)
    outcome: Dict[str, str] = {}
    put_off: List[Tuple[int, str, Job, JobLock]] = []

    def first_try(i: int, job: Job) -> None:
        tag = f"[{i}/{len(jobs)}]"
        lock = JobLock(ResultsLayout(results_dir).lock_file(job.key), what="nlbench run-all (local)")
        try:
            lock.acquire()
        except JobHeld as held:
            report(f"{tag} {job.key}: {held} (another run); running the other jobs first, then waiting for it")
            put_off.append((i, tag, job, lock))
            return
        with lock:
            outcome[job.key] = _run_one(job, lock, results_dir, tag, report, in_child=parallel > 1)

    if parallel > 1:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(first_try, range(1, len(jobs) + 1), jobs))
    else:
        for i, job in enumerate(jobs, 1):
            first_try(i, job)
    for _, tag, job, lock in sorted(put_off, key=lambda entry: entry[0]):
        lock.acquire(wait=True, on_wait=lambda held, tag=tag, job=job: report(
            f"{tag} {job.key}: waiting for the run that holds it: {held}"))
        with lock:
            # Read now, under the lock: what the other run wrote while this one waited.
            done = RecordStore.read_row(job.results_dir, job.name, job.profile, job.seed)
            if set(job.stages) <= done.kinds_done(job.name, job.profile, job.seed, job.recipe.hash,
                                                  job.checkpoint_source):
                report(f"{tag} {job.key}: done by the other run; nothing left to run here")
                outcome[job.key] = "done"
            elif done.diverged(job.name, job.profile, job.seed, job.recipe.hash) is not None:
                report(f"{tag} {job.key}: the other run's guard stopped it (diverged); not run again here")
                outcome[job.key] = "diverged"
            else:
                outcome[job.key] = _run_one(job, lock, results_dir, tag, report)
    return outcome
