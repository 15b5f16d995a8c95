"""The one exception type the command line turns into a clear message and a non-zero exit."""

from __future__ import annotations

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


class TrainingInterrupted(Exception):
    """Training stopped early on request (SLURM preemption or time limit) after saving a checkpoint
    at ``iteration``; a resume continues from there. Not a failure."""

    def __init__(self, iteration: int):
        super().__init__(f"training interrupted at iteration {iteration}; checkpoint saved")
        self.iteration = iteration
