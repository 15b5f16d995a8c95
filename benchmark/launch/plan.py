"""Recipes -> jobs: one job per (row, seed), with its stages, resources, time limit and cost estimate.

The plan is pure: it reads recipes and the results folder and launches nothing. Launchers take the
jobs and decide only *where* they run; what a job does is ``benchmark.run.job.run_job``.
The cost estimate of each job comes from ``benchmark.launch.cost``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from benchmark.catalog import select_recipe_paths
from benchmark.errors import NLBenchError
from benchmark.launch.cost import INFER_TMAC_PER_S, TRAIN_TMAC_PER_S, estimate_gpu_hours
from benchmark.recipe import Recipe, load_recipe
from benchmark.run.job import Job, Resources
from benchmark.run.records import KINDS, diverged_record, record_kinds

STAGES_ALL = KINDS  # train -> eval -> eval ms+flip -> bench

# ----------------------------------------------------------------------------- jobs


@dataclass
class Plan:
    jobs: List[Job]
    skipped: List[str] = field(default_factory=list)  # keys of rows already complete
    diverged: List[str] = field(default_factory=list)  # keys of rows the guard stopped (guard.action stop)

    @property
    def total_gpu_hours(self) -> Optional[float]:
        hours = [j.gpu_hours for j in self.jobs]
        return None if not hours or any(h is None for h in hours) else sum(hours)


def stages_for(recipe: Recipe) -> Tuple[str, ...]:
    """train -> eval -> eval ms+flip (only where the table publishes it) -> bench."""
    return tuple(s for s in STAGES_ALL if s != "eval_ms_flip" or recipe.test.ms_flip_published)


def work_dir_for(results_dir: Path, profile: str, recipe: str, seed: int) -> Path:
    return results_dir / "work" / profile / recipe / f"seed{seed}"


def default_time_limit_min(gpu_hours: Optional[float], gpus: int) -> int:
    """Wall-time estimate on ``gpus`` V100s x 1.5 + 30 min, rounded up to 30 min; 30 min for smoke-size jobs."""
    if gpu_hours is None:
        return 30
    wall_min = gpu_hours * 60.0 / max(gpus, 1)
    return int(math.ceil((wall_min * 1.5 + 30) / 30.0) * 30)


def make_plan(
    results_dir: os.PathLike | str,
    resources_for: Callable[[Recipe], Resources],
    pattern: Optional[str] = None,
    profile: str = "full",
    overrides: Sequence[str] = (),
    seeds: int = 1,
    time_limit_min: Optional[int] = None,
    device: str = "auto",
    skip_complete: bool = True,
) -> Plan:
    """One job per matching recipe and seed; rows whose every stage has a record are skipped.

    ``resources_for(recipe)`` is the launcher's rule for turning the recipe's GPU count into what a
    job asks for; ``time_limit_min`` (a cluster profile's) replaces the estimate-based limit.
    Seeds are ``runtime.seed``, ``runtime.seed + 1``, ...: seed k overrides the recipe's runtime.seed.
    """
    if seeds < 1:
        raise NLBenchError(f"expected a count >= 1, got {seeds}", key="--seeds")
    results = Path(results_dir).resolve()
    jobs: List[Job] = []
    skipped: List[str] = []
    diverged: List[str] = []
    for path in select_recipe_paths(pattern):
        base = load_recipe(path, overrides, profile=profile)
        for k in range(seeds):
            seed = base.runtime.seed + k
            recipe = base if k == 0 else load_recipe(path, [*overrides, f"runtime.seed={seed}"], profile=profile)
            stages = stages_for(recipe)
            if skip_complete and set(stages) <= record_kinds(results, recipe.name, recipe.profile, seed, recipe.hash):
                skipped.append(f"{recipe.profile}/{recipe.name}/seed{seed}")
                continue
            # A row the guard stopped stays stopped while the guard would stop it again; with
            # guard.action warn (--set) it is planned and resumes from its saved state.
            if skip_complete and recipe.guard.action == "stop" and diverged_record(
                    results, recipe.name, recipe.profile, seed, recipe.hash) is not None:
                diverged.append(f"{recipe.profile}/{recipe.name}/seed{seed}")
                continue
            res = resources_for(recipe)
            hours = estimate_gpu_hours(recipe, stages)
            jobs.append(Job(
                recipe=recipe,
                seed=seed,
                stages=stages,
                results_dir=str(results),
                work_dir=str(work_dir_for(results, recipe.profile, recipe.name, seed)),
                data_root=str(Path(recipe.data.data_root).resolve()),
                resources=res,
                time_limit_min=time_limit_min or default_time_limit_min(hours, recipe.runtime.gpus),
                gpu_hours=hours,
                overrides=tuple(overrides),
                device=device,
            ))
    return Plan(jobs, skipped, diverged)


def format_plan(plan: Plan, launcher: str) -> str:
    """The dry-run table: one line per job, and the total."""
    from tabulate import tabulate

    rows = []
    for j in plan.jobs:
        rows.append([
            j.name, j.seed, f"{j.recipe.runtime.gpus}x{j.recipe.data.imgs_per_gpu}", j.resources.describe(),
            " ".join(s.replace("eval_ms_flip", "ms+flip") for s in j.stages),
            f"{j.time_limit_min // 60}:{j.time_limit_min % 60:02d}",
            "-" if j.gpu_hours is None else f"{j.gpu_hours:.1f}",
        ])
    headers = ["recipe", "seed", "GPUs x imgs", f"{launcher} resources", "stages", "time limit", "GPU-h (est.)"]
    out = [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
    total = plan.total_gpu_hours
    out.append("")
    out.append(f"{len(plan.jobs)} job(s); estimated total: "
               + ("- (no estimate for smoke-size models)" if total is None else f"{total:.0f} GPU-hours")
               + (f"; skipped {len(plan.skipped)} complete row(s)" if plan.skipped else "")
               + (f"; skipped {len(plan.diverged)} diverged row(s)" if plan.diverged else ""))
    if total is not None:
        out.append(f"GPU-hours are an estimate for V100s ({TRAIN_TMAC_PER_S} TMac/s training, "
                   f"{INFER_TMAC_PER_S} TMac/s inference, from the models' GMac cost); see benchmark/launch/cost.py.")
    return "\n".join(out)
