"""SLURM launcher (through submitit): the jobs of a run-all as one job array per resource shape.

A cluster profile (``slurm/*.yaml``) says where and how jobs run: partition, account, qos,
constraint, time limit, memory, CPUs per task, how many GPUs a node offers, extra sbatch options
and the array's parallelism cap. What a job needs comes from its recipe: ``runtime.gpus`` GPUs, one
SLURM task (= one torch.distributed rank) per GPU, packed onto as few nodes as the profile allows.
On a CPU cluster (``gpus_per_node: 0``) a job runs ``cpu_tasks`` ranks (1 by default).

Every row of the published table asks for the same 4 GPUs, so a run-all is one array; jobs whose
shapes differ (after ``--set runtime.gpus=...``) go into one array per shape, since an array has one
set of sbatch options. Job ids and log paths go to ``RESULTS/jobs/runs/<run id>.json``.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.errors import NLBenchError, TrainingInterrupted
from benchmark.io.jobenv import job_environment
from benchmark.io.layout import ResultsLayout
from benchmark.launch.sacct import FINAL_STATES, slurm_states
from benchmark.recipe import Recipe, read_yaml_mapping
from benchmark.run.job import Job, Resources, StopFlag, run_job
from benchmark.run.state import JobLog, read_state, write_state

# sbatch refusals worth quoting verbatim (the rest of submitit's message is a Python traceback).
_SUBMIT_HINT = "check the cluster profile against `sinfo` / `scontrol show partition`"


class ClusterProfile(BaseModel):
    """A SLURM cluster profile. Unknown keys are errors (a typo must not silently drop an option)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    # Minutes per job; None: the plan's estimate (x1.5 + 30 min). Requeued jobs start a new allotment.
    timeout_min: Optional[int] = Field(None, gt=0)
    mem_gb: Optional[float] = Field(None, gt=0)  # per node; None: the partition's default
    cpus_per_task: int = Field(1, gt=0)  # data loader workers + 1 is a good value on GPU nodes
    gpus_per_node: int = Field(0, ge=0)  # GPUs one node offers; 0 = CPU-only cluster
    cpu_tasks: int = Field(1, gt=0)  # ranks per job on a CPU-only cluster
    array_parallelism: int = Field(16, gt=0)  # array tasks running at the same time
    max_num_timeout: int = Field(3, ge=0)  # requeues after a time-out (preemptions are not counted)
    signal_delay_s: int = Field(120, ge=0)  # USR2 this long before the time limit: checkpoint + requeue
    job_name: str = "nlbench"
    setup: Tuple[str, ...] = ()  # shell lines before srun, e.g. "module load cuda/12.4"
    additional_parameters: Dict[str, Union[str, int, bool]] = {}  # extra sbatch options, e.g. {exclusive: true}
    python: Optional[str] = None  # interpreter on the nodes; default: the one running nlbench


def load_cluster_profile(path: Union[str, Path]) -> ClusterProfile:
    path = Path(path)
    data = read_yaml_mapping(path)
    if isinstance(data.get("setup"), list):
        data["setup"] = tuple(data["setup"])
    try:
        return ClusterProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        if err["type"] == "extra_forbidden":
            known = ", ".join(ClusterProfile.model_fields)
            raise NLBenchError(f"unknown key; a cluster profile knows: {known}", path, key) from None
        raise NLBenchError(f"{err['msg']} (got {err.get('input')!r})", path, key) from None


def resources_for(profile: ClusterProfile):
    """The rule turning a recipe's GPU count into what one job asks SLURM for."""

    def rule(recipe: Recipe) -> Resources:
        if profile.gpus_per_node == 0:
            return Resources(nodes=1, tasks_per_node=profile.cpu_tasks, gpus_per_node=0)
        gpus = recipe.runtime.gpus
        per_node = min(gpus, profile.gpus_per_node)
        nodes = math.ceil(gpus / per_node)
        if nodes * per_node != gpus:
            raise NLBenchError(f"{recipe.name} needs {gpus} GPUs, which do not split evenly over nodes of "
                               f"{profile.gpus_per_node}", key="gpus_per_node")
        return Resources(nodes=nodes, tasks_per_node=per_node, gpus_per_node=per_node)

    return rule


