"""One job: train -> eval -> eval ms+flip -> bench for one row and seed, restartable at any point.

Each stage ends by writing its result record; a stage whose record already exists is skipped, so a
job that was requeued (SLURM preemption or time limit) or simply started again continues where it
stopped, and training resumes from ``latest.pth``. The same function runs in every rank of a
multi-process job; only rank 0 writes records, the state file and the job log.

Files in the job's work dir (besides the engine's checkpoints and ``train.log.jsonl``):
  job.log          human-readable log of this job (every attempt appends)
  job_state.json   {"state": running|done|failed|requeued, "stage", "attempt", "slurm_job_id", ...}

``python -m benchmark.launch.job JOB.json`` runs a job described by ``Job.to_dict()``; the local
launcher starts it that way under ``torch.distributed.run`` when the machine has several GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from benchmark.errors import NLBenchError, TrainingInterrupted
from benchmark.launch.plan import Job, Resources, record_kinds
from benchmark.recipe import load_recipe

JOB_LOG = "job.log"
STATE_FILE = "job_state.json"


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JobLog:
    """Appends timestamped lines to ``job.log`` (rank 0 only) and echoes them to stdout."""

    def __init__(self, work_dir: Path, enabled: bool = True):
        self.path = work_dir / JOB_LOG
        self.enabled = enabled
        if enabled:
            work_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        for line in str(message).splitlines() or [""]:
            text = f"{_now()} {line}"
            print(text, flush=True)
            # One write() per line with O_APPEND: lines from a killed process are never torn.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (text + "\n").encode())
            finally:
                os.close(fd)


def read_state(work_dir: os.PathLike | str) -> Optional[Dict[str, Any]]:
    """The job's state file, or None when absent or unreadable (a job that never started)."""
    try:
        return json.loads((Path(work_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_state(work_dir: Path, state: str, **fields: Any) -> None:
    from benchmark.checkpoint import atomic_write_text

    body = {
        "state": state,
        "updated_at": _now(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": _slurm_job_id(),
        "attempt": attempt_number(),
        **fields,
    }
    atomic_write_text(work_dir / STATE_FILE, json.dumps(body, indent=2) + "\n")


def _slurm_job_id() -> Optional[str]:
    """``<array job>_<task>`` inside an array task, else the plain job id (None outside SLURM)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def attempt_number() -> int:
    """1 for a first start; SLURM counts requeues in SLURM_RESTART_COUNT."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) + 1
    except ValueError:
        return 1


def _gpu_hours(wall_s: float, result: Dict[str, Any]) -> Optional[float]:
    if result.get("device_type") != "cuda":
        return None
    return wall_s * int(result.get("world_size") or 1) / 3600.0


def _record(job: Job, kind: str, result: Dict[str, Any], checkpoint: Optional[str], **fields: Any) -> Dict[str, Any]:
    from benchmark.report.records import provenance

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
        "provenance": provenance(job.recipe, device=result.get("device"), dtype=result.get("dtype", "float32"),
                                 checkpoint=checkpoint),
    }
    body.update(fields)
    return body


def _metrics(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: result[k] for k in ("aAcc", "mIoU", "mAcc", "per_class") if k in result}


# Set while the train stage runs, so a SLURM USR2 can be deferred to the next iteration boundary.
_TRAINING = threading.Event()
_STOP = threading.Event()


def _stage_train(job: Job, log: JobLog) -> Dict[str, Any]:
    from benchmark.engine.train import LATEST, train

    resume = (Path(job.work_dir) / LATEST).exists()
    log(f"train: {'resuming from latest.pth' if resume else 'from scratch'}")
    _TRAINING.set()
    try:
        result = train(job.recipe, job.work_dir, resume=resume, device=job.device, data_root=job.data_root,
                       log=log if log.enabled else (lambda _msg: None), stop_requested=_STOP.is_set)
    finally:
        _TRAINING.clear()
    extra = {"mem_gb": result.get("peak_mem_gb"), "mem_kind": result.get("mem_kind"),
             "metrics": result.get("metrics"), "start_iteration": result.get("start_iteration")}
    return _record(job, "train", result, result.get("checkpoint"), **extra)


def _checkpoint_path(job: Job) -> str:
    from benchmark.engine.train import LATEST

    path = Path(job.work_dir) / LATEST
    if not path.exists():
        raise NLBenchError("no trained checkpoint to evaluate (did the train stage run?)", path)
    return str(path)


def _stage_eval(job: Job, log: JobLog, ms_flip: bool) -> Dict[str, Any]:
    from benchmark.engine.evaluate import evaluate

    checkpoint = _checkpoint_path(job)
    result = evaluate(job.recipe, checkpoint, ms_flip=ms_flip, data_root=job.data_root, device=job.device,
                      progress=False)
    log(f"{'eval ms+flip' if ms_flip else 'eval'}: aAcc {result['aAcc']:.2f}  mIoU {result['mIoU']:.2f}  "
        f"mAcc {result['mAcc']:.2f}")
    return _record(job, "eval_ms_flip" if ms_flip else "eval", result, checkpoint, metrics=_metrics(result))


def _stage_bench(job: Job, log: JobLog) -> Dict[str, Any]:
    from benchmark.engine.bench import bench

    checkpoint = _checkpoint_path(job)
    result = bench(job.recipe, checkpoint=checkpoint, device=job.device, data_root=job.data_root)
    log(f"bench: {result.get('fps', float('nan')):.2f} fps, mem {result.get('mem_gb')} GB")
    return _record(job, "bench", result, checkpoint, fps=result.get("fps"), mem_gb=result.get("mem_gb"),
                   mem_kind=result.get("mem_kind"))


_STAGES: Dict[str, Callable[[Job, JobLog], Dict[str, Any]]] = {
    "train": _stage_train,
    "eval": lambda job, log: _stage_eval(job, log, ms_flip=False),
    "eval_ms_flip": lambda job, log: _stage_eval(job, log, ms_flip=True),
    "bench": _stage_bench,
}


def run_job(job: Job) -> Dict[str, str]:
    """Run the job's pending stages in order; returns {kind: record path} of the records written."""
    from benchmark.data.synthetic import ensure_dataset
    from benchmark.engine import distributed
    from benchmark.report.records import write_record

    main = _rank() == 0
    work = Path(job.work_dir)
    log = JobLog(work, enabled=main)
    # Decided once, before any work, so that every rank runs the same stages.
    done = record_kinds(job.results_dir, job.name, job.profile, job.seed, job.recipe.hash)
    pending: List[str] = [s for s in job.stages if s not in done]
    written: Dict[str, str] = {}
    if main:
        log(f"job {job.key} attempt {attempt_number()} on {socket.gethostname()} "
            f"(slurm job {_slurm_job_id() or '-'}, world size {os.environ.get('WORLD_SIZE', '1')}); "
            f"stages to run: {', '.join(pending) or 'none'}")
        write_state(work, "running", stage=pending[0] if pending else None, key=job.key)
    stage = None
    try:
        if main and pending:
            ensure_dataset(job.recipe.data, job.data_root)
        for stage in pending:
            if main:
                write_state(work, "running", stage=stage, key=job.key)
            started = time.perf_counter()
            if stage == "bench":
                # Bench measures one device, as published: rank 0 alone, after every rank has left
                # the process group.
                distributed.barrier()
                distributed.cleanup()
                if not main:
                    continue
                with _single_process_env():
                    record = _STAGES[stage](job, log)
            else:
                record = _STAGES[stage](job, log)
            if main:
                written[stage] = str(write_record(job.results_dir, record))
                log(f"{stage}: done in {time.perf_counter() - started:.1f} s; record {written[stage]}")
        if main:
            write_state(work, "done", stage=None, key=job.key)
            log(f"job {job.key}: all stages done")
        return written
    except TrainingInterrupted:
        raise  # not a failure: the caller requeues the job, which resumes from the saved checkpoint
    except Exception as exc:  # a SystemExit from submitit's requeue is not a failure: not caught here
        if main:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
            log(f"FAILED in stage {stage}: {message}")
            log(traceback.format_exc().rstrip())
            write_state(work, "failed", stage=stage, key=job.key, error=message)
        raise
    finally:
        distributed.cleanup()


class _single_process_env:
    """Hide the multi-rank variables while rank 0 benchmarks alone (the engine would otherwise join
    a process group the other ranks have left)."""

    NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

    def __enter__(self) -> None:
        self.saved = {k: os.environ.pop(k) for k in self.NAMES if k in os.environ}

    def __exit__(self, *exc: Any) -> None:
        os.environ.update(self.saved)


# ----------------------------------------------------------------------------- SLURM entry point

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; keeps `import` of this module cheap to fail
    _Checkpointable = object  # type: ignore[assignment,misc]


class SlurmJob(_Checkpointable):
    """What the SLURM launcher submits: one task of the array, one rank per SLURM task.

    On preemption or time-out submitit calls ``checkpoint()``; returning a resubmission of ``self``
    makes submitit requeue the same array task, which then skips the finished stages and resumes
    training from the last ``latest.pth``.
    """

    def __init__(self, job: Job):
        self.job = job

    def __call__(self) -> Dict[str, str]:
        import submitit

        # torchrun's variable names, which the engine's init_distributed reads (env://).
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=self.job.resources.gpus_per_node > 0, overwrite=True)
        # submitit's USR2 handler (checkpoint() + requeue) would stop training mid-step; during
        # training the signal only raises a flag, the train loop saves at the next iteration
        # boundary, and then submitit's handler runs as usual.
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        if not callable(submitit_handler):
            return run_job(self.job)

        def on_usr2(signum: int, frame: Any) -> None:
            if _TRAINING.is_set():
                _STOP.set()
            else:
                submitit_handler(signum, frame)

        signal.signal(signal.SIGUSR2, on_usr2)
        try:
            return run_job(self.job)
        except TrainingInterrupted:
            submitit_handler(signal.SIGUSR2, None)  # rank 0: checkpoint() + requeue + exit
            # Other ranks must not exit first (that could end the step before rank 0 requeues, as
            # submitit warns); SLURM stops them when the job is requeued.
            while True:
                time.sleep(60)

    def checkpoint(self, *args: Any, **kwargs: Any):
        work = Path(self.job.work_dir)
        if _rank() == 0:
            JobLog(work)(f"interrupted by SLURM (preemption or time limit) during attempt {attempt_number()}: "
                         "requeueing; training resumes from latest.pth")
            state = read_state(work) or {}
            write_state(work, "requeued", stage=state.get("stage"), key=self.job.key)
        return super().checkpoint(*args, **kwargs)  # type: ignore[misc]


# ----------------------------------------------------------------------------- local multi-GPU entry point


def job_from_dict(d: Dict[str, Any], results_dir: Optional[str] = None) -> Job:
    """Rebuild a Job from ``Job.to_dict()`` (the recipe is loaded again from its file)."""
    overrides = list(d.get("overrides", []))
    recipe = load_recipe(d["recipe_source"], [*overrides, f"runtime.seed={d['seed']}"], profile=d["profile"])
    return Job(
        recipe=recipe,
        seed=int(d["seed"]),
        stages=tuple(d["stages"]),
        results_dir=results_dir or d["results_dir"],
        work_dir=d["work_dir"],
        data_root=d["data_root"],
        resources=Resources(int(d["nodes"]), int(d["tasks_per_node"]), int(d["gpus_per_node"])),
        time_limit_min=int(d["time_limit_min"]),
        gpu_hours=d.get("gpu_hours_estimate"),
        overrides=tuple(overrides),
        device=d.get("device", "auto"),
    )


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmark.launch.job JOB.json", file=sys.stderr)
        return 2
    try:
        job = job_from_dict(json.loads(Path(argv[0]).read_text()))
        run_job(job)
    except NLBenchError as exc:
        print(f"nlbench job: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
