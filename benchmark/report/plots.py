"""`nlbench plots`: PNG + SVG figures from the records and the training logs.

One set of figures per recipe profile (full-size and smoke results never share an axis):
  miou_<profile>            reproduced mIoU per row (mean, ± std, every seed) beside its reference
  miou_vs_fps_<profile>     mIoU against inference speed, one panel per dataset
  memory_<profile>          training memory per row
  training_curves_<profile> loss, learning rate and validation mIoU per iteration (train.log.jsonl)
  overlay_<profile>_<recipe> each row's seeds against its reference curve (report/curves.py)
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only, never a window (CI and cluster nodes have no display)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.catalog import load_published  # noqa: E402
from benchmark.errors import NLBenchError  # noqa: E402
from benchmark.io.files import atomic_write_bytes  # noqa: E402
from benchmark.report.collect import TRAINED, collect_or_warn, of_source  # noqa: E402
from benchmark.report.compare import Reference, default_references, device_class  # noqa: E402

DATASET_SHORT = {"Cityscapes": "CS", "ADE20K": "ADE", "Pascal VOC 2012 + Aug": "VOC"}


def row_label(p: pd.Series) -> str:
    """'CS R-50 512x1024 40k': dataset, backbone, crop and schedule identify a row."""
    dataset = DATASET_SHORT.get(p["dataset"], p["dataset"])
    return f"{dataset} {p['backbone'].replace('-D8', '')} {p['crop_size']} {int(p['lr_schd']) // 1000}k"


def _save(fig, out_dir: Path, stem: str) -> List[Path]:
    paths = []
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        # No date in the SVG, so an unchanged figure gives an unchanged file.
        fig.savefig(buf, format=fmt, dpi=120, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        path = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


save_figure = _save  # report/curves.py draws the overlays through it


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


def plot_miou_vs_fps(summary: pd.DataFrame, published: pd.DataFrame, profile: str):
    rows = summary[summary["profile"] == profile].set_index("recipe")
    datasets = [d for d in published["dataset"].unique() if any(r in rows.index for r in
                                                                 published.index[published["dataset"] == d])]
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.6 * max(1, len(datasets)), 4.2), squeeze=False)
    devices = sorted({str(d) for d in rows["device_name"].dropna()}) or ["unknown device"]
    for ax, dataset in zip(axes[0], datasets):
        recipes = [r for r in published.index[published["dataset"] == dataset] if r in rows.index]
        for recipe in recipes:
            r, p = rows.loc[recipe], published.loc[recipe]
            if math.isnan(r["fps_mean"]) or math.isnan(r["miou_mean"]):
                continue
            ax.scatter(r["fps_mean"], r["miou_mean"], color="tab:blue", s=30)
            ax.annotate(row_label(p).split(" ", 1)[1], (r["fps_mean"], r["miou_mean"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
            # The published point is drawn only when the speed was measured on the same device class.
            if profile == "full" and device_class(r["device_name"]) == "V100" and not math.isnan(p["fps"]):
                ax.scatter(p["fps"], p["miou"], marker="D", facecolors="none", edgecolors="black", s=30)
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel(f"inference speed (images/s) on {', '.join(devices)}")
        ax.set_ylabel("mIoU (%)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", color="tab:blue", linestyle="", label=f"reproduced ({profile})")]
    if profile == "full":
        handles.append(plt.Line2D([], [], marker="D", markerfacecolor="none", markeredgecolor="black",
                                  linestyle="", label="published (V100; shown only for V100 records)"))
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"mIoU vs inference speed per dataset ({profile} profile)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
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
    """key -> {iteration: value} for loss, loss_decode, loss_aux, lr (train lines) and mIoU (eval lines).

    Lines that are not JSON objects or lack an iteration are skipped; a resumed run that logs an
    iteration twice keeps the later value."""
    series: Dict[str, Dict[int, float]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return series
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("iteration"), (int, float)):
            continue
        for key in ("loss", "loss_decode", "loss_aux", "lr", "mIoU"):
            value = entry.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, {})[int(entry["iteration"])] = float(value)
    return series


def plot_training_curves(results_dir: Path, published: pd.DataFrame, profile: str):
    logs = sorted((results_dir / "work" / profile).glob("*/seed*/train.log.jsonl"))
    if not logs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    panels = [("loss", "training loss (total: decode + weighted aux)", "loss (cross-entropy)"),
              ("lr", "learning rate (poly schedule)", "learning rate"),
              ("mIoU", "validation mIoU (%)", "mIoU (%)")]
    colors = plt.get_cmap("tab20")
    for i, path in enumerate(logs):
        recipe, seed = path.parent.parent.name, path.parent.name
        label = (row_label(published.loc[recipe]) if recipe in published.index else recipe) + f" {seed}"
        series = read_train_log(path)
        for ax, (key, _, _) in zip(axes, panels):
            points = sorted(series.get(key, {}).items())
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], color=colors(i % 20), linewidth=1,
                        marker="o" if key == "mIoU" else None, markersize=3, label=label if key == "loss" else None)
    for ax, (_, title, ylabel) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="row, seed")
    fig.suptitle(f"Training curves from train.log.jsonl ({profile} profile)", fontsize=11)
    fig.tight_layout()
    return fig


def make_plots(results_dir, out_dir) -> List[Path]:
    from benchmark.report.curves import overlay_plots

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    summary = collect_or_warn(results_dir)
    # The figures show rows nlbench trained; released checkpoints' results are in tables and compare.
    per_seed = of_source(summary.attrs["runs"], TRAINED)
    summary = of_source(summary, TRAINED)
    published = load_published()
    written: List[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for profile in sorted(summary["profile"].unique()):
            written += _save(plot_miou(summary, per_seed, published, profile, _reference_for(profile)), out_dir,
                             f"miou_{profile}")
            written += _save(plot_miou_vs_fps(summary, published, profile), out_dir, f"miou_vs_fps_{profile}")
            written += _save(plot_memory(summary, published, profile), out_dir, f"memory_{profile}")
            curves = plot_training_curves(results_dir, published, profile)
            if curves is not None:
                written += _save(curves, out_dir, f"training_curves_{profile}")
            written += overlay_plots(results_dir, profile, out_dir)
    except OSError as exc:
        raise NLBenchError(f"cannot write plots: {exc.strerror or exc}", exc.filename or out_dir) from None
    return written


def plots_command(results: str = "results", out: Optional[str] = None) -> int:
    """`nlbench plots`."""
    folder = Path(out) if out else Path(results) / "plots"
    written = make_plots(results, folder)
    for path in written:
        print(path)
    print(f"{len(written)} files in {folder}")
    return 0
