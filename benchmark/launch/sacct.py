"""SLURM's accounting as nlbench reads it: ``sacct`` states of job-array tasks, with requeue counts,
the queue itself (``squeue``: what is pending or running now, which sacct can show late), and the one
set of state names each launcher and ``status`` agree on."""

from __future__ import annotations

import getpass
import re
import subprocess
from typing import Dict, Iterable, List, Optional, Tuple

from benchmark.errors import NLBenchError

# A job in one of these has left the queue for good; FAILED_STATES are those that did not succeed.
FAILED_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"})
FINAL_STATES = FAILED_STATES | {"COMPLETED"}
# Waiting to (re)start: a requeued job passes through these.
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                            "PREEMPTED"})

_ARRAY_RANGE = re.compile(r"^(\d+)_\[(.+)\]$")


def _expand_array(job_id: str) -> List[str]:
    """'12_[0-2,5%2]' -> ['12_0', '12_1', '12_2', '12_5']; anything else -> [job_id]."""
    m = _ARRAY_RANGE.match(job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def _ask(command: List[str], strict: bool) -> Optional[str]:
    """``command``'s output; None when it cannot answer (not found, timed out, failed), or with
    ``strict`` an NLBenchError naming it: a caller about to submit must not take silence for an
    empty queue (it would submit again what is still queued)."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        why = "timed out" if isinstance(exc, subprocess.TimeoutExpired) else str(exc)
    else:
        if out.returncode == 0:
            return out.stdout
        why = f"exit status {out.returncode}: {' '.join(out.stderr.split())[:200]}".rstrip(": ")
    if strict:
        raise NLBenchError(f"cannot ask SLURM which earlier tasks are still queued: `{' '.join(command)}` failed "
                           f"({why}); nothing submitted, so that no job runs twice", key="--launcher")
    return None


def slurm_states(job_ids: Iterable[str], strict: bool = False) -> Dict[str, Tuple[str, int]]:
    """{job id: (current SLURM state, times requeued)} from sacct; {} when sacct is unavailable
    (with ``strict``: an NLBenchError, see ``_ask``).

    ``-D`` lists every earlier instance of a requeued job, oldest first, so the last line of an id is
    its present state and the lines before it count its requeues.
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    bases = sorted({j.split("_")[0] for j in ids})
    out = _ask(["sacct", "-X", "-n", "-P", "-D", "--format=JobID,State", "-j", ",".join(bases)], strict)
    return {} if out is None else parse_sacct(out)


def parse_sacct(stdout: str) -> Dict[str, Tuple[str, int]]:
    """{task id: (state, times requeued)} from ``sacct -X -n -P -D --format=JobID,State`` lines.

    A line of its own ("12_1") is authoritative for that task. A range line ("12_[1-2%2]") is the
    array's record of tasks not started yet; slurmdbd updates it late, so it can still name a task
    that already has its own RUNNING line. It therefore only speaks for tasks without a line of
    their own, and never counts as a requeue.
    """
    own: Dict[str, List[str]] = {}
    waiting: Dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"  # "CANCELLED by 0" -> "CANCELLED"
        if _ARRAY_RANGE.match(parts[0]):
            waiting.update(dict.fromkeys(_expand_array(parts[0]), state))
        else:
            own.setdefault(parts[0], []).append(state)
    states = {jid: (state, 0) for jid, state in waiting.items()}
    states.update({jid: (history[-1], len(history) - 1) for jid, history in own.items()})
    return states


def queued_states(job_ids: Iterable[str], strict: bool = False) -> Dict[str, str]:
    """{task id: state} of the given tasks that are in SLURM's queue now (pending, running, completing),
    asked of the controller (``squeue``), which knows a task the moment sbatch returns; {} when squeue
    is unavailable (with ``strict``: an NLBenchError). Tasks that left the queue are not listed (sacct has them)."""
    ids = {str(j) for j in job_ids if j}
    if not ids:
        return {}
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = None
    out = _ask(["squeue", "-h", "-r", *(["-u", user] if user else []), "-o", "%i|%T"], strict)
    found: Dict[str, str] = {}
    for line in (out or "").splitlines():
        task, _, state = line.strip().partition("|")
        if task in ids and state:
            found[task] = state.split()[0]
    return found


def live_states(job_ids: Iterable[str], strict: bool = False) -> Dict[str, Tuple[str, int]]:
    """``slurm_states`` corrected by the queue: a task squeue lists is in its queue state whatever
    sacct says (sacct lags behind sbatch and requeues); the requeue count stays sacct's. ``strict``:
    an NLBenchError when either cannot answer (run-all, before it submits)."""
    ids = sorted({str(j) for j in job_ids if j})
    states = slurm_states(ids, strict)
    for task, state in queued_states(ids, strict).items():
        states[task] = (state, states.get(task, (state, 0))[1])
    return states
