"""The attempts of one training run: ``attempts.json`` in the work dir.

A run that is preempted, requeued, killed or simply started again with ``--resume`` trains in
several attempts. What the run cost is the sum over them, so the work dir keeps one entry per
attempt (rank 0 writes it, atomically): when it started, the iterations it covered, its wall time,
its GPU-hours and its peak memory, and how it ended (``running`` while it runs, ``done``,
``interrupted`` on a stop request, ``diverged`` when the guard stopped it, ``lost`` for one that
was killed or failed, noticed by the next).

An entry is written when the attempt starts and updated at every checkpoint and at the end, so a
killed attempt counts up to its last checkpoint. A run that starts from iteration 0 starts a new
file. The train record carries the totals (``totals``): wall time and GPU-hours summed, peak
memory the largest of any attempt, and the number of attempts (None when an attempt could not read
the entries before it: the unreadable file is kept as ``attempts.json.unreadable-<UTC time>``, and
the sums then cover only the attempts since, a lower bound).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from benchmark.errors import NLBenchError
from benchmark.io.files import write_json

ATTEMPTS = "attempts.json"
EARLIER_UNKNOWN = "earlier_attempts_unknown"


def gpu_hours(wall_s: float, device_type: Optional[str], world_size: int) -> Optional[float]:
    """GPU-hours of ``wall_s`` seconds on ``world_size`` ranks; None off the GPU."""
    if device_type != "cuda":
        return None
    return wall_s * max(int(world_size), 1) / 3600.0


def _load(path: Path) -> Optional[List[Dict[str, Any]]]:
    """The entries of an attempts file; None when it is missing or cannot be read as one."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entries = body.get("attempts") if isinstance(body, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else None


def read_attempts(work_dir: Path) -> List[Dict[str, Any]]:
    """The entries of ``work_dir/attempts.json``; [] when there is none or it cannot be read."""
    return _load(Path(work_dir) / ATTEMPTS) or []


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def totals(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Sum of wall time and GPU-hours, max of peak memory, and the count of ``entries``."""
    walls = [_number(e.get("wall_time_s")) or 0.0 for e in entries]
    hours = [h for h in (_number(e.get("gpu_hours")) for e in entries) if h is not None]
    peaks = [p for p in (_number(e.get("peak_mem_gb")) for e in entries) if p is not None]
    # An attempt that could not read the entries before it: how many there were is not known.
    unknown = any(e.get(EARLIER_UNKNOWN) for e in entries)
    return {"attempts": None if unknown else len(entries), "total_wall_time_s": sum(walls),
            "total_gpu_hours": sum(hours) if hours else None, "max_peak_mem_gb": max(peaks) if peaks else None}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class AttemptLedger:
    """This attempt's entry in ``attempts.json``, after those of the attempts before it.

    ``started`` is the attempt's ``time.perf_counter()`` start; ``peak_gb`` reads its peak memory
    so far. Only the writer (rank 0) reads and writes the file: the totals of the other ranks cover
    their own attempt only (rank 0 alone writes records).
    """

    def __init__(self, work_dir: Path, start_iter: int, started: float, peak_gb: Callable[[], float],
                 mem_kind: str, world_size: int, device_type: str, writer: bool):
        self.path = Path(work_dir) / ATTEMPTS
        self.started, self.peak_gb, self.writer = started, peak_gb, writer
        before, self.warning = self._earlier() if start_iter > 0 and writer else ([], None)
        for entry in before:
            if entry.get("outcome") == "running":  # it never said how it ended: killed or failed
                entry["outcome"] = "lost"
        self.before = before
        self.entry: Dict[str, Any] = {
            "attempt": len(before) + 1, "started_at": _now(), "updated_at": _now(), "start_iteration": start_iter,
            "iteration": start_iter, "outcome": "running", "wall_time_s": 0.0, "gpu_hours": None,
            "peak_mem_gb": None, "mem_kind": mem_kind, "world_size": world_size, "device_type": device_type,
        }
        if self.warning is not None:
            self.entry[EARLIER_UNKNOWN] = True
        self.update(start_iter)

    def _earlier(self) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """The entries of the attempts before this one, and a warning when the file holding them
        cannot be read (it is then kept aside for a person to look at, never overwritten)."""
        entries = _load(self.path)
        if entries is not None or not self.path.exists():
            return entries or [], None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{ATTEMPTS}.unreadable-{stamp}")  # an earlier one is never replaced
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise NLBenchError(f"cannot read it, nor move it aside: {exc.strerror or exc}", self.path) from None
        return [], (f"{self.path}: cannot be read (kept as {aside.name}); the earlier attempts are not counted: "
                    "the train record says attempts: null, and its time and GPU-hours cover the attempts since")

    def update(self, iteration: int, outcome: str = "running", peak_mem_gb: Optional[float] = None) -> None:
        wall = time.perf_counter() - self.started
        peak = peak_mem_gb if peak_mem_gb is not None else self.peak_gb()
        self.entry.update({"updated_at": _now(), "iteration": iteration, "outcome": outcome, "wall_time_s": wall,
                           "gpu_hours": gpu_hours(wall, self.entry["device_type"], self.entry["world_size"]),
                           "peak_mem_gb": peak})
        if self.writer:
            write_json(self.path, {"attempts": self.entries()})

    def entries(self) -> List[Dict[str, Any]]:
        return [*self.before, dict(self.entry)]

    def totals(self) -> Dict[str, Any]:
        return totals(self.entries())
