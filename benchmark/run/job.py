"""One job: train -> eval -> eval ms+flip -> bench for one row and seed, restartable at any point.

Each stage ends by writing its result record; a stage whose record already exists is skipped, so a
job that was requeued (SLURM preemption or time limit) or simply started again continues where it
stopped, and training resumes from ``latest.pth``. The same function runs in every rank of a
multi-process job; only rank 0 writes records, the state file and the job log.

Rank 0 holds the job's lock (``benchmark.run.lock``) from before it lists the missing stages until
the job ends, so two run-alls into one results folder never run the same stage twice: the second
finds the job held and skips it (the local launcher waits for it instead). When any rank fails,
``engine.distributed`` stops the others within seconds; rank 0 notes it in the state file.

The train record covers every attempt of the run (engine/attempts.py): ``wall_time_s`` and
``gpu_hours`` are summed over the attempts, ``mem_gb`` is the largest peak of any attempt, and
``attempts`` counts them.

Rank 0 writes the resolved recipe into the work dir (``recipe.yaml``) each time the job starts, as
MMSeg keeps its config beside a run: what ran is read from the run itself, not from a recipe file
that may have changed since.

A job on a released checkpoint (``checkpoint_source="released"``) has no train stage: it evaluates
and benchmarks MMSeg's released file of the row, and its records say so.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from benchmark.errors import NLBenchError, RunDiverged, TrainingInterrupted
from benchmark.io.jobenv import JobEnvironment, job_environment, single_process_env
from benchmark.io.layout import ResultsLayout, source_part
from benchmark.recipe import Recipe, load_recipe, recipe_from_dict, write_resolved_recipe
from benchmark.run.lock import JobHeld, JobLock
from benchmark.run.records import CheckpointSource, RecordStore, provenance, write_record
from benchmark.run.state import JobLog, read_state, write_state


@dataclass(frozen=True)
class Resources:
    """What one job asks for: ``nodes`` x ``tasks_per_node`` ranks, one GPU per rank (0 = CPU)."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        if self.gpus_per_node == 0:
            return f"cpu x{self.world_size}"
        return f"{self.nodes}n x {self.gpus_per_node} GPU"


@dataclass(frozen=True)
class Job:
    """One row and seed: everything a worker needs, picklable (submitit sends it to the node)."""

    recipe: Recipe  # resolved, with runtime.seed set to ``seed``
    seed: int
    stages: Tuple[str, ...]
    results_dir: str  # absolute
    work_dir: str  # absolute: RESULTS/work/<profile>/<recipe>/seed<k>-<recipe hash12>
    data_root: str  # absolute, resolved where the plan was made (jobs may start elsewhere)
    resources: Resources
    time_limit_min: int
    gpu_hours: Optional[float]  # estimate (V100), None for smoke-size models
    overrides: Tuple[str, ...] = ()
    device: str = "auto"
    # "trained": the job's own train stage makes the checkpoint; "released": MMSeg's released file
    # of the row is evaluated (no train stage), fetched from ``cache_dir`` (absolute; None: the default).
    checkpoint_source: str = "trained"
    cache_dir: Optional[str] = None

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def profile(self) -> str:
        return self.recipe.profile

    @property
    def key(self) -> str:
        """Stable identity of a job across runs: <profile>/<recipe>/seed<k>, and
        <profile>/<recipe>/released/seed<k> for a released checkpoint's."""
        return f"{self.profile}/{self.name}/{source_part(self.checkpoint_source)}seed{self.seed}"

    def to_dict(self) -> Dict[str, object]:
        """JSON-able summary kept under RESULTS/jobs/ (status reads it). It carries the resolved recipe
        (``recipe_resolved``), so the job runs what was planned even when its file is edited meanwhile,
        and paths inside the results folder relative to it (``work_dir``), so the folder can be moved."""
        return {
            "key": self.key, "recipe": self.name, "recipe_source": self.recipe.source,
            "recipe_hash": self.recipe.hash, "profile": self.profile, "seed": self.seed,
            "stages": list(self.stages), "max_iters": self.recipe.schedule.max_iters,
            "results_dir": self.results_dir, "work_dir": ResultsLayout.of(self.results_dir).relative(self.work_dir),
            "data_root": self.data_root,
            "nodes": self.resources.nodes, "tasks_per_node": self.resources.tasks_per_node,
            "gpus_per_node": self.resources.gpus_per_node, "time_limit_min": self.time_limit_min,
            "gpu_hours_estimate": self.gpu_hours, "overrides": list(self.overrides), "device": self.device,
            "checkpoint_source": self.checkpoint_source, "cache_dir": self.cache_dir,
            "recipe_resolved": self.recipe.to_dict(),
        }


