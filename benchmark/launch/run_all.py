"""`nlbench run-all`: plan every row (and seed), then run the plan locally or as a SLURM job array.

    nlbench run-all [--filter GLOB] [--launcher local|slurm] [--cluster slurm/NAME.yaml]
                    [--profile full|smoke] [--seeds N] [--results DIR] [--dry-run] [--no-wait]
                    [--checkpoint trained|released] [--data-root DIR] [--set KEY=VALUE ...]

Rows whose every stage already has a record in the results folder are skipped, so running the same
command again after a failure runs only what is missing. With ``--launcher slurm`` the command waits
for the array and prints the status table at the end; ``--no-wait`` returns right after submission
(``nlbench status`` shows progress). Nothing is submitted or run when any input is wrong, nor when
the pre-flight (launch/preflight.py, the checks of ``nlbench doctor``) finds a problem: each is one
line, exit 2, and nothing is written under the results folder.

``--checkpoint released`` evaluates and benchmarks each row's released MMSeg checkpoint instead of
training one. Every file is downloaded here, once, into the download cache before anything runs or
is submitted (a wrong URL or hash stops the command before any job); the jobs then read it from that
cache (on a cluster, ``$NLBENCH_CACHE`` on a file system the nodes share).

Two run-alls into one results folder share the work through per-job locks (benchmark/run/lock.py):
locally, a job the other run holds is run last, after waiting for it; with SLURM, it is not
submitted (and a job that finds its lock taken on the node skips itself). Either way it is said.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.io.jobenv import process_start
from benchmark.io.layout import ResultsLayout
from benchmark.launch import plan as planning
from benchmark.launch.cost import estimate_saved_gpu_hours
from benchmark.launch.status import collect_status, format_status, live_slurm_jobs
from benchmark.run.lock import holder_of
from benchmark.run.records import RecordStore, known_recipe_names

Log = Callable[[str], None]  # where run-all's progress lines go (the command passes print)


@dataclass(frozen=True)
class RunAllOptions:
    """run-all's flags as the command line names them (benchmark/commands/runs.py)."""
    filter: Optional[str] = None
    launcher: str = "local"
    cluster: Optional[str] = None
    profile: str = "full"
    seeds: int = 1
    results: str = "results"
    dry_run: bool = False
    no_wait: bool = False
    overrides: Sequence[str] = ()
    checkpoint: str = "trained"
    parallel: int = 1
    data_root: Optional[str] = None


@dataclass(frozen=True)
class Campaign:
    """What a run-all did: its exit status, its plan, and the records read at its end (None after a
    dry run or a --no-wait submission: nothing has run yet to sum up)."""
    code: int
    plan: planning.Plan
    records: Optional[RecordStore]


def check_writable(results: Path) -> None:
    """Create the results folder (and jobs/runs) and prove it takes a file, before anything runs."""
    runs = ResultsLayout(results).runs
    probe = runs / f".write-test-{secrets.token_hex(4)}"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        atomic_write_text(probe, "ok\n")
        probe.unlink()
    except OSError as exc:
        raise NLBenchError(f"results folder is not writable: {exc.strerror or exc}", results, "--results") from None


def write_run(results: Path, launcher: str, entries: List[Dict[str, Any]], extra: Dict[str, Any],
              run_id: Optional[str] = None) -> Path:
    """RESULTS/jobs/runs/<UTC time>-<hex>.json: the jobs of one run-all (status reads these); with
    ``run_id``, that run's file written again (a submission growing array by array)."""
    now = datetime.now(timezone.utc)
    run_id = run_id or f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    body = {"run_id": run_id, "launcher": launcher, "created_at": now.isoformat(timespec="microseconds"),
            **extra, "jobs": entries}
    path = ResultsLayout(results).run_file(run_id)
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")
    return path


def launcher_rule(launcher: str, cluster: Optional[str]):
    """(resources rule, time limit, cluster profile) of the chosen launcher; bad combinations are errors."""
    if launcher == "slurm":
        from benchmark.launch import slurm

        if not cluster:
            raise NLBenchError("--launcher slurm needs a cluster profile, e.g. --cluster slurm/example.yaml",
                               key="--cluster")
        profile = slurm.load_cluster_profile(cluster)
        return slurm.resources_for(profile), profile.timeout_min, profile
    if cluster:
        raise NLBenchError("--cluster is only used with --launcher slurm", key="--cluster")
    from benchmark.launch import local

    return local.resources_for, None, None


