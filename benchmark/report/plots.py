"""`nlbench plots`: PNG + SVG figures from the records and the training logs.

One set of figures per recipe profile (full-size and smoke results never share an axis):
  miou_<profile>            reproduced mIoU per row (mean, ± std, every seed) beside its reference
  miou_vs_fps_<profile>     mIoU against inference speed, one panel per dataset
  memory_<profile>          training memory per row
  training_curves_<profile> loss, learning rate and validation mIoU per iteration (train.log.jsonl)
  overlay_<profile>_<recipe> each row's seeds against its reference curve (report/row_curves.py)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import matplotlib.pyplot as plt
import pandas as pd

from benchmark.catalog import load_published
from benchmark.curves.reader import read_curve
from benchmark.errors import NLBenchError
from benchmark.io.layout import ResultsLayout
from benchmark.report.collect import TRAINED, Collected, Warn, collect_or_warn, of_source
from benchmark.report.figures import save_figure
from benchmark.report.references import Reference, default_references, device_class
from benchmark.report.row_curves import Chosen, overlay_plots
from benchmark.report.seed_logs import SeedRecords, row_seeds, seed_logs

DATASET_SHORT = {"Cityscapes": "CS", "ADE20K": "ADE", "Pascal VOC 2012 + Aug": "VOC"}


def row_label(p: pd.Series) -> str:
    """'CS R-50 512x1024 40k': dataset, backbone, crop and schedule identify a row."""
    dataset = DATASET_SHORT.get(p["dataset"], p["dataset"])
    return f"{dataset} {p['backbone'].replace('-D8', '')} {p['crop_size']} {int(p['lr_schd']) // 1000}k"


def _reference_for(profile: str) -> Optional[Reference]:
    try:
        return default_references([profile]).get(profile)
    except NLBenchError:
        return None


def _per_row(summary: pd.DataFrame, published: pd.DataFrame, profile: str, metric: str, height: float):
    """A figure one slot wide per row of ``profile`` (in the published order) and that metric's means/stds."""
    rows = summary[summary["profile"] == profile].set_index("recipe")
    order = [r for r in published.index if r in rows.index]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(order) + 2), height))
    means = [rows.loc[r, f"{metric}_mean"] for r in order]
    stds = [0.0 if math.isnan(rows.loc[r, f"{metric}_std"]) else rows.loc[r, f"{metric}_std"] for r in order]
    return fig, ax, rows, order, list(range(len(order))), means, stds


