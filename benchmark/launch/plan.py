"""Recipes -> jobs: one job per (row, seed), with its stages, resources, time limit and cost estimate.

The plan is pure: it reads recipes and the results folder and launches nothing. Launchers take the
jobs and decide only *where* they run; what a job does is ``benchmark.run.job.run_job``.
The cost estimate of each job comes from ``benchmark.launch.cost``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from benchmark.catalog import select_recipe_paths
from benchmark.errors import NLBenchError
from benchmark.io.download import cache_dir_default
from benchmark.io.layout import ResultsLayout, source_part
from benchmark.launch.cost import INFER_TMAC_PER_S, TRAIN_TMAC_PER_S, estimate_gpu_hours
from benchmark.recipe import RESOLVED_RECIPE_FILE, Recipe, load_recipe, recipe_from_dict, resolve_data_root
from benchmark.run.job import Job, Resources
from benchmark.run.records import CHECKPOINT_SOURCES, KINDS, RecordStore
from benchmark.stats import DEFAULT_TOLERANCE, SEED_STD_MIOU, half_width, seeds_for_half_width

STAGES_ALL = KINDS  # train -> eval -> eval ms+flip -> bench

# ----------------------------------------------------------------------------- jobs


@dataclass
class Plan:
    jobs: List[Job]
    skipped: List[str] = field(default_factory=list)  # keys of rows already complete
    diverged: List[str] = field(default_factory=list)  # keys of rows the guard stopped (guard.action stop)
    checkpoint: str = "trained"  # "trained" (train, then evaluate) or "released" (evaluate MMSeg's file)
    seeds: int = 1
    # Released plans: job key -> estimated GPU-hours of training that row instead (train + every stage).
    training_gpu_hours: Dict[str, Optional[float]] = field(default_factory=dict)
    records: Optional[RecordStore] = None  # the results folder's records the plan was made from
    # Work dirs of the old format (seed<k>/, before they carried the recipe hash) beside a planned job:
    # (old folder, the job's work dir, whether the old one's recipe.yaml has the job's recipe hash).
    old_work_dirs: List[Tuple[str, str, bool]] = field(default_factory=list)

    @property
    def total_gpu_hours(self) -> Optional[float]:
        hours = [j.gpu_hours for j in self.jobs]
        return None if not hours or any(h is None for h in hours) else sum(hours)

    @property
    def total_training_gpu_hours(self) -> Optional[float]:
        hours = [self.training_gpu_hours.get(j.key) for j in self.jobs]
        return None if not hours or any(h is None for h in hours) else sum(hours)


def stages_for(recipe: Recipe, checkpoint: str = "trained") -> Tuple[str, ...]:
    """train -> eval -> eval ms+flip (only where the table publishes it) -> bench; no train stage on a
    released checkpoint."""
    return tuple(s for s in STAGES_ALL
                 if (s != "eval_ms_flip" or recipe.test.ms_flip_published)
                 and (s != "train" or checkpoint == "trained"))


def default_time_limit_min(gpu_hours: Optional[float], gpus: int) -> int:
    """Wall-time estimate on ``gpus`` V100s x 1.5 + 30 min, rounded up to 30 min; 30 min for smoke-size jobs."""
    if gpu_hours is None:
        return 30
    wall_min = gpu_hours * 60.0 / max(gpus, 1)
    return int(math.ceil((wall_min * 1.5 + 30) / 30.0) * 30)


# One parameter per planning input run-all passes by name: one more than the size limit.
def make_plan(  # noqa: PLR0913
    results_dir: os.PathLike | str,
    resources_for: Callable[[Recipe], Resources],
    pattern: Optional[str] = None,
    profile: str = "full",
    overrides: Sequence[str] = (),
    seeds: int = 1,
    time_limit_min: Optional[int] = None,
    device: str = "auto", skip_complete: bool = True, checkpoint: str = "trained", data_root: Optional[str] = None,
) -> Plan:
    """One job per matching recipe and seed; rows whose every stage has a record are skipped.

    ``resources_for(recipe)`` is the launcher's rule for turning the recipe's GPU count into what a
    job asks for; ``time_limit_min`` (a cluster profile's) replaces the estimate-based limit.
    Seeds are ``runtime.seed``, ``runtime.seed + 1``, ...: seed k overrides the recipe's runtime.seed.
    ``checkpoint="released"`` plans eval, ms+flip and bench of each row's released checkpoint (no
    training); only records of the same checkpoint source count as done. ``data_root``: with_data_root.
    """
    if seeds < 1:
        raise NLBenchError(f"expected a count >= 1, got {seeds}", key="--seeds")
    if checkpoint not in CHECKPOINT_SOURCES:
        raise NLBenchError(f"expected one of {', '.join(CHECKPOINT_SOURCES)}, got {checkpoint!r}", key="--checkpoint")
    overrides = with_data_root(overrides, data_root)
    results = Path(results_dir).resolve()
    plan = Plan([], checkpoint=checkpoint, seeds=seeds)
    done = RecordStore.read(results, known_recipes=[p.stem for p in select_recipe_paths(pattern)]) \
        if skip_complete else None
    plan.records = done
    cache = str(cache_dir_default().resolve()) if checkpoint == "released" else None
    for path in select_recipe_paths(pattern):
        base = load_recipe(path, overrides, profile=profile)
        if checkpoint == "released" and base.release is None:
            raise NLBenchError("this recipe names no released checkpoint", base.source, "release")
        for k in range(seeds):
            seed = base.runtime.seed + k
            recipe = base if k == 0 else load_recipe(path, [*overrides, f"runtime.seed={seed}"], profile=profile)
            stages = stages_for(recipe, checkpoint)
            if done is not None and _skipped(plan, done, recipe, seed, stages):
                continue
            hours = estimate_gpu_hours(recipe, stages)
            job = Job(
                recipe=recipe,
                seed=seed,
                stages=stages,
                results_dir=str(results),
                work_dir=_work_dir(results, recipe, seed, checkpoint),
                data_root=str(resolve_data_root(recipe.data.data_root)),
                resources=resources_for(recipe),
                time_limit_min=time_limit_min or default_time_limit_min(hours, recipe.runtime.gpus),
                gpu_hours=hours,
                overrides=tuple(overrides),
                device=device,
                checkpoint_source=checkpoint,
                cache_dir=cache,
            )
            plan.jobs.append(job)
            _note_old_work_dir(plan, results, recipe, seed, job.work_dir)
            if checkpoint == "released":
                plan.training_gpu_hours[job.key] = estimate_gpu_hours(recipe, stages_for(recipe))
    return plan


def with_data_root(overrides: Sequence[str], data_root: Optional[str]) -> List[str]:
    """``overrides`` and, given a data root (run-all --data-root), ``data.data_root`` set to it made
    absolute here, where it was given: the planned (resolved) recipe says which data the job reads, as
    with ``--set data.data_root`` (a JSON string is a YAML string); its hash and work dir do not
    change (Recipe.hash leaves the data root out)."""
    if data_root is None:
        return list(overrides)
    return [*overrides, f"data.data_root={json.dumps(str(resolve_data_root(data_root)))}"]


def _work_dir(results: Path, recipe: Recipe, seed: int, checkpoint: str) -> str:
    """The job's work dir, named by its resolved recipe's hash: a changed recipe or --set trains anew
    beside the old run instead of meeting its checkpoints (io/layout.py)."""
    return str(ResultsLayout(results).work_dir(recipe.profile, recipe.name, seed, checkpoint, recipe.hash))


def _note_old_work_dir(plan: Plan, results: Path, recipe: Recipe, seed: int, work_dir: str) -> None:
    """Note, when the job's work dir does not exist yet, one of its seed named otherwise whose
    recipe.yaml resolves to the job's recipe hash: the old format (``seed<k>/``), or a hash of an
    older rule of ``Recipe.hash`` (before it left the data root out). run-all renames it (an
    interrupted run then resumes). An old-format one of another recipe is noted as left as it is."""
    layout = ResultsLayout(results)
    folder, pattern = layout.seed_work_dirs(recipe.profile, recipe.name, seed, plan.checkpoint)
    if Path(work_dir).exists() or not folder.is_dir():
        return
    for old in sorted(p for p in folder.iterdir() if p.is_dir() and pattern.fullmatch(p.name)):
        if _resolved_hash(old) == recipe.hash:
            plan.old_work_dirs.append((str(old), work_dir, True))
            return
    old_format = layout.work_dir(recipe.profile, recipe.name, seed, plan.checkpoint)
    if old_format.is_dir():
        plan.old_work_dirs.append((str(old_format), work_dir, False))


def _resolved_hash(work_dir: Path) -> Optional[str]:
    """The recipe hash of a work dir's recipe.yaml (the resolved recipe it ran); None without a readable one."""
    try:
        data = yaml.safe_load((work_dir / RESOLVED_RECIPE_FILE).read_text(encoding="utf-8"))
        return recipe_from_dict(data).hash if isinstance(data, dict) else None
    except (OSError, ValueError, yaml.YAMLError, NLBenchError):
        return None


