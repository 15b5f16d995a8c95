"""`nlbench doctor`: run-all's pre-flight (launch/preflight.py) on its own, every finding printed.

    nlbench doctor [RECIPE|--filter GLOB] [--profile full|smoke] [--data-root DIR]
                   [--launcher local|slurm] [--cluster FILE] [--checkpoint trained|released]

One line per finding: ``ok``, ``note`` (said, not failed: a smaller data set, a setting that
differs from the published one) or ``problem`` (run-all would stop on it). Exit 0 when there is no
problem, 1 when there is one (docs/DOCTOR.md). Nothing is written; the pretrained backbone of a full
row is downloaded into the cache when it is not there yet (that is how its hash and keys are checked).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence


def doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", default=None, help="recipe name or glob on recipe names (default: all)")
    p.add_argument("--filter", help="glob on recipe names, as run-all's (instead of RECIPE)")
    p.add_argument("--profile", default="full", help="full (default) or smoke")
    p.add_argument("--data-root", help="data root to check instead of each recipe's (a relative one resolves "
                                       "against $NLBENCH_DATA_BASE, else the current directory)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="what the jobs would get: local (this machine) or slurm (the cluster profile's nodes)")
    p.add_argument("--cluster", help="SLURM profile, e.g. slurm/example.yaml (with --launcher slurm)")
    p.add_argument("--checkpoint", choices=["trained", "released"], default="trained",
                   help="trained (default) or released: as run-all's (a released row needs no pretrained backbone)")
    p.add_argument("--results", default="results", help="results folder whose disk is checked (default results/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every recipe (repeatable)")


# One parameter per doctor flag (the CLI passes its flags by name).
def doctor_command(recipe: Optional[str] = None, filter: Optional[str] = None,  # noqa: PLR0913
                   profile: str = "full", data_root: Optional[str] = None, launcher: str = "local",
                   cluster: Optional[str] = None, checkpoint: str = "trained", results: str = "results",
                   overrides: Sequence[str] = ()) -> int:
    """`nlbench doctor`: print every pre-flight finding; exit 1 when one is a problem."""
    from benchmark.errors import NLBenchError
    from benchmark.launch import plan as planning
    from benchmark.launch.preflight import check_jobs
    from benchmark.launch.run_all import launcher_rule

    if recipe and filter:
        raise NLBenchError("give a RECIPE or --filter, not both", key="--filter")
    rule, time_limit, cluster_profile = launcher_rule(launcher, cluster)
    plan = planning.make_plan(results, rule, pattern=recipe or filter, profile=profile, overrides=overrides,
                              time_limit_min=time_limit, skip_complete=False, checkpoint=checkpoint,
                              data_root=data_root)
    findings = check_jobs(plan.jobs, launcher, cluster_profile, Path(results))
    for finding in findings:
        print(finding.line())
    bad = sum(f.level == "problem" for f in findings)
    notes = sum(f.level == "note" for f in findings)
    print(f"doctor: {len(plan.jobs)} row(s), {len(findings)} finding(s): {bad} problem(s), {notes} note(s)")
    return 1 if bad else 0