def plot_miou(summary: pd.DataFrame, per_seed: pd.DataFrame, published: pd.DataFrame, profile: str,
              ref: Optional[Reference]):
    fig, ax, rows, order, xs, means, stds = _per_row(summary, published, profile, "miou", 4.8)
    ax.errorbar(xs, means, yerr=stds, fmt="o", color="tab:blue", capsize=4, markersize=7,
                label="reproduced: mean ± std over seeds")
    seeds = per_seed[per_seed["profile"] == profile]
    for x, recipe in zip(xs, order):
        values = seeds.loc[seeds["recipe"] == recipe, "miou"].dropna()
        ax.scatter([x + 0.15] * len(values), values, s=12, color="tab:blue", alpha=0.5,
                   label="reproduced: one seed" if x == 0 else None)
    if ref is not None:
        ref_values = [ref.table.loc[r, "miou"] if r in ref.table.index else float("nan") for r in order]
        ax.scatter(xs, ref_values, marker="D", s=40, facecolors="none", edgecolors="black",
                   label=f"reference: {ref.label}")
    ax.set_xticks(xs)
    ax.set_xticklabels([row_label(published.loc[r]) for r in order], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mIoU (%), single-scale test")
    title = f"Reproduced vs reference mIoU per row ({profile} profile)"
    if profile != "full":
        title += "\nsmoke: tiny model on synthetic data, not comparable with the published numbers"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def settings(published: pd.DataFrame, recipes) -> Dict[str, List[str]]:
    """Dataset setting ('CS 512x1024', 'ADE 512x512', ...) -> its recipes among ``recipes``, in the
    published order. Rows of one setting differ only in backbone and schedule."""
    groups: Dict[str, List[str]] = {}
    wanted = set(recipes)
    for recipe, p in published.iterrows():
        if recipe in wanted:
            dataset = DATASET_SHORT.get(p["dataset"], p["dataset"])
            groups.setdefault(f"{dataset} {p['crop_size']}", []).append(recipe)
    return groups


# Within a setting: one colour per backbone, one line style and marker per schedule (shorter first),
# so every curve and point of a panel can be told apart, in colour and in grey.
BACKBONE_COLORS = {"R-50-D8": "tab:blue", "R-101-D8": "tab:red"}
SCHEDULE_STYLES = [("--", "o"), ("-", "^")]
# Curves that coincide (R-50 and R-101 share a schedule, hence their lr) stay visible: R-50's line is
# drawn wide and underneath, R-101's thin on top of it.
BACKBONE_LINES = {"R-50-D8": (2.8, 2), "R-101-D8": (1.2, 3)}  # (line width, zorder)


def row_style(published: pd.DataFrame, recipe: str, group: List[str]) -> Dict[str, Any]:
    p = published.loc[recipe]
    schedules = sorted({int(published.loc[r, "lr_schd"]) for r in group})
    linestyle, marker = SCHEDULE_STYLES[min(schedules.index(int(p["lr_schd"])), len(SCHEDULE_STYLES) - 1)]
    linewidth, zorder = BACKBONE_LINES.get(p["backbone"], (1.3, 3))
    return {"color": BACKBONE_COLORS.get(p["backbone"], "tab:green"), "linestyle": linestyle, "marker": marker,
            "linewidth": linewidth, "zorder": zorder,
            "label": f"{p['backbone'].replace('-D8', '')} {int(p['lr_schd']) // 1000}k"}


def _panel_grid(n: int, width: float, height: float):
    cols = min(n, 2)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, max(cols, 1), figsize=(width * max(cols, 1), height * rows), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_miou_vs_fps(summary: pd.DataFrame, published: pd.DataFrame, profile: str):
    """One panel per dataset setting; points told apart by colour (backbone) and marker (schedule),
    named in a legend below the panel rather than by labels beside the points (which overlap)."""
    rows = summary[summary["profile"] == profile].set_index("recipe")
    groups = settings(published, rows.index) or {"no rows": []}
    fig, axes = _panel_grid(len(groups), 5.2, 4.4)
    devices = sorted({str(d) for d in rows["device_name"].dropna()}) or ["unknown device"]
    for ax, (setting, recipes) in zip(axes, groups.items()):
        for recipe in recipes:
            r, p, style = rows.loc[recipe], published.loc[recipe], row_style(published, recipe, recipes)
            if math.isnan(r["fps_mean"]) or math.isnan(r["miou_mean"]):
                continue
            ax.scatter(r["fps_mean"], r["miou_mean"], color=style["color"], marker=style["marker"], s=45,
                       label=f"{style['label']} (reproduced)")
            # The published point is drawn only when the speed was measured on the same device class.
            if profile == "full" and device_class(r["device_name"]) == "V100" and not math.isnan(p["fps"]):
                ax.scatter(p["fps"], p["miou"], marker=style["marker"], facecolors="none",
                           edgecolors=style["color"], s=45, label=f"{style['label']} (published, V100)")
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel(f"inference speed (images/s) on {', '.join(devices)}", fontsize=8)
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle(f"mIoU vs inference speed per dataset setting ({profile} profile)", fontsize=11)
    return fig


def plot_memory(summary: pd.DataFrame, published: pd.DataFrame, profile: str):
    fig, ax, rows, order, xs, means, stds = _per_row(summary, published, profile, "mem_gb", 4.6)
    devices = sorted({str(d) for d in rows["device_name"].dropna()}) or ["unknown device"]
    ax.bar(xs, [0.0 if math.isnan(m) else m for m in means], yerr=stds, color="tab:orange", capsize=3,
           label=f"reproduced peak training memory on {', '.join(devices)}")
    same_device = [device_class(rows.loc[r, "device_name"]) == "V100" for r in order]
    if profile == "full" and any(same_device):
        pub = [published.loc[r, "mem_gb"] if ok else float("nan") for r, ok in zip(order, same_device)]
        ax.scatter(xs, pub, marker="D", facecolors="none", edgecolors="black", label="published (V100)", zorder=3)
    if all(math.isnan(m) for m in means):
        ax.text(0.5, 0.5, "no memory figure in these records", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks(xs)
    ax.set_xticklabels([row_label(published.loc[r]) for r in order], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Mem (GB): peak allocated per device")
    ax.set_title(f"Training memory per row ({profile} profile)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def read_train_log(path: Path) -> Dict[str, Dict[int, float]]:
    """key -> {iteration: value} for loss, loss_decode, loss_aux, lr (train lines) and mIoU (evaluations),
    as the training-log reader (curves/reader.py) reads the log: lines it cannot use are skipped, a
    resumed run that logs an iteration twice keeps the later value; a log it cannot read gives {}."""
    try:
        curve = read_curve(path)
    except NLBenchError:
        return {}
    series: Dict[str, Dict[int, float]] = {}
    for point in curve.train:
        values = {"loss": point.loss, "loss_decode": point.terms.get("loss_decode"),
                  "loss_aux": point.terms.get("loss_aux"), "lr": point.lr}
        for key, value in values.items():
            if value is not None:
                series.setdefault(key, {})[point.iteration] = value
    if curve.evals:
        series["mIoU"] = {e.iteration: e.mIoU for e in curve.evals}
    return series


CURVE_PANELS = [("loss", "training loss (decode + weighted aux)"), ("lr", "learning rate (poly)"),
                ("mIoU", "validation mIoU (%)")]


def row_train_logs(results_dir: Path, profile: str, recipe: str, seeds: SeedRecords) -> List[Path]:
    """The ``train.log.jsonl`` of each seed of one row, by seed: of the configuration its records in
    ``seeds`` were chosen from (report/seed_logs.py)."""
    return list(seed_logs(results_dir, profile, recipe, seeds, ("train.log.jsonl",)).values())


def train_logs(results_dir: Path, profile: str, chosen: Chosen) -> List[Path]:
    """``row_train_logs`` of every row of a profile, by recipe (``chosen``: ``Collected.newest``)."""
    folder = ResultsLayout.of(results_dir).profile_work(profile)
    recipes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [log for name in recipes
            for log in row_train_logs(results_dir, profile, name, row_seeds(chosen, name, profile))]


def _seed_label(log: Path) -> str:
    """'seed0' for a log in .../seed0-<hash12>/ (or an older .../seed0/)."""
    return f"seed{ResultsLayout.seed_of(log.parent.name)}"


def _draw_curves(axes, path: Path, style: Dict[str, Any], label: str) -> None:
    series = read_train_log(path)
    for ax, (key, _) in zip(axes, CURVE_PANELS):
        points = sorted(series.get(key, {}).items())
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], color=style["color"],
                    linestyle=style["linestyle"], linewidth=style.get("linewidth", 1.3), zorder=style.get("zorder", 3),
                    marker=style["marker"] if key == "mIoU" else None, markersize=4, alpha=style.get("alpha", 1.0),
                    label=label)


def _label_axes(axes, row_title: str) -> None:
    for ax, (_, title) in zip(axes, CURVE_PANELS):
        ax.set_title(f"{row_title}: {title}" if row_title else title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(alpha=0.3)


def plot_training_curves(results_dir: Path, published: pd.DataFrame, profile: str, chosen: Chosen):
    """One row of panels (loss, lr, mIoU) per dataset setting, a legend beside each row."""
    logs = train_logs(results_dir, profile, chosen)
    by_recipe: Dict[str, List[Path]] = {}
    for path in logs:
        by_recipe.setdefault(path.parent.parent.name, []).append(path)
    groups = settings(published, by_recipe)
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 3, figsize=(15, 3.3 * len(groups)), squeeze=False, layout="constrained")
    for row_axes, (setting, recipes) in zip(axes, groups.items()):
        for recipe in recipes:
            style = row_style(published, recipe, recipes)
            for i, path in enumerate(by_recipe[recipe]):
                seed = f" {_seed_label(path)}" if len(by_recipe[recipe]) > 1 else ""
                # Further seeds of a row: the same colour and line style, lighter.
                _draw_curves(row_axes, path, dict(style, alpha=1.0 if i == 0 else 0.5), style["label"] + seed)
        _label_axes(row_axes, setting)
        row_axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), title="backbone, schedule",
                            title_fontsize=7, frameon=False)
    fig.suptitle(f"Training curves from train.log.jsonl ({profile} profile)", fontsize=11)
    return fig