def _sbatch_parameters(profile: ClusterProfile, res: Resources, time_min: int) -> Dict[str, Any]:
    params: Dict[str, Any] = {
        "job_name": profile.job_name,
        "time": time_min,
        "nodes": res.nodes,
        "ntasks_per_node": res.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "array_parallelism": profile.array_parallelism,
        "signal_delay_s": profile.signal_delay_s,
        "setup": list(profile.setup),
        "additional_parameters": dict(profile.additional_parameters),
        "stderr_to_stdout": False,
    }
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if profile.mem_gb is not None:
        params["mem"] = f"{int(profile.mem_gb * 1024)}M"
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value is not None:
            params[key] = value
    return params


def _group_by_shape(jobs: List[Job]) -> List[List[Job]]:
    groups: Dict[Resources, List[Job]] = {}
    for job in jobs:
        groups.setdefault(job.resources, []).append(job)
    return list(groups.values())


def submit(jobs: List[Job], profile: ClusterProfile, profile_path: Union[str, Path],
           results_dir: Path, record: Optional[Callable[[List[Dict[str, Any]]], None]] = None
           ) -> List[Dict[str, Any]]:
    """Submit ``jobs`` as job array(s); returns one entry per job: its dict plus SLURM id and log paths.
    ``record`` is given every entry so far after each array goes out, so that what was submitted is
    on disk even when a later array is refused or the command is killed.

    sbatch's refusal (a GPU asked of a CPU cluster, an unknown partition or account, ...) becomes an
    NLBenchError quoting SLURM's message; arrays already submitted before it are kept and reported.
    """
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    folder = ResultsLayout(results_dir).slurm
    entries: List[Dict[str, Any]] = []
    for group in _group_by_shape(jobs):
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_num_timeout,
                                          python=profile.python or sys.executable)
        # One array has one time limit: the longest of its jobs'.
        executor.update_parameters(**_sbatch_parameters(profile, group[0].resources,
                                                        max(j.time_limit_min for j in group)))
        submitted = []
        try:
            with executor.batch():
                for job in group:
                    submitted.append(executor.submit(SlurmJob(job)))
        except (FailedJobError, FailedSubmissionError, subprocess.CalledProcessError) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            already = f" ({len(entries)} job(s) of an earlier array were submitted)" if entries else ""
            raise NLBenchError(f"sbatch refused the job array: {message}{already}; {_SUBMIT_HINT}",
                               profile_path) from None
        except FileNotFoundError as exc:
            raise NLBenchError(f"cannot run sbatch ({exc.strerror}): is this a SLURM login node?",
                               key="--launcher") from None
        for job, sj in zip(group, submitted):
            layout = ResultsLayout(Path(results_dir).resolve())  # run-file paths relative to it: it can move
            entries.append({**job.to_dict(), "slurm_job_id": sj.job_id,
                            "stdout": layout.relative(Path(sj.paths.stdout).resolve()),
                            "stderr": layout.relative(Path(sj.paths.stderr).resolve())})
        if record is not None:
            record(list(entries))
    return entries


def wait(entries: List[Dict[str, Any]], poll_s: float = 5.0, timeout_s: Optional[float] = None,
         report=print) -> Dict[str, str]:
    """Block until every submitted job has left SLURM's queue; returns {job key: final SLURM state}.

    Reads states with sacct (what submitit itself uses); a requeued job shows PENDING/REQUEUED again
    and is waited for. Prints one line whenever a job's state changes.
    """
    ids = [e["slurm_job_id"] for e in entries]
    seen: Dict[str, str] = {}
    started = time.monotonic()
    final_before = False
    while True:
        states = slurm_states(ids)
        for e in entries:
            # sacct knows a job a moment after sbatch returns.
            state = states.get(e["slurm_job_id"], ("SUBMITTED", 0))[0]
            if seen.get(e["key"]) != state:
                seen[e["key"]] = state
                report(f"  {e['slurm_job_id']:>10}  {state:<10} {e['key']}")
        # Two polls in a row: sacct can lag behind a requeue for a moment.
        final = all(s in FINAL_STATES for s in seen.values())
        if final and final_before:
            return seen
        final_before = final
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise NLBenchError(f"gave up waiting after {timeout_s:.0f} s; jobs keep running "
                               "(`nlbench status` shows them)")
        time.sleep(poll_s)



# ----------------------------------------------------------------------------- what runs on the node

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; keeps `import` of this module cheap to fail
    _Checkpointable = object  # type: ignore[assignment,misc]


PREEMPT_USR2_WAIT_S = 3.0  # after a SIGTERM, how long a preemption's USR2 may take to follow it


