"""`nlbench compare`: the reproduced figures against their references, as a gate."""

from __future__ import annotations

import argparse
from typing import Optional

from benchmark.commands.arguments import results_arguments
from benchmark.commands.console import warn
from benchmark.report.compare import comparison
from benchmark.stats import SEED_STD_MIOU


def compare_arguments(p: argparse.ArgumentParser) -> None:
    results_arguments(p)
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="mIoU points a row may fall short (default 0.5); a smoke row whose baseline carries a "
                        "measured band (results/reference/smoke.csv's miou_band) is held to that band instead")
    p.add_argument("--report", help="write a markdown report")
    p.add_argument("--junit", help="write a JUnit XML report (for CI)")
    p.add_argument("--reference", default=None, metavar="published|PATH.csv",
                   help="numbers to compare with (default: published for full-profile records, "
                        "results/reference/smoke.csv for smoke records)")
    p.add_argument("--method", choices=["tolerance", "ci"], default="tolerance",
                   help="tolerance (default): the mean over seeds within reference ± tolerance; ci: the 95%% "
                        "Student-t interval over seeds against that band (reproduced/below/above/inconclusive)")
    p.add_argument("--assumed-std", type=float, default=0.5,
                   help="ci: the seed std (mIoU) assumed for a row with one seed, to say how many seeds would "
                        "decide (default 0.5)")
    p.add_argument("--min-seeds", type=int, default=None, metavar="N",
                   help="ci: a trained row whose mIoU has fewer than N seeds fails (verdict too-few-seeds) instead "
                        "of being inconclusive; released checkpoints and missing rows are exempt")
    p.add_argument("--fail-on", choices=["inconclusive"], default=None,
                   help="ci: inconclusive verdicts fail the gate too (exit 1)")
    p.add_argument("--curves", action="store_true",
                   help="also check every row's training curves against its reference curve (as `nlbench curves "
                        "--reference released`); a diverged row fails")
    p.add_argument("--curves-reference", default="released", metavar="released|PATH",
                   help="with --curves: the reference curve, released (default; published logs from the cache only) "
                        "or a log file (every row) / a folder of <recipe>.log.json files (--reference is the numbers')")


def compare_command(results: str = "results", tolerance: float = 0.5, report: Optional[str] = None,  # noqa: PLR0913
                    junit: Optional[str] = None, reference: Optional[str] = None, method: str = "tolerance",
                    assumed_std: float = SEED_STD_MIOU, curves: bool = False,
                    curves_reference: str = "released", min_seeds: Optional[int] = None,
                    fail_on: Optional[str] = None) -> int:
    """`nlbench compare`: print the verdicts (and write the reports); exit 1 on a regression, or with
    ``curves`` also when a row's training curves diverged from its reference curve (report/row_curves.py).
    ci only: ``min_seeds`` fails a row with fewer seeds, ``fail_on="inconclusive"`` fails inconclusive ones."""
    verdicts = comparison(results, tolerance, report, junit, reference, method, assumed_std, curves,
                          curves_reference, min_seeds, fail_on, warn=warn)
    print(verdicts.text)
    return verdicts.code
