"""`nlbench status`: where every planned row stands (pending, running, requeued, done, failed,
cancelled (scancel: the job saved and stopped), or diverged: stopped by the training guard, "diverged
at iter k: mIoU x, published y").

Sources, most authoritative first: the result records (a row with every stage's record is done),
SLURM (``squeue`` for what is queued or running now, ``sacct`` for the rest: pending, running,
requeued, failed, cancelled, timed out), and the job's own ``job_state.json`` in its work dir (the
local launcher's only source, and the failure message). The planned rows are those listed in
``RESULTS/jobs/runs/*.json``; the newest run naming a row wins, unless its SLURM task has ended while
an earlier run's task of the row is still queued or running: status follows the live task.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from benchmark.curves.reader import latest_iteration
from benchmark.engine.train_log import LOG_NAME
from benchmark.errors import NLBenchError
from benchmark.io.files import read_tail_lines, shown_path
from benchmark.io.jobenv import process_alive
from benchmark.io.layout import ResultsLayout
from benchmark.launch.sacct import FAILED_STATES, FINAL_STATES, PENDING_STATES, live_states
from benchmark.run.job import source_of
from benchmark.run.records import RecordStore, known_recipe_names
from benchmark.run.state import JOB_LOG, read_state

# ----------------------------------------------------------------------------- planned rows


Skipped = List[Tuple[Path, str]]  # (run file, why it was skipped)


def load_runs(results_dir: Path, skipped: Optional[Skipped] = None) -> List[Dict[str, Any]]:
    """Every run file, oldest first; each file that cannot be read is added to ``skipped``."""
    folder = ResultsLayout(results_dir).runs
    skipped = [] if skipped is None else skipped
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON (truncated or corrupt): {exc}"
            skipped.append((path, reason))
            continue
        if isinstance(run, dict) and isinstance(run.get("jobs"), list):
            run["_path"] = str(path)
            runs.append(run)
        else:
            skipped.append((path, "expected a run file (an object with a 'jobs' list)"))
    runs.sort(key=lambda r: (r.get("created_at", ""), r["_path"]))
    return runs


def _all_entries(results_dir: Path, skipped: Optional[Skipped] = None) -> List[Dict[str, Any]]:
    """Every job entry of every run file, oldest run first, with its run's launcher; its paths inside
    the results folder (written relative to it) made whole from ``results_dir``, where it is now."""
    layout = ResultsLayout(results_dir)
    found = []
    for run in load_runs(results_dir, skipped):
        for entry in run["jobs"]:
            if isinstance(entry, dict) and "key" in entry:
                paths = {k: str(layout.absolute(entry[k])) for k in ("work_dir", "stdout", "stderr") if entry.get(k)}
                found.append({**entry, **paths, "launcher": run.get("launcher", "local"), "run_id": run.get("run_id"),
                              "launcher_process": run.get("launcher_process")})
    return found


def _slurm_ids(entries: List[Dict[str, Any]]) -> List[str]:
    return [e["slurm_job_id"] for e in entries if e.get("launcher") == "slurm" and e.get("slurm_job_id")]


def _live(entry: Dict[str, Any], slurm: Dict[str, Tuple[str, int]]) -> bool:
    state = slurm.get(entry.get("slurm_job_id") or "", (None, 0))[0]
    return state is not None and state not in FINAL_STATES


def live_slurm_jobs(results_dir: Path, slurm: Optional[Dict[str, Tuple[str, int]]] = None,
                    strict: bool = False) -> Dict[str, Tuple[Dict[str, Any], str]]:
    """{job key: (the newest entry whose SLURM task is still queued or running, its state)}, over
    every run file: what a new run-all must not submit again, and what status follows. ``strict``:
    an NLBenchError when SLURM cannot say (sacct.live_states)."""
    entries = _all_entries(results_dir)
    slurm = live_states(_slurm_ids(entries), strict) if slurm is None else slurm
    return {e["key"]: (e, slurm[e["slurm_job_id"]][0]) for e in entries if _live(e, slurm)}


# ----------------------------------------------------------------------------- per-job facts


def iteration_reached(work_dir: Path) -> Optional[int]:
    """The furthest of the newest iteration the training log names (curves/reader.py) and the highest
    iter_N.pth checkpoint (None: not started)."""
    best: Optional[int] = None
    for p in work_dir.glob("iter_*.pth"):
        m = re.fullmatch(r"iter_(\d+)\.pth", p.name)
        if m:
            best = max(best or 0, int(m.group(1)))
    logged = latest_iteration(work_dir / LOG_NAME)
    return best if logged is None else max(best or 0, logged)


def _last_line(path: Optional[str], pattern: Optional[str] = None) -> Optional[str]:
    if not path:
        return None
    lines = [ln.strip() for ln in read_tail_lines(path) if ln.strip()]
    if pattern:
        lines = [ln for ln in lines if pattern in ln] or lines
    return lines[-1] if lines else None


def _records_complete(done: RecordStore, entry: Dict[str, Any]) -> bool:
    return set(entry["stages"]) <= done.kinds_done(entry["recipe"], entry["profile"], entry["seed"],
                                                   entry.get("recipe_hash"), source_of(entry))


def _pid_alive(state: Dict[str, Any]) -> bool:
    if state.get("hostname") != socket.gethostname():
        return True  # cannot tell from here; trust the file
    try:
        pid = int(state.get("pid"))
    except (TypeError, ValueError):
        return False
    return process_alive(pid, state.get("proc_start"))  # no proc_start in older files: the pid decides


def _running_here(state: Dict[str, Any]) -> bool:
    """Whether the job's process runs on this host (seen, not trusted from the file)."""
    return state.get("hostname") == socket.gethostname() and _pid_alive(state)