def _wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class SlurmJob(_Checkpointable):
    """What the SLURM launcher submits: one task of the array, one rank per SLURM task.

    On preemption or time-out submitit calls ``checkpoint()``; returning a resubmission of ``self``
    makes submitit requeue the same array task, which then skips the finished stages and resumes
    training from the last ``latest.pth``.
    """

    def __init__(self, job: Job):
        self.job = job

    def _results_gone(self) -> bool:
        """Whether the results folder has moved (or gone) since submission, said in one line of the
        SLURM log. This task's paths are absolute and the writes make their folders: writing on
        would rebuild the old folder, half a campaign apart from the moved one (README: moving a
        results folder)."""
        runs = ResultsLayout(Path(self.job.results_dir)).runs
        if runs.is_dir():
            return False
        print(f"nlbench job {self.job.key}: {runs} is gone (the results folder was moved or deleted after "
              "submission); nothing run or written: run run-all again in the moved folder", flush=True)
        return True

    def __call__(self) -> Dict[str, str]:
        import submitit

        if self._results_gone():
            return {}
        # torchrun's variable names, which the engine's init_distributed reads (env://).
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=self.job.resources.gpus_per_node > 0, overwrite=True)
        # submitit's USR2 handler (checkpoint() + requeue) would stop training mid-step; during
        # training the signal only raises a flag, the train loop saves at the next iteration
        # boundary, and then submitit's handler runs as usual.
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        if not callable(submitit_handler):
            return run_job(self.job)
        stop = StopFlag()
        terminated: List[int] = []
        usr2: List[int] = []

        def on_usr2(signum: int, frame: Any) -> None:
            usr2.append(signum)
            if stop.armed:
                stop.request()
            else:
                submitit_handler(signum, frame)

        def on_term(signum: int, frame: Any) -> None:
            # scancel and `scontrol requeue` send SIGTERM, which submitit ignores; SLURM kills the job
            # KillWait seconds later. Training saves at the next iteration boundary; any other stage
            # stops now (it has nothing to save), unless a preemption's USR2 follows.
            terminated.append(signum)
            if stop.armed:
                stop.request()
            elif not _wait_for(lambda: bool(usr2), PREEMPT_USR2_WAIT_S):
                self._cancelled(None)

        signal.signal(signal.SIGUSR2, on_usr2)
        signal.signal(signal.SIGTERM, on_term)
        try:
            return run_job(self.job, stop)
        except TrainingInterrupted as exc:
            # A preemption sends SIGTERM and then USR2 (requeue); SIGTERM alone is scancel or a
            # requeue by hand: cancelled. The USR2 of a preemption is given a moment to arrive.
            if terminated and not _wait_for(lambda: bool(usr2), PREEMPT_USR2_WAIT_S):
                self._cancelled(exc.iteration)
            submitit_handler(signal.SIGUSR2, None)  # rank 0: checkpoint() + requeue + exit
            # Other ranks must not exit first (that could end the step before rank 0 requeues, as
            # submitit warns); SLURM stops them when the job is requeued.
            while True:
                time.sleep(60)

    def _cancelled(self, iteration: Optional[int]) -> None:
        """SIGTERM: say so in the job's log and state (status: cancelled), and end the process. SLURM
        requeues the task itself after ``scontrol requeue``; it then resumes from latest.pth."""
        work = Path(self.job.work_dir)
        if job_environment().is_main and not self._results_gone():
            state = read_state(work) or {}
            saved = f"saved latest.pth at iter {iteration}" if iteration is not None else "nothing to save"
            message = f"stopped by SIGTERM (scancel, or a requeue by hand) in stage {state.get('stage')}: {saved}"
            JobLog(work)(message)
            write_state(work, "cancelled", stage=state.get("stage"), key=self.job.key, error=message)
        raise SystemExit(128 + signal.SIGTERM)  # not a failure of the job (run_job lets SystemExit pass)

    def checkpoint(self, *args: Any, **kwargs: Any):
        work = Path(self.job.work_dir)
        env = job_environment()
        if env.is_main and not self._results_gone():
            JobLog(work)(f"interrupted by SLURM (preemption or time limit) during attempt {env.attempt}: "
                         "requeueing; training resumes from latest.pth")
            state = read_state(work) or {}
            write_state(work, "requeued", stage=state.get("stage"), key=self.job.key)
        return super().checkpoint(*args, **kwargs)  # type: ignore[misc]
