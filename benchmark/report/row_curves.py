"""`nlbench curves`: every seed's training curves of a row against the row's reference curve.

Per row: the checks of ``benchmark.curves.checks`` (schedule, effective batch, loss, mIoU at each
eval point), a table of the eval points (the reference's mIoU, each seed's, their mean, delta, the
noise model's seed spread, drift and stop margins, verdict), and an overlay figure (PNG + SVG) of
loss, lr and mIoU against iteration: the reference in black, each seed in colour, the seeds' band
shaded. ``compare --curves`` adds the verdicts to its
report and JUnit file and ``plots`` draws the overlays, both through this module. docs/CURVES.md.

The runs are read from ``RESULTS/work/<profile>/<recipe>/seed<k>-<hash12>/train.log.jsonl``
(``train.log.json`` when that is all there is; ``seed<k>/`` for a work dir from before the hash was in
its name): of each seed, the work dir of the configuration its records were chosen from
(report/seed_logs.py), so its curves sit beside that configuration's figures.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import matplotlib.pyplot as plt
from tabulate import tabulate

from benchmark.catalog import load_published, released_differences, select_recipe_paths
from benchmark.curves.checks import DIVERGED, Assessment, assess, settings_from
from benchmark.curves.reader import Curve, read_curve
from benchmark.curves.reference import RELEASED, reference_kind, reference_label, resolve_reference
from benchmark.errors import NLBenchError
from benchmark.io.layout import ResultsLayout
from benchmark.recipe import Recipe, load_recipe, published_recipe, resolve_recipe_path
from benchmark.report.figures import save_figure
from benchmark.report.seed_logs import SeedRecords, row_seeds, seed_logs
from benchmark.run.records import Kind, Record, RowKey

Warn = Callable[[str], None]  # told each warning line (the commands print them to stderr)

RUN_LOGS = ("train.log.jsonl", "train.log.json")
Chosen = Dict[RowKey, Dict[Kind, Record]]  # the records used per row and seed (run/records.py chosen_by_kind)


@dataclass(frozen=True)
class RowCurves:
    recipe: Recipe
    runs: Dict[str, Curve]  # "seed0" -> curve
    reference: Optional[Curve]
    reference_label: str
    assessment: Optional[Assessment]
    note: str = ""  # why there is no assessment
    deviations: str = ""  # the runs' ways of differing from the published setting (train records; "; "-joined)

    @property
    def verdict(self) -> str:
        return self.assessment.verdict if self.assessment is not None else "not assessed"


# ----------------------------------------------------------------------------- gathering


def run_logs(results_dir: Path, profile: str, recipe: str, seeds: SeedRecords) -> Dict[str, Path]:
    """seed label (``seed<k>``) -> that seed's training log (nlbench's JSON lines first, its MMSeg form
    else), of the configuration its records in ``seeds`` were chosen from (report/seed_logs.py)."""
    return {f"seed{seed}": log for seed, log in seed_logs(results_dir, profile, recipe, seeds, RUN_LOGS).items()}


def assess_row(recipe: Recipe, results_dir: Path, reference: Optional[str] = RELEASED,  # noqa: PLR0913
               offline: bool = False, strict: bool = True, *, seeds: SeedRecords, warn: Warn) -> RowCurves:
    """One row's runs against its reference. ``seeds``: the records chosen for the row's seeds
    (``row_seeds``), which pick each seed's log and give the deviations. With ``strict`` False a missing
    log or reference gives a row without an assessment (and a note) instead of an NLBenchError; ``warn``
    is told each line of the logs that could not be read."""
    logs = run_logs(results_dir, recipe.profile, recipe.name, seeds)
    try:
        if not logs:
            looked = ResultsLayout.of(results_dir).row_work(recipe.profile, recipe.name)
            raise NLBenchError(f"no training log of this row (looked in {looked}/seed*/)", key=recipe.name)
        sched = recipe.schedule
        runs = {seed: read_curve(path, sched.eval_interval, sched.max_iters) for seed, path in logs.items()}
        path = resolve_reference(recipe, reference, offline=offline)
        ref = read_curve(path, sched.eval_interval, sched.max_iters)
    except NLBenchError as exc:
        if strict:
            raise
        return RowCurves(recipe, {}, None, "", None, str(exc))
    for curve in [*runs.values(), ref]:
        for line in curve.warnings:
            warn(f"warning: {line}")
    max_iters = next((c.max_iters for c in runs.values() if c.max_iters), recipe.schedule.max_iters)
    found = assess(runs, ref, settings_from(recipe.guard), max_iters, published_recipe(recipe).effective_batch,
                   reference_kind(recipe, reference))
    return RowCurves(recipe, runs, ref, reference_label(path), found, deviations=train_deviations(seeds))


def train_deviations(seeds: SeedRecords) -> str:
    """The deviations (run/deviations.py) the seeds' chosen train records carry, each phrase once."""
    phrases: Dict[str, None] = {}
    for _, kinds in sorted(seeds.items()):
        train = kinds.get(Kind.TRAIN)
        if train is not None and train.deviations:
            phrases.update(dict.fromkeys(train.deviations))
    return "; ".join(phrases)