def _diverged(done: RecordStore, entry: Dict[str, Any], own: Optional[str], slurm_state: Optional[str],
              state_file: Dict[str, Any]) -> Optional[str]:
    """"diverged at iter k: mIoU x, published y" when the guard stopped this row and it is not running
    again (a resume with guard.action warn); None otherwise."""
    if source_of(entry) != "trained":
        return None  # a released checkpoint's job has no training to stop
    record = done.diverged(entry["recipe"], entry["profile"], entry["seed"], entry.get("recipe_hash"))
    if record is None:
        return None
    if slurm_state == "RUNNING" or slurm_state in PENDING_STATES or (own == "running" and _pid_alive(state_file)):
        return None
    return (record.guard or {}).get("message") or f"diverged at iter {record.stopped_at_iteration}"


def _finished(done: RecordStore, entry: Dict[str, Any], own: Optional[str], slurm_state: Optional[str],
              state_file: Dict[str, Any]) -> Optional[Tuple[str, Optional[str]]]:
    """("done", None) when every stage has a record, ("diverged", message) when the guard stopped it."""
    if _records_complete(done, entry):
        return "done", None
    diverged = _diverged(done, entry, own, slurm_state, state_file)
    return ("diverged", diverged) if diverged is not None else None


Verdict = Tuple[str, Optional[str]]  # (state, message)


def _from_slurm(slurm_state: Optional[str], requeues: int, own: Optional[str], work: Path,
                entry: Dict[str, Any]) -> Optional[Verdict]:
    """The row's state as SLURM's accounting has it; None when it has nothing to say."""
    if slurm_state in FAILED_STATES:
        last = _last_line(str(work / JOB_LOG)) or _last_line(entry.get("stderr")) or ""
        return ("cancelled" if slurm_state == "CANCELLED" else "failed"), f"SLURM {slurm_state}: {last}"
    if slurm_state == "COMPLETED":
        return "failed", "SLURM COMPLETED but not every stage has a record"
    if slurm_state == "RUNNING":
        return "running", None
    if slurm_state in PENDING_STATES:
        return ("requeued" if (requeues or own == "requeued") else "pending"), None
    return None


def _from_state_file(own: Optional[str], state_file: Dict[str, Any], work: Path, entry: Dict[str, Any]) -> Verdict:
    """The row's state from its job_state.json (a local job, or SLURM silent); a local job with none
    whose run-all process is gone will never start."""
    if own == "requeued":
        return "requeued", None
    if own == "cancelled":  # SIGTERM (scancel, a requeue by hand): saved, then stopped
        return "cancelled", state_file.get("error")
    if own == "running":
        if _pid_alive(state_file):
            return "running", None
        return "failed", "process gone without finishing: " + (_last_line(str(work / JOB_LOG)) or "")
    if own == "done":
        return "failed", "job finished but not every stage has a record"
    launcher = entry.get("launcher_process") or {}
    if own is None and launcher.get("hostname") == socket.gethostname() and "pid" in launcher \
            and not process_alive(int(launcher["pid"]), launcher.get("proc_start")):
        return "failed", f"never started: the local run-all that planned it (pid {launcher['pid']}) is gone"
    return "pending", None


