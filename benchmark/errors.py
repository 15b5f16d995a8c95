"""The one exception type the command line turns into a clear message and a non-zero exit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union


class NLBenchError(Exception):
    """A user-facing error: bad input, a missing file, a failed check.

    The message names the file (when there is one), the key and what was expected; the CLI prints
    it on one line and exits with ``exit_code``, never with a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None, key: Optional[str] = None):
        self.path = str(path) if path is not None else None
        self.key = key
        parts = [p for p in (self.path, key) if p]
        super().__init__(": ".join(parts + [message]))


def check_number(value: float, key: str, what: str, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` when it is finite and at least ``minimum`` (above it with ``strict``); otherwise an
    NLBenchError naming ``key`` (argparse's float() lets 'nan' and 'inf' through)."""
    if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
        raise NLBenchError(f"expected a finite {what} {'>' if strict else '>='} {minimum:g}, got {value}", key=key)
    return value


class TrainingInterrupted(Exception):
    """Training stopped early on request (SLURM preemption or time limit) after saving a checkpoint
    at ``iteration``; a resume continues from there. Not a failure."""

    def __init__(self, iteration: int):
        super().__init__(f"training interrupted at iteration {iteration}; checkpoint saved")
        self.iteration = iteration


# `nlbench train` exits with this when the guard stopped a diverged run (0 done, 1 a failed check
# elsewhere, 2 bad input); docs/CURVES.md.
DIVERGED_EXIT_CODE = 3


class RunDiverged(Exception):
    """The training guard (``guard.action: stop``) stopped the run at the evaluation after
    ``iteration`` that made it diverged; the state was saved there, so a resume continues it.
    ``evidence`` is the guard's assessment (JSON-safe)."""

    def __init__(self, iteration: int, message: str, evidence: dict):
        super().__init__(message)
        self.iteration = iteration
        self.evidence = evidence
