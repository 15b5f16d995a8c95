"""`nlbench run-all` and `nlbench status`: run every planned row, and say where each stands."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from benchmark.commands.arguments import overrides_arguments, results_arguments
from benchmark.commands.console import warn
from benchmark.errors import NLBenchError
from benchmark.io.layout import ResultsLayout
from benchmark.launch.run_all import RunAllOptions, planned_rows, run_all
from benchmark.launch.status import FINAL, format_status, status_rows
from benchmark.report.compare import rows_verdicts


def run_all_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", help="glob on recipe names (default: all)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--cluster", help="SLURM profile, e.g. slurm/example.yaml")
    p.add_argument("--profile", default="full", help="full (default) or smoke")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds per row (default 1); the dry run says what interval N seeds give")
    p.add_argument("--checkpoint", choices=["trained", "released"], default="trained",
                   help="trained (default): train each row, then evaluate it; released: evaluate and benchmark "
                        "each row's released MMSeg checkpoint, no training (downloaded once into $NLBENCH_CACHE)")
    results_arguments(p)
    p.add_argument("--data-root", help="data root of every row instead of each recipe's, as --set data.data_root "
                                       "(part of the planned recipe and its hash); a relative one resolves against "
                                       "$NLBENCH_DATA_BASE, else the current directory")
    p.add_argument("--dry-run", action="store_true", help="print the plan and GPU-hour estimate, run nothing")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm: return after submitting (default: wait for the array and print the status)")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="local, on a machine without GPUs: N jobs at a time, each in its own process (default 1; "
                        "pair it with --set runtime.cpu_threads=K so that N x K fits the cores; the smoke "
                        "profile's jobs use 1 thread each)")
    overrides_arguments(p, "override a value in every recipe (repeatable)")


# One parameter per run-all flag (the command line passes its flags by name); the library takes them
# as one RunAllOptions.
def run_all_command(filter: Optional[str] = None, launcher: str = "local", cluster: Optional[str] = None,  # noqa: PLR0913
                    profile: str = "full", seeds: int = 1, results: str = "results", dry_run: bool = False,
                    no_wait: bool = False, overrides: Sequence[str] = (), checkpoint: str = "trained",
                    parallel: int = 1, data_root: Optional[str] = None) -> int:
    """`nlbench run-all`: the campaign's progress lines, then (once its jobs have run) the rows' figures
    against their references and the verdicts of `nlbench compare`; exit 1 when a row failed or diverged."""
    options = RunAllOptions(filter=filter, launcher=launcher, cluster=cluster, profile=profile, seeds=seeds,
                            results=results, dry_run=dry_run, no_wait=no_wait, overrides=tuple(overrides),
                            checkpoint=checkpoint, parallel=parallel, data_root=data_root)
    campaign = run_all(options, log=print)
    if campaign.records is not None:
        print(rows_verdicts(campaign.records, planned_rows(campaign.plan), warn))
    return campaign.code


def status_arguments(p: argparse.ArgumentParser) -> None:
    results_arguments(p)
    p.add_argument("--watch", action="store_true",
                   help="refresh until every row is final (done, failed, diverged or cancelled); exit 0 when all "
                        "are done, 1 otherwise")
    p.add_argument("--interval", type=float, default=10.0, metavar="S",
                   help="--watch: seconds between refreshes (default 10)")


def status_command(results: str = "results", watch: bool = False, interval: float = 10.0) -> int:
    """`nlbench status`; ``watch``: print the table again every ``interval`` seconds until every row is
    final (done, failed, diverged or cancelled), then exit 0 when all are done, 1 otherwise."""
    folder = Path(results)
    if not ResultsLayout(folder).runs.is_dir():
        raise NLBenchError("no planned runs here (run `nlbench run-all` first)", folder, "--results")
    if not watch:
        print(format_status(status_rows(folder, warn=warn), folder))
        return 0
    if not interval > 0:
        raise NLBenchError(f"expected a number of seconds above 0, got {interval}", key="--interval")
    return _watch(folder, interval)


def _watch(folder: Path, interval: float) -> int:
    """Refresh in place on a terminal (clear the screen); elsewhere (a CI log, a pipe) print each table
    after a timestamp line, so the log reads as a history."""
    tty = sys.stdout.isatty()
    first = True
    while True:
        rows = status_rows(folder, warn=warn if first else None)
        final = all(r["state"] in FINAL for r in rows)
        stamp = time.strftime("%H:%M:%S")
        head = (f"nlbench status {folder} at {stamp}: " + ("every row is final" if final else
                                                            f"refreshing every {interval:g} s (Ctrl-C stops)"))
        print(("\033[H\033[2J" if tty else "" if first else "\n") + head + "\n" + format_status(rows, folder),
              flush=True)
        if final:
            return 0 if all(r["state"] == "done" for r in rows) else 1
        first = False
        time.sleep(interval)