def job_from_dict(d: Dict[str, Any], results_dir: Optional[str] = None) -> Job:
    """Rebuild a Job from ``Job.to_dict()``: the planned recipe (``recipe_resolved``; an older file
    without it loads the recipe file again, which must still resolve to the planned hash). A
    relative ``work_dir`` is inside ``results_dir`` (default: the one the dict names)."""
    overrides = list(d.get("overrides", []))
    results = results_dir or d["results_dir"]
    return Job(
        recipe=planned_recipe(d),
        seed=int(d["seed"]),
        stages=tuple(d["stages"]),
        results_dir=results,
        work_dir=str(ResultsLayout.of(results).absolute(d["work_dir"])),
        data_root=d["data_root"],
        resources=Resources(int(d["nodes"]), int(d["tasks_per_node"]), int(d["gpus_per_node"])),
        time_limit_min=int(d["time_limit_min"]),
        gpu_hours=d.get("gpu_hours_estimate"),
        overrides=tuple(overrides),
        device=d.get("device", "auto"),
        checkpoint_source=source_of(d),
        cache_dir=d.get("cache_dir"),
    )


def planned_recipe(d: Dict[str, Any]) -> Recipe:
    """The recipe a job was planned with; NLBenchError when what would run is not what was planned."""
    if d.get("recipe_resolved") is not None:
        recipe = recipe_from_dict(d["recipe_resolved"])
    else:
        recipe = load_recipe(d["recipe_source"], [*d.get("overrides", []), f"runtime.seed={d['seed']}"],
                             profile=d["profile"])
    planned = d.get("recipe_hash")
    if planned and recipe.hash != planned:
        raise NLBenchError(f"the recipe resolves to hash {recipe.hash[:12]}, not the planned {str(planned)[:12]} "
                           "(its file was edited after the plan): run `nlbench run-all` again to plan the edited "
                           "recipe", d.get("recipe_source"), "recipe_hash")
    return recipe


def source_of(entry: Dict[str, Any]) -> str:
    """The checkpoint source a job's dict (``Job.to_dict``, a run file's entry, a status row) names; one
    written before there was a released source says nothing: trained, as a record without the field."""
    return entry.get("checkpoint_source") or CheckpointSource.TRAINED.value


class StopFlag:
    """A stop request for the train stage (a SLURM USR2): ``armed`` while training runs, so the signal
    can be deferred to the next iteration boundary; ``requested`` once it came."""

    def __init__(self) -> None:
        self._armed = threading.Event()
        self._requested = threading.Event()

    @property
    def armed(self) -> bool:
        return self._armed.is_set()

    def request(self) -> None:
        self._requested.set()

    def requested(self) -> bool:
        return self._requested.is_set()

    @contextlib.contextmanager
    def arming(self) -> Iterator[None]:
        self._armed.set()
        try:
            yield
        finally:
            self._armed.clear()


# ----------------------------------------------------------------------------- stages


def _gpu_hours(wall_s: float, result: Dict[str, Any]) -> Optional[float]:
    from benchmark.engine.attempts import gpu_hours

    return gpu_hours(wall_s, result.get("device_type"), int(result.get("world_size") or 1))


def _record(job: Job, kind: str, result: Dict[str, Any], checkpoint: Optional[str], **fields: Any) -> Dict[str, Any]:
    wall = float(result.get("wall_time_s") or 0.0)
    body = {
        "kind": kind,
        "recipe": job.name,
        "profile": job.profile,
        "seed": job.seed,
        "iterations": job.recipe.schedule.max_iters,
        "wall_time_s": wall,
        "gpu_hours": _gpu_hours(wall, result),
        "metrics": None,
        "mem_gb": None,
        "fps": None,
        # The data root is not part of the recipe hash (the same dataset moved is the same run): said here.
        "provenance": {**provenance(job.recipe, device=result.get("device"), dtype=result.get("dtype", "float32"),
                                    checkpoint=checkpoint), "data_root": job.data_root},
        "deviations": _deviations(job, result.get("device_name")),
    }
    body.update(fields)
    return body