def run_all(options: RunAllOptions, log: Log) -> Campaign:
    """`nlbench run-all`: plan, then run locally or submit to SLURM; status 1 when a row failed or diverged."""
    folder, launcher, parallel = Path(options.results), options.launcher, options.parallel
    if parallel != 1 and launcher != "local":
        raise NLBenchError("--parallel is for the local launcher (SLURM runs an array's tasks side by side)",
                           key="--parallel")
    rule, time_limit, cluster_profile = launcher_rule(launcher, options.cluster)
    plan = planning.make_plan(folder, rule, pattern=options.filter, profile=options.profile,
                              overrides=options.overrides, seeds=options.seeds, time_limit_min=time_limit,
                              checkpoint=options.checkpoint, data_root=options.data_root)
    if launcher == "local":  # before anything is written (and in a dry run too)
        from benchmark.launch import local

        local.check_parallel(plan.jobs, parallel)
    if not options.dry_run and plan.jobs:  # before anything is written, downloaded or submitted
        from benchmark.launch.preflight import gate

        log(gate(plan.jobs, launcher, cluster_profile, folder))
    if options.dry_run:
        log(planning.format_plan(plan, launcher))
        return Campaign(0, plan, None)
    check_writable(folder)
    for line in planning.adopt_old_work_dirs(plan):
        log(line)
    if plan.skipped:
        log(f"skipping {len(plan.skipped)} row(s) already complete in {folder}")
    if plan.diverged:
        log(f"skipping {len(plan.diverged)} row(s) the training guard stopped as diverged "
            f"({', '.join(plan.diverged)}); --set guard.action=warn resumes them")
    if not plan.jobs:
        log("nothing to run: every planned row is complete" + (" or was stopped by the guard" if plan.diverged
                                                                else ""))
        code, done = (1 if plan.diverged else 0), plan.records
    else:
        if options.checkpoint == "released":
            fetch_released_once(plan.jobs, log)
        fetch_reference_logs_once(plan.jobs, log)
        if launcher == "local":
            code, done = _run_locally(plan.jobs, folder, log, parallel)
        else:
            code, done = _submit(plan.jobs, cluster_profile, str(options.cluster), folder, options.no_wait, log)
            if options.no_wait:
                return Campaign(code, plan, None)
    return Campaign(code, plan, done if done is not None else RecordStore.read(folder))


def planned_rows(plan: planning.Plan) -> List[Tuple[str, str, str]]:
    """(recipe, profile, checkpoint source) of every row the plan names: those it runs and those it
    skips as complete or stopped by the guard (keys <profile>/<recipe>/[released/]seed<k>)."""
    rows = {(j.name, j.profile, j.checkpoint_source) for j in plan.jobs}
    rows |= {(key.split("/")[1], key.split("/")[0], plan.checkpoint) for key in plan.skipped + plan.diverged}
    return sorted(rows)


def fetch_released_once(jobs: List[planning.Job], report: Log) -> None:
    """Download every released checkpoint the jobs need, once each, into their cache (hash-checked)."""
    from benchmark.mmseg_checkpoint import fetch_released

    done = set()
    for job in jobs:
        release = job.recipe.release
        if release is None or release.url in done:
            continue
        path = fetch_released(job.recipe, cache_dir=job.cache_dir)
        done.add(release.url)
        report(f"released checkpoint of {job.name}: {path}")


def fetch_reference_logs_once(jobs: List[planning.Job], report: Log) -> None:
    """Every published training log a job's guard reads (``guard.reference: released``, full
    profile), downloaded once each before any job runs, so that seeds and array tasks of one row
    never fetch the same file at once."""
    from benchmark.curves.reference import RELEASED, fetch_log

    done = set()
    for job in jobs:
        recipe = job.recipe
        if (job.checkpoint_source != "trained" or recipe.guard.reference != RELEASED or recipe.profile != "full"
                or recipe.release is None or recipe.release.log_url in done):
            continue
        done.add(recipe.release.log_url)
        report(f"published training log of {job.name} (the guard's reference): {fetch_log(recipe)}")


def _run_locally(jobs: List[planning.Job], results: Path, log: Log, parallel: int = 1) -> Ran:
    from benchmark.launch import local

    # The process that runs the jobs: status tells a pending job of a run-all that is gone (killed,
    # interrupted) from one still to come, so `status --watch` ends instead of waiting for ever.
    me = {"hostname": socket.gethostname(), "pid": os.getpid(), "proc_start": process_start(os.getpid())}
    run_file = write_run(results, "local", [j.to_dict() for j in jobs], {"launcher_process": me})
    side = f", {parallel} at a time (each in its own process; console output in {ResultsLayout(results).local_jobs}/)" \
        if parallel > 1 else ""
    log(f"running {len(jobs)} job(s) locally{side}; plan in {run_file}")
    outcome = local.run_local(jobs, results, report=log, parallel=parallel)
    _, done = _finish(jobs, results, set(outcome), log)
    return (0 if all(v == "done" for v in outcome.values()) else 1), done


