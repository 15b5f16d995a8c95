"""`nlbench doctor`: run-all's pre-flight checks on their own, one line per finding (launch/doctor.py)."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from benchmark.commands.arguments import overrides_arguments
from benchmark.launch.doctor import diagnose


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
    overrides_arguments(p, "override a value in every recipe (repeatable)")


# One parameter per doctor flag (the command line passes its flags by name).
def doctor_command(recipe: Optional[str] = None, filter: Optional[str] = None,  # noqa: PLR0913
                   profile: str = "full", data_root: Optional[str] = None, launcher: str = "local",
                   cluster: Optional[str] = None, checkpoint: str = "trained", results: str = "results",
                   overrides: Sequence[str] = ()) -> int:
    """`nlbench doctor`: print every pre-flight finding; exit 1 when one is a problem."""
    diagnosis = diagnose(recipe, filter, profile=profile, data_root=data_root, launcher=launcher, cluster=cluster,
                         checkpoint=checkpoint, results=results, overrides=overrides)
    for finding in diagnosis.findings:
        print(finding.line())
    print(diagnosis.summary())
    return 1 if diagnosis.problems else 0
