"""`nlbench train`."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional, Sequence

from benchmark.commands.arguments import data_root_arguments, device_arguments, recipe_arguments
from benchmark.engine import distributed
from benchmark.engine.train import train
from benchmark.errors import DIVERGED_EXIT_CODE, RunDiverged
from benchmark.io.jobenv import job_environment
from benchmark.recipe import load_recipe, write_resolved_recipe


def train_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)
    p.add_argument("--work-dir", help="checkpoints and logs (default work_dirs/<recipe>)")
    data_root_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    device_arguments(p)


def train_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full", work_dir: Optional[str] = None,
                  data_root: Optional[str] = None, resume: bool = False, device: str = "auto") -> int:
    """`nlbench train`; exit status 3 (``DIVERGED_EXIT_CODE``) when the guard stopped a diverged run."""
    resolved = load_recipe(recipe, overrides, profile)
    work = work_dir or os.path.join("work_dirs", resolved.name)
    if job_environment().is_main:  # every rank would write the same file
        sets = " ".join(f"--set {o}" for o in overrides) or "none"
        write_resolved_recipe(resolved, work, f"nlbench train; overrides: {sets}")
    try:
        summary = train(resolved, work, resume=resume, device=device, data_root=data_root)
        is_main = distributed.get_rank() == 0
    except RunDiverged as exc:  # every rank stops at the same evaluation: not a failure to report
        if distributed.get_rank() == 0:
            print(f"stopped: {exc} (guard.action stop); state saved in {work}; --resume continues it "
                  f"(add --set guard.action=warn to run it to the end); exit status {DIVERGED_EXIT_CODE}")
        return DIVERGED_EXIT_CODE
    except (Exception, KeyboardInterrupt) as exc:
        distributed.report_failure(exc)  # the other ranks stop within seconds, not at a timeout
        raise
    finally:
        distributed.cleanup()
    if is_main:
        print(_outcome(summary))
    return 0


def _outcome(summary: Dict[str, Any]) -> str:
    """The closing line of `nlbench train`."""
    metrics = summary.get("metrics")
    scores = "no evaluation logged" if not metrics else (
        f"mIoU {metrics['mIoU']:.2f}, aAcc {metrics['aAcc']:.2f}, mAcc {metrics['mAcc']:.2f}")
    if summary["start_iteration"] >= summary["iterations"]:
        at = f" (iteration {metrics['iteration']})" if metrics and "iteration" in metrics else ""
        return (f"nothing left to do: {summary['checkpoint']} already holds all {summary['iterations']} "
                f"iterations; the last evaluation{at} gave {scores}")
    return (f"done: {summary['iterations']} iterations in {summary['wall_time_s']:.1f} s; {scores}; "
            f"checkpoint {summary['checkpoint']}")
