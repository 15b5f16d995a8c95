"""A job's own files in its work dir: the human-readable ``job.log`` and ``job_state.json``.

  job.log          every attempt appends timestamped lines (rank 0 only)
  job_state.json   {"state": running|done|failed|requeued, "stage", "attempt", "slurm_job_id", "pid",
                    "proc_start", ...}
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from benchmark.io.files import append_line, atomic_write_text
from benchmark.io.jobenv import job_environment, process_start

JOB_LOG = "job.log"
STATE_FILE = "job_state.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JobLog:
    """Appends timestamped lines to ``job.log`` (rank 0 only) and echoes them to stdout (``echo``)."""

    def __init__(self, work_dir: Path, enabled: bool = True):
        self.path = work_dir / JOB_LOG
        self.enabled = enabled
        if enabled:
            work_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str, echo: bool = True) -> None:
        if not self.enabled:
            return
        for line in str(message).splitlines() or [""]:
            text = f"{utc_now()} {line}"
            if echo:
                print(text, flush=True)
            append_line(self.path, text)


def read_state(work_dir: os.PathLike | str) -> Optional[Dict[str, Any]]:
    """The job's state file, or None when absent or unreadable (a job that never started)."""
    try:
        return json.loads((Path(work_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_state(work_dir: Path, state: str, **fields: Any) -> None:
    env = job_environment()
    body = {
        "state": state,
        "updated_at": utc_now(),
        "hostname": env.hostname,
        "pid": os.getpid(),
        "proc_start": process_start(os.getpid()),  # a reused pid is then told from this process
        "slurm_job_id": env.job_id,
        "attempt": env.attempt,
        **fields,
    }
    atomic_write_text(work_dir / STATE_FILE, json.dumps(body, indent=2) + "\n")