def row_status(results: Union[Path, RecordStore], entry: Dict[str, Any], slurm: Dict[str, Tuple[str, int]]
               ) -> Dict[str, Any]:
    """One row of the status table; ``results``: the results folder, or its records already read."""
    done = results if isinstance(results, RecordStore) else _read(results, [entry])
    # A run file's work_dir is relative to the results folder (collect_status made it whole already).
    work = Path(entry["work_dir"]) if isinstance(results, RecordStore) else ResultsLayout(results).absolute(
        entry["work_dir"])
    state_file = read_state(work) or {}
    job_id = entry.get("slurm_job_id")
    slurm_state, requeues = slurm.get(job_id, (None, 0)) if job_id else (None, 0)
    requeues = max(requeues, int(state_file.get("attempt", 1)) - 1)
    own = state_file.get("state")
    log_path = entry.get("stdout") or str(work / JOB_LOG)
    state, message = (_finished(done, entry, own, slurm_state, state_file)
                      or (("failed", state_file.get("error")) if own == "failed" else None)
                      # A live process beats sacct's lag, but never a final state SLURM reported.
                      or (("running", None) if own == "running" and slurm_state not in FINAL_STATES
                          and _running_here(state_file) else None)
                      or _from_slurm(slurm_state, requeues, own, work, entry)
                      or _from_state_file(own, state_file, work, entry))
    if state == "failed" and not message:
        message = _last_line(str(work / JOB_LOG))
    return {
        "key": entry["key"],
        "recipe": entry["recipe"],
        "seed": entry["seed"],
        "profile": entry["profile"],
        "state": state,
        "stage": state_file.get("stage") if state in ("running", "requeued", "failed", "cancelled") else None,
        "stopped_at": state_file.get("stopped_at") if state == "diverged" else None,
        "job_id": job_id or "-",
        "requeues": requeues,
        "iteration": iteration_reached(work),
        "max_iters": entry.get("max_iters") if source_of(entry) == "trained" else None,  # released: no training
        "checkpoint_source": source_of(entry),
        "message": message,
        "log": log_path,
    }


def collect_status(results_dir: Path, skipped: Optional[Skipped] = None,
                   done: Optional[RecordStore] = None) -> List[Dict[str, Any]]:
    """Every planned row's status; ``done``: the folder's records when the caller has read them already."""
    everything = _all_entries(results_dir, skipped)
    slurm = live_states(_slurm_ids(everything))
    latest = {entry["key"]: entry for entry in everything}
    # The live SLURM task of a row, not the newest run file's entry, when that one has ended (a task
    # submitted again that found the row held and skipped itself, say).
    for key, (entry, _) in live_slurm_jobs(results_dir, slurm).items():
        if not _live(latest[key], slurm):
            latest[key] = entry
    entries = [latest[k] for k in sorted(latest)]
    done = done if done is not None else _read(results_dir, entries)
    return [row_status(done, e, slurm) for e in entries]


def _read(results_dir: Path, entries: List[Dict[str, Any]]) -> RecordStore:
    """The folder's records; a planned row's recipe may come from outside the recipes folder: its count too."""
    return RecordStore.read(results_dir, known_recipe_names() | {e["recipe"] for e in entries})


FINAL = ("done", "failed", "diverged", "cancelled")  # a row in one of these stays there until something runs it again


def format_status(rows: List[Dict[str, Any]], results_dir: Optional[Path] = None) -> str:
    """The status table and the count per state; with ``results_dir``, log paths inside it are shown
    relative to it."""
    from tabulate import tabulate

    table = []
    for r in rows:
        it = "-" if r["iteration"] is None else str(r["iteration"])
        if r["max_iters"]:
            it += f"/{r['max_iters']}"
        log = shown_path(r["log"], results_dir) if results_dir is not None and r["log"] else r["log"]
        message = (r["message"] or "")
        if len(message) > 100:
            message = message[:97] + "..."
        source = source_of(r)
        recipe = r["recipe"] + ("" if source == "trained" else f" ({source} checkpoint)")
        table.append([recipe, r["seed"], r["state"] + (f" ({r['stage']})" if r["stage"] else ""),
                      r["job_id"], r["requeues"], it, message, log])
    log_header = "log" if results_dir is None else f"log (in {results_dir})"
    headers = ["recipe", "seed", "state", "job id", "requeues", "iteration", "failure (last log line)", log_header]
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "requeued", "pending", "failed", "diverged",
                                                            "cancelled")
                        if s in counts)
    text = tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
    return f"{text}\n\n{len(rows)} row(s): {summary}"


def status_rows(folder: Path, warn: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Every planned row's state; ``warn`` (when given) is told of each run file or record skipped."""
    skipped: Skipped = []
    rows = collect_status(folder, skipped)
    if not rows and skipped:  # nothing readable: the first broken file is the error
        path, reason = skipped[0]
        raise NLBenchError(reason, path)
    for path, reason in skipped if warn else ():
        warn(f"warning: {path}: skipped: {reason}")
    if not rows:
        raise NLBenchError("no planned rows in the run files", ResultsLayout(folder).runs)
    return rows