def old_work_dir_lines(plan: Plan, renamed: bool) -> List[str]:
    """One line per old-format work dir: renamed (or, in a dry run, to be) or left as it is."""
    return [f"{'renamed' if renamed else 'run-all renames'} {old} to {Path(new).name}: its recipe.yaml is the "
            "planned recipe (a work dir is named seed<k>-<hash12> of it); the run resumes there" if same else
            f"left {old} as it is: its recipe.yaml is missing or another recipe than the one planned; "
            f"the row runs in {Path(new).name}" for old, new, same in plan.old_work_dirs]


def adopt_old_work_dirs(plan: Plan) -> List[str]:
    """Rename (atomically, in place) the old-format work dirs that ran the planned recipe; the lines saying so."""
    for old, new, same in plan.old_work_dirs:
        if same:
            os.rename(old, new)
    return old_work_dir_lines(plan, renamed=True)


def _skipped(plan: Plan, done: RecordStore, recipe: Recipe, seed: int, stages: Tuple[str, ...]) -> bool:
    """Whether the row is not planned, noted in ``plan``: complete (every stage has a record of this
    recipe and checkpoint source), or stopped by the guard. A stopped row stays stopped while its
    guard would stop it again; with guard.action warn (--set) it is planned and resumes."""
    key = f"{recipe.profile}/{recipe.name}/{source_part(plan.checkpoint)}seed{seed}"
    if set(stages) <= done.kinds_done(recipe.name, recipe.profile, seed, recipe.hash, plan.checkpoint):
        plan.skipped.append(key)
        return True
    if plan.checkpoint == "trained" and recipe.guard.action == "stop" and done.diverged(
            recipe.name, recipe.profile, seed, recipe.hash) is not None:
        plan.diverged.append(key)
        return True
    return False