def _deviations(job: Job, device_name: Optional[str]) -> List[str]:
    """How this job's run differs from the published one (run/deviations.py): the training's world size
    is the one the launcher gave the job; the device is the stage's own."""
    from benchmark.run.deviations import deviations

    trained = job.checkpoint_source == "trained"
    return deviations(job.recipe, job.resources.world_size, device_name, trained=trained,
                      counts=_counts(job.recipe.data, job.data_root),
                      pretrained_sha256=_pretrained_sha256(job.recipe.model.pretrained) if trained else None)


@functools.lru_cache(maxsize=8)
def _counts(data: Any, root: str) -> Optional[Dict[str, int]]:
    from benchmark.data.checks import dataset_counts

    return dataset_counts(data, root)


@functools.lru_cache(maxsize=8)
def _pretrained_sha256(source: Optional[str]) -> Optional[str]:
    """The pretrained file's sha256 when the train stage has it at hand (cached or local), else None."""
    from benchmark.engine.pretrained import cached_pretrained
    from benchmark.io.files import file_sha256

    path = cached_pretrained(source) if source else None
    return file_sha256(path) if path is not None else None


def _source_fields(job: Job) -> Dict[str, Any]:
    """What eval and bench records say about where their checkpoint came from."""
    fields: Dict[str, Any] = {"checkpoint_source": job.checkpoint_source}
    release = job.recipe.release
    if job.checkpoint_source == "released" and release is not None:
        fields["checkpoint_release"] = {"url": release.url, "stamp": release.stamp}
    return fields


def _metrics(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: result[k] for k in ("aAcc", "mIoU", "mAcc", "per_class") if k in result}


def _stage_train(job: Job, log: JobLog, stop: StopFlag) -> Dict[str, Any]:
    from benchmark.engine.train import train
    from benchmark.engine.train_checkpoints import has_checkpoint

    work = Path(job.work_dir)
    resume = has_checkpoint(work)
    saved = "latest.pth" if (work / "latest.pth").exists() else "the newest iter_N.pth (no latest.pth)"
    log(f"train: {f'resuming from {saved}' if resume else 'from scratch'}")
    started = time.perf_counter()
    try:
        with stop.arming():
            result = train(job.recipe, job.work_dir, resume=resume, device=job.device, data_root=job.data_root,
                           log=log if log.enabled else (lambda _msg: None), stop_requested=stop.requested)
    except RunDiverged as exc:
        return _diverged_record(job, exc, time.perf_counter() - started)
    # Every attempt of the run counts: time and GPU-hours summed, memory the largest peak.
    extra = {"wall_time_s": result.get("total_wall_time_s", result.get("wall_time_s")),
             "gpu_hours": result.get("total_gpu_hours"), "attempts": result.get("attempts", 1),
             "mem_gb": result.get("max_peak_mem_gb", result.get("peak_mem_gb")), "mem_kind": result.get("mem_kind"),
             "metrics": result.get("metrics"), "start_iteration": result.get("start_iteration"),
             "status": "completed", "guard": result.get("guard")}
    return _record(job, "train", result, result.get("checkpoint"), **extra)


def _diverged_record(job: Job, exc: RunDiverged, wall_s: float) -> Dict[str, Any]:
    """The train record of a run the guard stopped: its evidence, where it stopped, its checkpoint,
    and what its attempts cost (``attempts.json``; this attempt's wall time when there is none)."""
    from benchmark.engine.attempts import read_attempts, totals
    from benchmark.engine.distributed import resolve_device
    from benchmark.engine.train import LATEST

    device = resolve_device(job.device, job_environment().local_rank)
    latest = Path(job.work_dir) / LATEST
    spent = totals(read_attempts(Path(job.work_dir)))
    result = {"wall_time_s": spent.get("total_wall_time_s") or wall_s, "device": str(device),
              "device_type": device.type, "world_size": job.resources.world_size}
    return _record(job, "train", result, str(latest) if latest.exists() else None, status="diverged",
                   guard=exc.evidence, stopped_at_iteration=exc.iteration, iterations=exc.iteration,
                   gpu_hours=spent.get("total_gpu_hours"),
                   attempts=spent.get("attempts", 1), mem_gb=spent.get("max_peak_mem_gb"))


def _checkpoint_path(job: Job) -> str:
    from benchmark.engine.train import LATEST
    from benchmark.engine.train_checkpoints import verify_checkpoint

    if job.checkpoint_source == "released":
        from benchmark.mmseg_checkpoint import fetch_released

        # run-all fetched it before the job started; this finds it in the cache (hash-checked).
        return str(fetch_released(job.recipe, cache_dir=job.cache_dir, progress=False))
    path = Path(job.work_dir) / LATEST
    if not path.exists():
        raise NLBenchError("no trained checkpoint to evaluate (did the train stage run?)", path)
    return str(verify_checkpoint(path))