def plot_row_curves(logs: List[Path], title: str):
    """loss, lr and validation mIoU of one row, one line per seed (the row pages of the HTML report)."""
    if not logs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), layout="constrained")
    colors = plt.get_cmap("tab10")
    for i, path in enumerate(logs):
        style = {"color": colors(i % 10), "linestyle": "-", "marker": "o"}
        _draw_curves(axes, path, style, _seed_label(path))
    _label_axes(axes, "")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), title="seed", frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


FIGURE_TITLES = {
    "miou": "Reproduced mIoU per row beside its reference",
    "miou_vs_fps": "mIoU against inference speed, one panel per dataset setting",
    "memory": "Training memory per row",
    "training_curves": "Training curves: loss, learning rate and validation mIoU per dataset setting",
}


def profile_figures(collected: Collected, results_dir: Path, published: pd.DataFrame,
                    profile: str) -> Iterator[Tuple[str, Any]]:
    """(kind, figure) for each figure of one profile's trained rows, kinds as in FIGURE_TITLES (curves
    only with logs). The caller closes each figure (``save_figure`` does)."""
    # The figures show rows nlbench trained; released checkpoints' results are in tables and compare.
    summary, per_seed = of_source(collected.summary, TRAINED), of_source(collected.per_seed, TRAINED)
    yield "miou", plot_miou(summary, per_seed, published, profile, _reference_for(profile))
    yield "miou_vs_fps", plot_miou_vs_fps(summary, published, profile)
    yield "memory", plot_memory(summary, published, profile)
    curves = plot_training_curves(results_dir, published, profile, collected.newest)
    if curves is not None:
        yield "training_curves", curves


def make_plots(results_dir, out_dir, reference: str, warn: Warn) -> List[Path]:
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    collected = collect_or_warn(results_dir, warn)
    summary = of_source(collected.summary, TRAINED)
    published = load_published()
    written: List[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for profile in sorted(summary["profile"].unique()):
            for kind, fig in profile_figures(collected, results_dir, published, profile):
                written += save_figure(fig, out_dir, f"{kind}_{profile}")
            written += overlay_plots(results_dir, profile, out_dir, reference, collected.newest, warn)
    except OSError as exc:
        raise NLBenchError(f"cannot write plots: {exc.strerror or exc}", exc.filename or out_dir) from None
    return written

