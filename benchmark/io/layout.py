"""The results folder: every path in it is named here, once (docs/ARCHITECTURE.md draws the tree).

    RESULTS/
      records/<recipe>/<profile>/seed<k>/<kind>-<UTC time>-<hex>.json   result records (run/records.py)
      work/<profile>/<recipe>/[released/]seed<k>-<hash12>/               a job's work dir: checkpoints,
                                                                         train log, job.log, job_state.json
                                                                         (<hash12>: the resolved recipe's;
                                                                         seed<k>/: written before the
                                                                         hash was part of the name)
      jobs/runs/<run id>.json                                            one run-all's jobs (status reads them)
      jobs/locks/<profile>__<recipe>__[released__]seed<k>.lock           a job's lock (run/lock.py)
      jobs/local/<profile>__<recipe>__[released__]seed<k>.json, .out     a local job's file (torchrun ranks,
                                                                         --parallel) and console (--parallel)
      jobs/slurm/<SLURM job id>/                                         submitit's files of a SLURM job
      summary.csv, tables.md, report/, plots/                            what the report verbs write by default

It lives in io/, the lowest layer with files in it, because every layer above asks it: run/ writes
records, work dirs and locks, launch/ plans and reads them, report/ reads them and writes beside
them. Nothing here touches the disk; the object only names paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]
HASH_CHARS = 12  # of a recipe hash in a work dir's name: unique enough among one row's configurations
TRAINED = "trained"  # the checkpoint source whose paths are those of the layout before released ones existed


def source_part(checkpoint_source: str) -> str:
    """The key/work-dir component of a checkpoint source: '' for trained (the layout as it was),
    'released/' for released, so the two never share a work dir or a job key."""
    return "" if checkpoint_source == TRAINED else f"{checkpoint_source}/"


def _file_stem(key: str) -> str:
    """A job key (``<profile>/<recipe>/[released/]seed<k>``) as one file name."""
    return key.replace("/", "__")


@dataclass(frozen=True)
class ResultsLayout:
    """The paths of one results folder, built from its root (as given: callers resolve it if they need to)."""

    root: Path

    @classmethod
    def of(cls, results: Union[PathLike, "ResultsLayout"]) -> "ResultsLayout":
        return results if isinstance(results, ResultsLayout) else cls(Path(results))

    # ------------------------------------------------------------------ records
    @property
    def records(self) -> Path:
        return self.root / "records"

    def record_dir(self, recipe: str, profile: str, seed: int) -> Path:
        return self.records / recipe / profile / f"seed{seed}"

    # ------------------------------------------------------------------ work dirs
    def profile_work(self, profile: str) -> Path:
        """work/<profile>: the work dirs of every row of a profile."""
        return self.root / "work" / profile

    def row_work(self, profile: str, recipe: str) -> Path:
        """work/<profile>/<recipe>: the trained seeds' work dirs of one row (seed<k>-<hash12>/, and
        seed<k>/ from before the hash was in the name)."""
        return self.profile_work(profile) / recipe

    def work_dir(self, profile: str, recipe: str, seed: int, source: str = TRAINED,
                 recipe_hash: Optional[str] = None) -> Path:
        """work/<profile>/<recipe>/seed<k>-<hash12> (the first 12 hex of the resolved recipe's hash), so
        that a changed recipe or ``--set`` trains again beside the old run instead of resuming it;
        .../<recipe>/released/seed<k>-<hash12> for a released checkpoint. Without ``recipe_hash``: the
        folder of work dirs written before the hash was part of the path, ``seed<k>``."""
        suffix = f"-{recipe_hash[:HASH_CHARS]}" if recipe_hash else ""
        return self.row_work(profile, recipe) / f"{source_part(source)}seed{seed}{suffix}"

    def seed_work_dirs(self, profile: str, recipe: str, seed: int,
                       source: str = TRAINED) -> Tuple[Path, "re.Pattern[str]"]:
        """(folder, name pattern) of every work dir of one seed, whatever its recipe hash (old ones too)."""
        return (self.row_work(profile, recipe) / source_part(source).rstrip("/"),
                re.compile(rf"seed{seed}(-[0-9a-f]{{{HASH_CHARS}}})?"))

    @staticmethod
    def seed_of(work_dir_name: str) -> Optional[int]:
        """The seed of a work dir's name (``seed<k>`` or ``seed<k>-<hash12>``); None for other names."""
        m = re.fullmatch(rf"seed(\d+)(?:-[0-9a-f]{{{HASH_CHARS}}})?", work_dir_name)
        return int(m.group(1)) if m else None

    def relative(self, path: PathLike) -> str:
        """``path`` as written into a file inside the folder: relative to the root when inside it, so the
        folder can be moved (``absolute`` reads it back); other paths as given."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def absolute(self, path: PathLike) -> Path:
        """A path read from a file inside the folder: relative ones are inside the root (absolute ones,
        written before paths were relative, as they are)."""
        return self.root / path

    # ------------------------------------------------------------------ jobs
    @property
    def runs(self) -> Path:
        return self.root / "jobs" / "runs"

    def run_file(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    @property
    def locks(self) -> Path:
        return self.root / "jobs" / "locks"

    def lock_file(self, key: str) -> Path:
        return self.locks / f"{_file_stem(key)}.lock"

    @property
    def local_jobs(self) -> Path:
        return self.root / "jobs" / "local"

    def local_job_file(self, key: str) -> Path:
        """The job's JSON for a process of its own; its console output is the same name with ``.out``."""
        return self.local_jobs / f"{_file_stem(key)}.json"

    @property
    def slurm(self) -> Path:
        """submitit's folder pattern: one folder per SLURM job id (``%j``)."""
        return self.root / "jobs" / "slurm" / "%j"

    # ------------------------------------------------------------------ report outputs (defaults)
    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def tables_md(self) -> Path:
        return self.root / "tables.md"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def plots(self) -> Path:
        return self.root / "plots"
