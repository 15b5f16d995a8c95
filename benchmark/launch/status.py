"""`nlbench status`: where every planned row stands.

Sources, most authoritative first: the result records (a row with every stage's record is done),
SLURM's accounting (``sacct``: pending, running, requeued, failed, cancelled, timed out), and the job's
own ``job_state.json`` in its work dir (the local launcher's only source, and the failure message).
The planned rows are those listed in ``RESULTS/jobs/runs/*.json``; the newest run naming a row wins.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from benchmark.errors import NLBenchError

RUNS_SUBDIR = Path("jobs") / "runs"
FAILED_SLURM = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
PENDING_SLURM = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "PREEMPTED"}


# ----------------------------------------------------------------------------- SLURM accounting

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


def slurm_states(job_ids: Iterable[str]) -> Dict[str, Tuple[str, int]]:
    """{job id: (current SLURM state, times requeued)} from sacct; {} when sacct is unavailable.

    ``-D`` lists every earlier instance of a requeued job, oldest first, so the last line of an id is
    its present state and the lines before it count its requeues.
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    bases = sorted({j.split("_")[0] for j in ids})
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-D", "--format=JobID,State", "-j", ",".join(bases)],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    history: Dict[str, List[str]] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"  # "CANCELLED by 0" -> "CANCELLED"
        for jid in _expand_array(parts[0]):
            history.setdefault(jid, []).append(state)
    return {jid: (states[-1], len(states) - 1) for jid, states in history.items()}


# ----------------------------------------------------------------------------- planned rows


def load_runs(results_dir: Path) -> List[Dict[str, Any]]:
    """Every run file, oldest first."""
    folder = results_dir / RUNS_SUBDIR
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and isinstance(run.get("jobs"), list):
            run["_path"] = str(path)
            runs.append(run)
    runs.sort(key=lambda r: (r.get("created_at", ""), r["_path"]))
    return runs


def planned_jobs(results_dir: Path) -> List[Dict[str, Any]]:
    """The newest entry for every job key, with its run's launcher."""
    latest: Dict[str, Dict[str, Any]] = {}
    for run in load_runs(results_dir):
        for entry in run["jobs"]:
            if isinstance(entry, dict) and "key" in entry:
                latest[entry["key"]] = {**entry, "launcher": run.get("launcher", "local"), "run_id": run.get("run_id")}
    return [latest[k] for k in sorted(latest)]


# ----------------------------------------------------------------------------- per-job facts


def iteration_reached(work_dir: Path) -> Optional[int]:
    """Highest iteration in the training log or among iter_N.pth checkpoints (None: not started)."""
    best: Optional[int] = None
    for p in work_dir.glob("iter_*.pth"):
        m = re.fullmatch(r"iter_(\d+)\.pth", p.name)
        if m:
            best = max(best or 0, int(m.group(1)))
    log = work_dir / "train.log.jsonl"
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 65536, 0))
            tail = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        tail = []
    for line in reversed(tail):
        try:
            it = json.loads(line).get("iteration")
        except (ValueError, AttributeError):
            continue
        if isinstance(it, int):
            best = max(best or 0, it)
            break
    return best


def _last_line(path: Optional[str], pattern: Optional[str] = None) -> Optional[str]:
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 65536, 0))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if pattern:
        lines = [ln for ln in lines if pattern in ln] or lines
    return lines[-1] if lines else None


def _records_complete(results_dir: Path, entry: Dict[str, Any]) -> bool:
    from benchmark.launch.plan import record_kinds

    return set(entry["stages"]) <= record_kinds(results_dir, entry["recipe"], entry["profile"], entry["seed"],
                                                entry.get("recipe_hash"))


def _pid_alive(state: Dict[str, Any]) -> bool:
    if state.get("hostname") != socket.gethostname():
        return True  # cannot tell from here; trust the file
    try:
        os.kill(int(state.get("pid")), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def row_status(results_dir: Path, entry: Dict[str, Any], slurm: Dict[str, Tuple[str, int]]) -> Dict[str, Any]:
    """One row of the status table."""
    from benchmark.launch.job import JOB_LOG, read_state

    work = Path(entry["work_dir"])
    state_file = read_state(work) or {}
    job_id = entry.get("slurm_job_id")
    slurm_state, requeues = slurm.get(job_id, (None, 0)) if job_id else (None, 0)
    requeues = max(requeues, int(state_file.get("attempt", 1)) - 1)
    own = state_file.get("state")
    log_path = entry.get("stdout") or str(work / JOB_LOG)
    message = None
    if _records_complete(results_dir, entry):
        state = "done"
    elif own == "failed":
        state, message = "failed", state_file.get("error")
    elif slurm_state in FAILED_SLURM:
        state = "failed"
        message = f"SLURM {slurm_state}: " + (_last_line(str(work / JOB_LOG)) or _last_line(entry.get("stderr")) or "")
    elif slurm_state == "COMPLETED":
        state, message = "failed", "SLURM COMPLETED but not every stage has a record"
    elif slurm_state == "RUNNING":
        state = "running"
    elif slurm_state in PENDING_SLURM:
        state = "requeued" if (requeues or own == "requeued") else "pending"
    elif own == "requeued":
        state = "requeued"
    elif own == "running":
        state = "running" if _pid_alive(state_file) else "failed"
        if state == "failed":
            message = "process gone without finishing: " + (_last_line(str(work / JOB_LOG)) or "")
    elif own == "done":
        state, message = "failed", "job finished but not every stage has a record"
    else:
        state = "pending"
    if state == "failed" and not message:
        message = _last_line(str(work / JOB_LOG))
    return {
        "key": entry["key"],
        "recipe": entry["recipe"],
        "seed": entry["seed"],
        "profile": entry["profile"],
        "state": state,
        "stage": state_file.get("stage") if state in ("running", "requeued", "failed") else None,
        "job_id": job_id or "-",
        "requeues": requeues,
        "iteration": iteration_reached(work),
        "max_iters": entry.get("max_iters"),
        "message": message,
        "log": log_path,
    }


def collect_status(results_dir: Path) -> List[Dict[str, Any]]:
    entries = planned_jobs(results_dir)
    slurm = slurm_states(e.get("slurm_job_id") for e in entries if e.get("launcher") == "slurm")
    return [row_status(results_dir, e, slurm) for e in entries]


def format_status(rows: List[Dict[str, Any]]) -> str:
    from tabulate import tabulate

    table = []
    for r in rows:
        it = "-" if r["iteration"] is None else str(r["iteration"])
        if r["max_iters"]:
            it += f"/{r['max_iters']}"
        message = (r["message"] or "")
        if len(message) > 100:
            message = message[:97] + "..."
        table.append([r["recipe"], r["seed"], r["state"] + (f" ({r['stage']})" if r["stage"] else ""),
                      r["job_id"], r["requeues"], it, message, r["log"]])
    headers = ["recipe", "seed", "state", "job id", "requeues", "iteration", "failure (last log line)", "log"]
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "requeued", "pending", "failed") if s in counts)
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True) + f"\n\n{len(rows)} row(s): {summary}"


def main(args) -> int:
    results = Path(args.results)
    if not (results / RUNS_SUBDIR).is_dir():
        raise NLBenchError("no planned runs here (run `nlbench run-all` first)", results, "--results")
    rows = collect_status(results)
    if not rows:
        raise NLBenchError("no planned rows in the run files", results / RUNS_SUBDIR)
    print(format_status(rows))
    return 0
