"""`nlbench doctor`: run-all's pre-flight (launch/preflight.py) on its own, every finding returned.

    nlbench doctor [RECIPE|--filter GLOB] [--profile full|smoke] [--data-root DIR]
                   [--launcher local|slurm] [--cluster FILE] [--checkpoint trained|released]

One finding per line: ``ok``, ``note`` (said, not failed: a smaller data set, a setting that
differs from the published one) or ``problem`` (run-all would stop on it). The command
(benchmark/commands/doctor.py) prints them and exits 0 when there is no problem, 1 when there is one
(docs/DOCTOR.md). Nothing is written; the pretrained backbone of a full row is downloaded into the
cache when it is not there yet (that is how its hash and keys are checked). Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from benchmark.data.checks import Finding
from benchmark.errors import NLBenchError
from benchmark.launch import plan as planning
from benchmark.launch.preflight import check_jobs
from benchmark.launch.run_all import launcher_rule


@dataclass(frozen=True)
class Diagnosis:
    """What doctor found: one finding per check over the planned rows."""
    rows: int
    findings: List[Finding]

    @property
    def problems(self) -> int:
        return sum(f.level == "problem" for f in self.findings)

    def summary(self) -> str:
        notes = sum(f.level == "note" for f in self.findings)
        return (f"doctor: {self.rows} row(s), {len(self.findings)} finding(s): {self.problems} problem(s), "
                f"{notes} note(s)")


# One parameter per doctor flag (the command passes its flags by name).
def diagnose(recipe: Optional[str] = None, filter: Optional[str] = None,  # noqa: PLR0913
             profile: str = "full", data_root: Optional[str] = None, launcher: str = "local",
             cluster: Optional[str] = None, checkpoint: str = "trained", results: str = "results",
             overrides: Sequence[str] = ()) -> Diagnosis:
    """Plan the rows as run-all would (complete ones included) and check them all."""
    if recipe and filter:
        raise NLBenchError("give a RECIPE or --filter, not both", key="--filter")
    rule, time_limit, cluster_profile = launcher_rule(launcher, cluster)
    plan = planning.make_plan(results, rule, pattern=recipe or filter, profile=profile, overrides=overrides,
                              time_limit_min=time_limit, skip_complete=False, checkpoint=checkpoint,
                              data_root=data_root)
    return Diagnosis(len(plan.jobs), check_jobs(plan.jobs, launcher, cluster_profile, Path(results)))