def _finish(jobs: List[planning.Job], results: Path, keys: Set[str],
            log: Log) -> Tuple[List[Dict[str, Any]], RecordStore]:
    """The jobs' state table and the guard's summary, from the records read once, now they are written."""
    done = RecordStore.read(results, known_recipe_names() | {job.name for job in jobs})
    rows = [r for r in collect_status(results, done=done) if r["key"] in keys]
    log(format_status(rows, results))
    text = guard_summary(jobs, done)
    if text:
        log(text)
    return rows, done


Ran = Tuple[int, Optional[RecordStore]]  # (exit status, the records read at the end: None when not waited for)


def _submit(jobs: List[planning.Job], profile, cluster: str, results: Path, no_wait: bool,
            log: Log) -> Ran:
    from benchmark.launch import slurm

    jobs = _not_queued(jobs, results, log)
    if not jobs:
        log("nothing to submit: every pending job is queued, running or held by another run")
        return 0, None
    run_file: List[Path] = []

    def record(entries: List[Dict[str, Any]]) -> None:  # after each array: a later refusal keeps these
        run_id = run_file[0].stem if run_file else None
        run_file[:] = [write_run(results, "slurm", entries, {"cluster": str(Path(cluster).resolve())}, run_id)]

    entries = slurm.submit(jobs, profile, cluster, results, record)
    ids = sorted({e["slurm_job_id"].split("_")[0] for e in entries})
    log(f"submitted {len(entries)} job(s) as SLURM array(s) {', '.join(ids)}; run file {run_file[0]}")
    if no_wait:
        log(f"not waiting (--no-wait); `nlbench status --results {results}` shows progress")
        return 0, None
    slurm.wait(entries, report=log)
    rows, done = _finish(jobs, results, {e["key"] for e in entries}, log)
    return (0 if all(r["state"] == "done" for r in rows) else 1), done


def _not_queued(jobs: List[planning.Job], results: Path, log: Log) -> List[planning.Job]:
    """The jobs to submit: not those whose SLURM task of an earlier run-all is still pending or
    running (asked of SLURM: a pending task holds no lock yet), nor those another run holds. When the
    run files name SLURM tasks and SLURM cannot say where they stand, an NLBenchError: never resubmit."""
    live = live_slurm_jobs(results, strict=True)
    for job in jobs:
        if job.key in live:
            entry, state = live[job.key]
            log(f"skipping {job.key}: SLURM task {entry['slurm_job_id']} of an earlier run-all is {state}; "
                "not submitted again")
    held = {job.key: holder for job in jobs
            if job.key not in live and (holder := holder_of(results, job.key)) is not None}
    for key, holder in held.items():
        log(f"skipping {key}: {holder} (another run); not submitted")
    return [job for job in jobs if job.key not in live and job.key not in held]


def guard_summary(jobs: List[planning.Job], done: RecordStore) -> Optional[str]:
    """How many rows the guard stopped, and the GPU-hours that saved (an estimate: the remaining
    iterations and stages on V100s, benchmark/launch/cost.py); None when it stopped none."""
    stopped, hours, unestimated = [], 0.0, 0
    for job in jobs:
        if job.checkpoint_source != "trained":
            continue
        record = done.diverged(job.name, job.profile, job.seed, job.recipe.hash)
        if record is None:
            continue
        at = int(record.stopped_at_iteration)
        stopped.append(f"{job.key} at iter {at}")
        saved = estimate_saved_gpu_hours(job.recipe, job.stages, at)
        if saved is None:
            unestimated += job.recipe.schedule.max_iters - at
        else:
            hours += saved
    if not stopped:
        return None
    text = (f"guard: {len(stopped)} row(s) diverged and were stopped ({'; '.join(stopped)}); "
            f"the stops saved an estimated {hours:.1f} GPU-hours (V100 estimate of the remaining iterations "
            "and stages, benchmark/launch/cost.py)")
    if unestimated:
        text += f"; {unestimated} smoke-size iteration(s) not run have no GPU-hour estimate"
    return text