def _stage_eval(job: Job, log: JobLog, ms_flip: bool) -> Dict[str, Any]:
    from benchmark.engine.evaluate import evaluate

    checkpoint = _checkpoint_path(job)
    result = evaluate(job.recipe, checkpoint, ms_flip=ms_flip, data_root=job.data_root, device=job.device,
                      progress=False)
    log(f"{'eval ms+flip' if ms_flip else 'eval'}: aAcc {result['aAcc']:.2f}  mIoU {result['mIoU']:.2f}  "
        f"mAcc {result['mAcc']:.2f}")
    return _record(job, "eval_ms_flip" if ms_flip else "eval", result, checkpoint, metrics=_metrics(result),
                   **_source_fields(job))


def _stage_bench(job: Job, log: JobLog) -> Dict[str, Any]:
    from benchmark.engine.bench import bench

    checkpoint = _checkpoint_path(job)
    result = bench(job.recipe, checkpoint=checkpoint, device=job.device, data_root=job.data_root, warn=log)
    fast = result.get("fast")
    log(f"bench: {_bench_figures(result)}" + (f" (published setting); fast setting: {_bench_figures(fast)}"
                                               if fast else ""))
    record = _record(job, "bench", result, checkpoint, fps=result.get("fps"), mem_gb=result.get("mem_gb"),
                     mem_kind=result.get("mem_kind"), fast=fast, **_source_fields(job))
    record["provenance"]["measurement"] = result.get("measurement")  # what each setting ran with
    return record


def _bench_figures(result: Dict[str, Any]) -> str:
    """'76.74 fps, Mem 0.7 GB (peak_rss)': rounded as the tables print them."""
    fps, mem = result.get("fps"), result.get("mem_gb")
    fps_text = f"{fps:.2f} fps" if fps is not None else "fps not measured"
    kind = result.get("mem_kind") or "unknown kind"
    mem_text = f"Mem {mem:.1f} GB ({kind})" if mem is not None else "Mem not measured"
    return f"{fps_text}, {mem_text}"


def _run_stage(job: Job, stage: str, log: JobLog, stop: StopFlag) -> Optional[Dict[str, Any]]:
    """The stage's record (None on ranks that write none)."""
    from benchmark.engine import distributed

    if stage == "train":
        if job.checkpoint_source != "trained":
            raise NLBenchError(f"a job on the {job.checkpoint_source} checkpoint has no train stage", key="stages")
        return _stage_train(job, log, stop)
    if stage in ("eval", "eval_ms_flip"):
        return _stage_eval(job, log, ms_flip=stage == "eval_ms_flip")
    # Bench measures one device, as published: rank 0 alone, after every rank has left the process group.
    distributed.barrier()
    distributed.cleanup()
    if not log.enabled:
        return None
    with single_process_env():
        return _stage_bench(job, log)


# ----------------------------------------------------------------------------- the job


def run_job(job: Job, stop: Optional[StopFlag] = None) -> Dict[str, str]:
    """Run the job's pending stages in order; returns {kind: record path} of the records written.

    Rank 0 holds the job's lock (run/lock.py) while it runs; when another run holds it, the job is
    skipped (that run does its stages) and {} is returned."""
    from benchmark.engine import distributed

    stop = stop or StopFlag()
    env = job_environment()
    work = Path(job.work_dir)
    log = JobLog(work, enabled=env.is_main)
    lock = JobLock(ResultsLayout.of(job.results_dir).lock_file(job.key),
                   what=f"slurm job {env.job_id}" if env.job_id else "nlbench job")
    written: Dict[str, str] = {}
    stage = None
    try:
        pending = _claim(job, env, lock, log)
        if pending is None:
            return written
        if env.is_main:
            log(f"job {job.key} attempt {env.attempt} on {env.hostname} (slurm job {env.job_id or '-'}, "
                f"world size {env.world_size}); stages to run: {', '.join(pending) or 'none'}")
            write_state(work, "running", stage=pending[0] if pending else None, key=job.key)
            save_recipe(job)
            distributed.on_abort(lambda text: _note_stopped(work, job, text, log))
        for stage in pending:
            if _run_one(job, stage, log, stop, written) == "diverged":
                _note_diverged(work, job, log if env.is_main else None)
                return written
        if env.is_main:
            write_state(work, "done", stage=None, key=job.key)
            log(f"job {job.key}: all stages done")
        return written
    except TrainingInterrupted:
        raise  # not a failure: the caller requeues the job, which resumes from the saved checkpoint
    except (Exception, KeyboardInterrupt) as exc:  # a SystemExit from submitit's requeue is not a failure
        distributed.report_failure(exc)  # the other ranks stop within seconds, not at a timeout
        if env.is_main and isinstance(exc, Exception):
            _note_failure(work, job, stage, exc, log)
        raise
    finally:
        distributed.cleanup()
        if env.is_main:
            lock.release()


