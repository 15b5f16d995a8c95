"""Recipes -> jobs: one job per (row, seed), with its stages, resources, time limit and cost estimate.

The plan is pure: it reads recipes and the results folder and launches nothing. Launchers take the
jobs and decide only *where* they run; what a job does is ``benchmark.launch.job.run_job``.

GPU-hour estimate (an estimate, not a measurement): the convolution cost of the NonLocal model
grows linearly with the pixels of its input and the non-local matrix products quadratically, so
with the costs in mmseg_facts.md (R-50-D8 at 512x1024: 400 GMac of convolutions + 34 GMac of
non-local products; R-101-D8: 555 + 34)

    GMac(h, w) = conv[depth] * h * w / (512 * 1024) + 34 * (h * w / (512 * 1024)) ** 2

reproduces the stated costs at 769x769 and 1024x2048 within 2%. A training iteration costs 3x a
forward pass (backward ~ 2x forward) per image; evaluation costs one forward per view (whole image,
each sliding window, 12 views for ms+flip). Throughput assumed on a V100: 6.0 TMac/s for inference,
which is what the published fps of the measured rows imply (5.8-6.1 TMac/s), and 4.5 TMac/s for
training (75% of that, for SyncBN, data loading and a less efficient backward). The auxiliary head
(~3%) and data loading stalls are ignored.
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmark.errors import NLBenchError
from benchmark.recipe import Recipe, list_recipe_paths, load_recipe

STAGES_ALL = ("train", "eval", "eval_ms_flip", "bench")

# ----------------------------------------------------------------------------- cost model

_REF_PIXELS = 512 * 1024
_CONV_GMAC_AT_REF = {50: 400.0, 101: 555.0}  # mmseg_facts.md, "Cost for reference"
_NL_GMAC_AT_REF = 34.0
INFER_TMAC_PER_S = 6.0
TRAIN_TMAC_PER_S = 4.5
# Validation images per dataset (Cityscapes val, ADE20K validation, VOC 2012 val).
VAL_IMAGES = {"cityscapes": 500, "ade20k": 2000, "voc12aug": 1449}
# A typical validation image (h, w) before the test resize: Cityscapes is 1024x2048; ADE20K and VOC
# images are ~375-512 px high with a 4:3-ish aspect, so the (2048, 512) test scale makes them ~512x683.
TYPICAL_VAL_SIZE = {"cityscapes": (1024, 2048), "ade20k": (384, 512), "voc12aug": (375, 500)}


def forward_gmac(depth: int, h: int, w: int) -> Optional[float]:
    """Estimated GMac of one forward pass at (h, w), or None for a depth the table lacks."""
    if depth not in _CONV_GMAC_AT_REF:
        return None
    scale = h * w / _REF_PIXELS
    return _CONV_GMAC_AT_REF[depth] * scale + _NL_GMAC_AT_REF * scale * scale


def _test_size(recipe: Recipe, h: int, w: int, ratio: float = 1.0) -> Tuple[int, int]:
    """Keep-ratio test resize of an (h, w) image to img_scale x ratio (mmcv's rule)."""
    from benchmark.data.resize import keep_ratio_size

    return keep_ratio_size(h, w, tuple(int(s * ratio) for s in recipe.data.img_scale))


def _view_gmac(recipe: Recipe, h: int, w: int) -> float:
    """One test view at an already-resized (h, w): whole image, or every sliding window."""
    depth = recipe.model.depth
    if recipe.test.mode == "whole":
        return forward_gmac(depth, h, w) or 0.0
    ch, cw = recipe.test.crop_size
    sh, sw = recipe.test.stride
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    return rows * cols * (forward_gmac(depth, min(ch, h), min(cw, w)) or 0.0)


def image_test_gmac(recipe: Recipe, ms_flip: bool = False) -> float:
    h, w = TYPICAL_VAL_SIZE[recipe.data.dataset]
    if not ms_flip:
        return _view_gmac(recipe, *_test_size(recipe, h, w))
    return sum(2 * _view_gmac(recipe, *_test_size(recipe, h, w, r)) for r in recipe.test.ms_flip_ratios)


def estimate_gpu_hours(recipe: Recipe, stages: Sequence[str] = STAGES_ALL) -> Optional[float]:
    """Estimated V100 GPU-hours of one job (see the module docstring), None for smoke-size models."""
    depth = recipe.model.depth
    crop = forward_gmac(depth, *recipe.data.crop_size)
    if crop is None:
        return None
    sched = recipe.schedule
    n_val = VAL_IMAGES[recipe.data.dataset]
    single = image_test_gmac(recipe)
    train_gmac = eval_gmac = 0.0
    if "train" in stages:
        train_gmac = 3.0 * crop * recipe.effective_batch * sched.max_iters
        eval_gmac += (sched.max_iters // sched.eval_interval) * n_val * single  # evaluations while training
    if "eval" in stages:
        eval_gmac += n_val * single
    if "eval_ms_flip" in stages:
        eval_gmac += n_val * image_test_gmac(recipe, ms_flip=True)
    if "bench" in stages:
        eval_gmac += recipe.bench.total_images * single
    seconds = train_gmac / (TRAIN_TMAC_PER_S * 1e3) + eval_gmac / (INFER_TMAC_PER_S * 1e3)
    return seconds / 3600.0


# ----------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Resources:
    """What one job asks for: ``nodes`` x ``tasks_per_node`` ranks, one GPU per rank (0 = CPU)."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        if self.gpus_per_node == 0:
            return f"cpu x{self.world_size}"
        return f"{self.nodes}n x {self.gpus_per_node} GPU"


@dataclass(frozen=True)
class Job:
    """One row and seed: everything a worker needs, picklable (submitit sends it to the node)."""

    recipe: Recipe  # resolved, with runtime.seed set to ``seed``
    seed: int
    stages: Tuple[str, ...]
    results_dir: str  # absolute
    work_dir: str  # absolute: RESULTS/work/<profile>/<recipe>/seed<k>
    data_root: str  # absolute, resolved where the plan was made (jobs may start elsewhere)
    resources: Resources
    time_limit_min: int
    gpu_hours: Optional[float]  # estimate (V100), None for smoke-size models
    overrides: Tuple[str, ...] = ()
    device: str = "auto"

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def profile(self) -> str:
        return self.recipe.profile

    @property
    def key(self) -> str:
        """Stable identity of a job across runs: <profile>/<recipe>/seed<k>."""
        return f"{self.profile}/{self.name}/seed{self.seed}"

    def to_dict(self) -> Dict[str, object]:
        """JSON-able summary kept under RESULTS/jobs/ (status reads it; the recipe is named, not copied)."""
        return {
            "key": self.key,
            "recipe": self.name,
            "recipe_source": self.recipe.source,
            "recipe_hash": self.recipe.hash,
            "profile": self.profile,
            "seed": self.seed,
            "stages": list(self.stages),
            "max_iters": self.recipe.schedule.max_iters,
            "results_dir": self.results_dir,
            "work_dir": self.work_dir,
            "data_root": self.data_root,
            "nodes": self.resources.nodes,
            "tasks_per_node": self.resources.tasks_per_node,
            "gpus_per_node": self.resources.gpus_per_node,
            "time_limit_min": self.time_limit_min,
            "gpu_hours_estimate": self.gpu_hours,
            "overrides": list(self.overrides),
            "device": self.device,
        }


@dataclass
class Plan:
    jobs: List[Job]
    skipped: List[str] = field(default_factory=list)  # keys of rows already complete

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


def record_kinds(results_dir: os.PathLike | str, recipe: str, profile: str, seed: int,
                 recipe_hash: Optional[str] = None) -> set:
    """Kinds with a valid record for (recipe, profile, seed): what plan, job and status all count as done.

    Only that row's folder is read; a corrupt or foreign file counts for nothing (the stage runs again).
    With ``recipe_hash``, only records made with exactly that resolved recipe count, so a changed
    recipe or ``--set`` runs the stages again instead of reusing another configuration's results.
    """
    import json

    from benchmark.report.records import record_dir, validate_record

    kinds = set()
    folder = record_dir(results_dir, recipe, profile, seed)
    for path in folder.glob("*.json") if folder.is_dir() else []:
        if path.name.startswith("."):
            continue  # a writer's temporary file
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if validate_record(record) or (record["recipe"], record["profile"], record["seed"]) != (recipe, profile, seed):
            continue
        if recipe_hash is not None and record["provenance"].get("recipe_hash") != recipe_hash:
            continue
        kinds.add(record["kind"])
    return kinds


def select_recipe_paths(pattern: Optional[str]) -> List[Path]:
    paths = list_recipe_paths()
    if pattern:
        paths = [p for p in paths if fnmatch.fnmatch(p.stem, pattern)]
        if not paths:
            raise NLBenchError(f"no recipe matches {pattern!r}; `nlbench list` shows the names", key="--filter")
    if not paths:
        raise NLBenchError("no recipes found", key="recipes")
    return paths


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
    for path in select_recipe_paths(pattern):
        base = load_recipe(path, overrides, profile=profile)
        for k in range(seeds):
            seed = base.runtime.seed + k
            recipe = base if k == 0 else load_recipe(path, [*overrides, f"runtime.seed={seed}"], profile=profile)
            stages = stages_for(recipe)
            if skip_complete and set(stages) <= record_kinds(results, recipe.name, recipe.profile, seed, recipe.hash):
                skipped.append(f"{recipe.profile}/{recipe.name}/seed{seed}")
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
    return Plan(jobs, skipped)


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
               + (f"; skipped {len(plan.skipped)} complete row(s)" if plan.skipped else ""))
    if total is not None:
        out.append(f"GPU-hours are an estimate for V100s ({TRAIN_TMAC_PER_S} TMac/s training, "
                   f"{INFER_TMAC_PER_S} TMac/s inference, from the models' GMac cost); see benchmark/launch/plan.py.")
    return "\n".join(out)