def _hours(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_plan(plan: Plan, launcher: str) -> str:
    """The dry-run table: one line per job, the total, and what the seeds buy."""
    from tabulate import tabulate

    released = plan.checkpoint == "released"
    rows = []
    for j in plan.jobs:
        rows.append([
            j.name, j.seed, f"{j.recipe.runtime.gpus}x{j.recipe.data.imgs_per_gpu}", j.resources.describe(),
            " ".join(s.replace("eval_ms_flip", "ms+flip") for s in j.stages),
            f"{j.time_limit_min // 60}:{j.time_limit_min % 60:02d}", _hours(j.gpu_hours),
            *([_hours(plan.training_gpu_hours.get(j.key))] if released else []),
        ])
    headers = ["recipe", "seed", "GPUs x imgs", f"{launcher} resources", "stages", "time limit", "GPU-h (est.)"]
    if released:
        headers.append("GPU-h full training (est.)")
    out = [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
    total = plan.total_gpu_hours
    out.append("")
    if released:
        out.append(_released_total(plan))
    else:
        out.append(f"{len(plan.jobs)} job(s); estimated total: "
                   + ("- (no estimate for smoke-size models)" if total is None else f"{total:.0f} GPU-hours")
                   + (f"; skipped {len(plan.skipped)} complete row(s)" if plan.skipped else "")
                   + (f"; skipped {len(plan.diverged)} diverged row(s)" if plan.diverged else ""))
    if total is not None:
        out.append(f"GPU-hours are an estimate for V100s ({TRAIN_TMAC_PER_S} TMac/s training, "
                   f"{INFER_TMAC_PER_S} TMac/s inference, from the models' GMac cost); see benchmark/launch/cost.py.")
    out.append(seed_budget(plan.seeds, released))
    out.extend(old_work_dir_lines(plan, renamed=False))
    return "\n".join(out)


def _released_total(plan: Plan) -> str:
    total, training = plan.total_gpu_hours, plan.total_training_gpu_hours
    text = f"{len(plan.jobs)} job(s) on released checkpoints (no training); estimated total: "
    if total is None:
        text += "- (no estimate for smoke-size models)"
    else:
        text += f"{total:.1f} GPU-hours"
        if training:
            text += f", against {training:.0f} GPU-hours to train the same rows ({total / training:.1%} of it)"
    return text + (f"; skipped {len(plan.skipped)} complete row(s)" if plan.skipped else "")


def seed_budget(seeds: int, released: bool = False, std: float = SEED_STD_MIOU,
                tolerance: float = DEFAULT_TOLERANCE) -> str:
    """What ``seeds`` per row can decide: the 95% half-width at a typical seed std (docs: README)."""
    if released:
        return (f"seeds: {seeds} per row; a released checkpoint is one fixed set of weights, so its mIoU does not "
                "vary with the seed and one seed per row is enough (more only repeat the measurements; fps and Mem "
                "vary a little)")
    ladder = ", ".join(f"{n}: ±{half_width(std, n):.2f}" for n in (2, 3, 5, 7, 10))
    least = seeds_for_half_width(std, tolerance)
    if seeds < 2:
        head = (f"seeds: 1 per row gives no confidence interval (one run has no spread); at a seed std of about "
                f"{std} mIoU the 95% interval (Student t) is mean ± h with h by seeds {ladder}")
    else:
        head = (f"seeds: {seeds} per row give a 95% interval (Student t) of mean ± "
                f"{half_width(std, seeds):.2f} mIoU at a seed std of about {std} mIoU (seeds {ladder})")
    return (head + f"; `nlbench compare --method ci` calls a row reproduced only when the interval lies within "
            f"published ± {tolerance}, which takes at least {least} seeds")