def save_recipe(job: Job) -> Path:
    """WORK_DIR/recipe.yaml: the job's resolved recipe (profile, overrides and seed applied)."""
    sets = " ".join(f"--set {o}" for o in job.overrides) or "none"
    return write_resolved_recipe(job.recipe, job.work_dir, f"job {job.key}; overrides: {sets}")


def _claim(job: Job, env: JobEnvironment, lock: JobLock, log: JobLog) -> Optional[List[str]]:
    """Rank 0 takes the job's lock and lists the stages that have no record yet; every rank gets
    that list, so all run the same stages. None: another run holds the job."""
    from benchmark.engine import distributed

    pending = None
    if env.is_main:
        try:
            lock.acquire()
        except JobHeld as held:
            log(f"job {job.key}: {held}; skipped here: that run does its stages")
        else:
            if lock.took_over is not None:
                log(f"job {job.key}: took over a stale lock ({lock.took_over}, which ended without releasing it)")
            # Decided while holding the lock: what another run finished meanwhile counts as done.
            done = RecordStore.read_row(job.results_dir, job.name, job.profile, job.seed).kinds_done(
                job.name, job.profile, job.seed, job.recipe.hash, job.checkpoint_source)
            pending = [s for s in job.stages if s not in done]
    if env.world_size > 1:
        distributed.init_distributed(job.device)
        pending = distributed.broadcast_object(pending)
    return pending


def _run_one(job: Job, stage: str, log: JobLog, stop: StopFlag, written: Dict[str, str]) -> Optional[str]:
    """Run one stage and write its record; returns the record's ``status`` (train: completed | diverged)."""
    if log.enabled:
        write_state(Path(job.work_dir), "running", stage=stage, key=job.key)
    started = time.perf_counter()
    record = _run_stage(job, stage, log, stop)
    if log.enabled and record is not None:
        written[stage] = str(write_record(job.results_dir, record))
        log(f"{stage}: done in {time.perf_counter() - started:.1f} s; record {written[stage]}")
    return None if record is None else record.get("status")


def _note_diverged(work: Path, job: Job, log: Optional[Callable[[str], None]]) -> None:
    """The guard stopped training: the later stages are not run (their GPU time is saved)."""
    if log is None:
        return
    record = RecordStore.read_row(job.results_dir, job.name, job.profile, job.seed).diverged(
        job.name, job.profile, job.seed, job.recipe.hash)
    message = ((record.guard if record is not None else None) or {}).get("message") or "diverged"
    log(f"job {job.key}: {message}; the guard stopped it (guard.action stop), later stages not run. "
        "`run-all --set guard.action=warn` (or `nlbench train --resume`) continues it")
    write_state(work, "diverged", stage="train", key=job.key, message=message,
                stopped_at=record.stopped_at_iteration if record is not None else None)


def _note_failure(work: Path, job: Job, stage: Optional[str], exc: BaseException, log: Callable[[str], None]) -> None:
    message = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    # Best effort: on a full disk the job log and state file may fail too, and the original error
    # is the one to report.
    with contextlib.suppress(NLBenchError):
        log(f"FAILED in stage {stage}: {message}")
        # The traceback is for the job log; the console has the one line above (and the launcher's).
        log(traceback.format_exc().rstrip(), echo=False)
    with contextlib.suppress(NLBenchError):
        write_state(work, "failed", stage=stage, key=job.key, error=message)


def _note_stopped(work: Path, job: Job, text: str, log: Callable[[str], None]) -> None:
    """Rank 0 stops because another rank failed (called from the rank watch, just before exiting)."""
    stage = (read_state(work) or {}).get("stage")
    log(f"FAILED in stage {stage}: stopped because {text}")
    write_state(work, "failed", stage=stage, key=job.key, error=text)