def select_recipes(recipe: str, profile: str, overrides: Sequence[str] = ()) -> List[Recipe]:
    """A recipe name or file, or a glob on recipe names ('*' for every row)."""
    if any(c in recipe for c in "*?["):
        paths = select_recipe_paths(recipe, key="RECIPE")
    else:
        paths = [resolve_recipe_path(recipe)]
    return [load_recipe(p, overrides, profile) for p in paths]


# ----------------------------------------------------------------------------- text and JSON


def _fmt(value: Optional[float], digits: int = 2, sign: bool = False) -> str:
    if value is None or value != value:
        return "-"
    value = round(value, digits) + 0.0  # no "-0.00"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def eval_table(row: RowCurves) -> str:
    seeds = list(row.runs)
    body = []
    for r in row.assessment.evals:
        body.append([str(r.iteration), _fmt(r.published), *[_fmt(r.seeds.get(s)) for s in seeds], _fmt(r.mean),
                     _fmt(r.delta, sign=True), _fmt(r.spread), _fmt(r.drift_margin), _fmt(r.margin), r.verdict])
    headers = ["iteration", f"{row.assessment.reference_kind} mIoU", *seeds, "mean", "delta", "seed spread",
               "drift margin", "stop margin", "verdict"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def format_row(row: RowCurves) -> str:
    head = f"{row.recipe.name} [{row.recipe.profile}]"
    if row.assessment is None:
        return f"{head}: not assessed: {row.note}"
    a = row.assessment
    batch = f"{_fmt(a.effective_batch, 0)} ({a.reference_kind} {_fmt(a.published_batch, 0)})"
    lines = [f"{head}: reference {row.reference_label} ({row.reference.format}); runs: {', '.join(row.runs)}",
             *_release_lines(row),
             f"  schedule: {a.schedule.describe()}",
             f"  effective batch: {batch}" + (" DIFFERS: said beside every verdict" if a.batch_note else ""),
             f"  loss: {a.loss.describe()}"]
    if a.evals:
        lines.append(eval_table(row))
    else:
        lines.append("  mIoU: no eval point of the reference was reached")
    lines.append(f"  verdict: {a.summary()}" + (f"; {row.deviations}" if row.deviations else ""))
    return "\n".join(lines)


def _release_lines(row: RowCurves) -> List[str]:
    """For the published log of a row: whose run it is, and the figures published for its checkpoint
    (where a later release replaced the table's, those differ: catalog.released_differences)."""
    release = row.recipe.release
    if row.assessment is None or row.assessment.reference_kind != "published" or release is None:
        return []
    published = load_published()
    if row.recipe.name not in published.index:
        return []
    p = published.loc[row.recipe.name]
    figures = f"mIoU {p['released_miou_text'] or '-'}, ms+flip {p['released_miou_ms_flip_text'] or '-'}"
    differs = released_differences(published).get(row.recipe.name)
    return [f"  published log: the training run of the released checkpoint {release.stamp} ({figures} published "
            "for it" + (f"; the table's {p['miou_text']} / {p['miou_ms_flip_text'] or '-'} are an earlier "
                        "checkpoint's)" if differs else ")")]


def row_json(row: RowCurves) -> Dict[str, Any]:
    body: Dict[str, Any] = {"recipe": row.recipe.name, "profile": row.recipe.profile, "verdict": row.verdict,
                            "reference": row.reference_label or None, "seeds": list(row.runs), "note": row.note,
                            "deviations": row.deviations.split("; ") if row.deviations else []}
    if row.assessment is not None:
        a = row.assessment
        body.update(a.to_dict())
        body.update({"summary": a.summary(), "schedule_text": a.schedule.describe(), "loss_text": a.loss.describe()})
    return body


# ----------------------------------------------------------------------------- overlay figure


def _series(curve: Curve, key: str) -> List[tuple]:
    if key == "mIoU":
        return [(e.iteration, e.mIoU) for e in curve.evals]
    return [(p.iteration, getattr(p, key)) for p in curve.train if getattr(p, key) is not None
            and math.isfinite(getattr(p, key))]


def _band(ax, runs: Sequence[Curve], key: str) -> None:
    """The seeds' min-max band at the iterations every seed logged."""
    series = [dict(_series(c, key)) for c in runs]
    common = sorted(set.intersection(*[set(s) for s in series])) if series else []
    if len(runs) > 1 and common:
        ax.fill_between(common, [min(s[i] for s in series) for i in common],
                        [max(s[i] for s in series) for i in common], color="tab:blue", alpha=0.15,
                        label="seeds: min-max band")


def plot_overlay(row: RowCurves):
    """Loss, lr and mIoU against iteration: the reference thick in black under each seed in colour,
    the seeds' band shaded, the mIoU margin dashed; one legend under the panels."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = [("loss", "training loss (total)"), ("lr", "learning rate"), ("mIoU", "validation mIoU (%)")]
    colors = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes, panels):
        ref = _series(row.reference, key)
        ax.plot([p[0] for p in ref], [p[1] for p in ref], color="black", linewidth=3.0, alpha=0.8,
                marker="o" if key == "mIoU" else None, markersize=7, label="reference curve")
        _band(ax, list(row.runs.values()), key)
        for i, (seed, curve) in enumerate(row.runs.items()):
            points = _series(curve, key)
            ax.plot([p[0] for p in points], [p[1] for p in points], color=colors(i % 10), linewidth=1.2,
                    marker="o" if key == "mIoU" else None, markersize=4, label=seed)
        if key == "mIoU" and row.assessment is not None and row.assessment.evals:
            evals = row.assessment.evals
            ax.plot([r.iteration for r in evals], [r.published - r.drift_margin for r in evals], color="grey",
                    linestyle=":", linewidth=1, label="reference - drift margin")
            ax.plot([r.iteration for r in evals], [r.published - r.margin for r in evals], color="grey",
                    linestyle="--", linewidth=1, label="reference - stop margin")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    handles, labels = axes[2].get_legend_handles_labels()
    more = [(h, lab) for h, lab in zip(*axes[0].get_legend_handles_labels()) if lab not in labels]
    fig.legend(handles + [h for h, _ in more], labels + [lab for _, lab in more], loc="lower center",
               ncol=min(6, len(labels) + len(more)), fontsize=8, frameon=False)
    summary = row.assessment.summary() if row.assessment is not None else row.note
    fig.suptitle(f"{row.recipe.name} ({row.recipe.profile} profile): {summary}\nreference: {row.reference_label}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def overlay_stem(row: RowCurves) -> str:
    return f"overlay_{row.recipe.profile}_{row.recipe.name}"


def write_overlays(rows: Sequence[RowCurves], out_dir: Path) -> List[Path]:
    written: List[Path] = []
    for row in rows:
        if row.assessment is not None:
            written += save_figure(plot_overlay(row), Path(out_dir), overlay_stem(row))
    return written


def overlay_plots(results_dir: Path, profile: str, out_dir: Path, reference: str, chosen: Chosen,  # noqa: PLR0913
                  warn: Warn) -> List[Path]:
    """`nlbench plots`: the overlay of every row of ``profile`` that has runs and a reference in hand
    (published logs only from the cache: plotting downloads nothing). ``reference``: released, or a
    log file (for every row) or a folder of ``<recipe>.log.json`` files. ``chosen``: the records used
    (``Collected.newest``)."""
    rows = []
    for path in select_recipe_paths(None):
        recipe = load_recipe(path, profile=profile)
        seeds = row_seeds(chosen, recipe.name, profile)
        if run_logs(results_dir, profile, recipe.name, seeds):
            row = assess_row(recipe, results_dir, reference, offline=True, strict=False, seeds=seeds, warn=warn)
            if row.assessment is None:
                warn(f"note: no overlay for {recipe.name} [{profile}]: {row.note}")
            rows.append(row)
    return write_overlays(rows, out_dir)


# ----------------------------------------------------------------------------- compare --curves


def curve_rows(results_dir: Path, profiles: Sequence[str], reference: str, chosen: Chosen,
               warn: Warn) -> List[RowCurves]:
    """Every row of ``profiles`` with runs, against its reference (``reference`` as in overlay_plots;
    published logs from the cache only: a gate downloads nothing), with the guard's noise-model
    margins (compare's tolerance is for the final numbers, not for a curve's eval points)."""
    rows = []
    for profile in profiles:
        for path in select_recipe_paths(None):
            recipe = load_recipe(path, profile=profile)
            seeds = row_seeds(chosen, recipe.name, profile)
            if run_logs(results_dir, profile, recipe.name, seeds):
                rows.append(assess_row(recipe, results_dir, reference, offline=True, strict=False, seeds=seeds,
                                       warn=warn))
    return rows


def curve_lines(rows: Sequence[RowCurves]) -> str:
    table = [[r.recipe.name, r.recipe.profile, r.verdict,
              r.assessment.summary()[len(r.verdict):].lstrip(": ") if r.assessment is not None else r.note]
             for r in rows]
    return tabulate(table, headers=["recipe", "profile", "curves", "note"], tablefmt="github", disable_numparse=True)


def add_junit_cases(suite: ET.Element, rows: Sequence[RowCurves]) -> None:
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"nlbench.{r.recipe.profile}.{r.recipe.name}", name="curves")
        text = f"curves against {r.reference_label or 'no reference'}: " + (
            r.assessment.summary() if r.assessment is not None else r.note)
        if r.verdict == DIVERGED:
            ET.SubElement(case, "failure", message=text).text = text
        elif r.assessment is None:
            ET.SubElement(case, "skipped", message=text)
        else:
            ET.SubElement(case, "system-out").text = text
    suite.set("tests", str(int(suite.get("tests", "0")) + len(rows)))
    suite.set("failures", str(int(suite.get("failures", "0")) + sum(r.verdict == DIVERGED for r in rows)))
    suite.set("skipped", str(int(suite.get("skipped", "0")) + sum(r.assessment is None for r in rows)))


# ----------------------------------------------------------------------------- the command

