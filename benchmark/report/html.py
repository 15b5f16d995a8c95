"""`nlbench report`: a static, self-contained HTML report of a results folder.

``OUT/index.html`` holds the published tables filled with the reproduced values and their verdicts, and
the plots; ``OUT/rows/<profile>/<recipe>.html`` holds one row: its figures and verdicts, GPU-hours spent
against the estimate, each stage's record, provenance, training curves, those curves overlaid on the
row's reference log with the curve verdict of ``nlbench curves``, and the resolved recipe. The
pages need no server, no network and no JavaScript: plots are inline SVG, the style sheet is inline,
and the only links that leave the folder are the published checkpoints and logs.

The HTML comes from Jinja2 templates (``benchmark/report/templates``); this module only gathers what
they show. Two lists make the report grow without restructuring it:

- ``verdict_sources`` gives the verdicts shown under every figure of the tables: today `compare`'s two
  methods, ``tolerance`` and ``ci`` (the confidence interval over seeds). Another method is one more
  ``VerdictSource`` in that list (a Check per row and metric, and how to word what decided it); the
  templates loop over them and the style sheet colours its verdict names.
- ``row_sections`` gives the sections of a row page, each a template under ``templates/sections/``
  with its own context; another section is one more ``Section`` and one more template.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from benchmark.catalog import load_published, release_links, released_differences, released_table
from benchmark.curves.reference import reference_kind
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.launch.cost import estimate_gpu_hours
from benchmark.recipe import Recipe, load_recipe, resolve_recipe_path
from benchmark.report.collect import RELEASED, TRAINED, Collected, Warn, collect_or_warn, format_stat, of_source
from benchmark.report.compare import (
    HARDWARE_METRICS,
    METRICS,
    Check,
    apply_ci,
    compare,
    held_to_measured_bands,
    not_compared_lines,
)
from benchmark.report.figures import inline_svg
from benchmark.report.plots import FIGURE_TITLES, plot_row_curves, profile_figures, row_label, row_train_logs
from benchmark.report.references import default_references
from benchmark.report.row_curves import assess_row, plot_overlay
from benchmark.report.seed_logs import SeedRecords, row_seeds
from benchmark.report.tables import FAST_NOTE, PROFILE_NOTES, RELEASED_NOTE, fast_cell, has_fast
from benchmark.run.records import Kind, Record, RowKey
from benchmark.run.schema import EVAL_KINDS
from benchmark.stats import SEED_STD_MIOU

# The figure columns of the published tables, in their order: (summary metric, header, digits).
COLUMNS = [("mem_gb", "Mem (GB)", 1), ("fps", "Inf time (fps)", 2), ("miou", "mIoU", 2),
           ("miou_ms_flip", "mIoU(ms+flip)", 2)]
# After them, when any row has figures of the fast setting (as the markdown tables add them).
FAST_COLUMNS = [("mem_gb_fast", "Mem (fast)", 1), ("fps_fast", "fps (fast)", 2)]
PROVENANCE_FIELDS = ["git_commit", "git_dirty", "nlbench_version", "device_name", "device_count", "world_size",
                     "torch_version", "cuda_version", "cudnn_version", "dtype", "hostname", "slurm_job_id",
                     "recipe_hash", "checkpoint_sha256"]


# ----------------------------------------------------------------------------- what the pages show


Key = Tuple[str, str, str, str]  # (recipe, profile, checkpoint source, metric)


@dataclass(frozen=True)
class VerdictSource:
    """One way of judging the reproduced figures: a Check per (recipe, profile, checkpoint source,
    metric), and how to say what decided each one."""

    name: str  # a CSS-safe identifier
    tag: str  # the short name printed before each of its verdicts
    label: str  # for people: how the verdicts were reached
    checks: Dict[Key, Check]
    detail: Callable[[Check], str]  # e.g. "ref 78.24 · Δ +0.10" or "95% [77.9, 78.6]"
    notes: List[str] = field(default_factory=list)  # lines shown above the tables


@dataclass(frozen=True)
class Section:
    """One section of a row page: ``templates/sections/<template>`` rendered with ``context``."""

    id: str
    title: str
    template: str
    context: Dict[str, Any]


def _fmt(value: Optional[float], digits: int, sign: bool = False) -> str:
    if value is None or value != value:
        return "-"
    if sign:
        text = f"{value:+.{digits}f}"
        return text.replace("-", "+") if float(text) == 0 else text  # no "-0.00"
    return f"{value:.{digits}f}"


def _tolerance_detail(c: Check) -> str:
    digits = METRICS[c.metric][2]
    parts = [f"ref {_fmt(c.reference, digits)}"] if c.reference == c.reference else []
    if c.delta == c.delta:
        parts.append(f"Δ {_fmt(c.delta, digits, sign=True)}")
    return " · ".join(parts)


def _ci_detail(c: Check) -> str:
    if c.metric in HARDWARE_METRICS:
        return "10% band"
    if c.low == c.low:
        digits = METRICS[c.metric][2]
        return f"95% [{_fmt(c.low, digits)}, {_fmt(c.high, digits)}]"
    return "no interval (one seed)" if c.n == 1 else ""


def verdict_sources(summary: pd.DataFrame, tolerance: float, assumed_std: float = SEED_STD_MIOU) -> List[VerdictSource]:
    """The verdicts the tables show, as `nlbench compare` gives them: each profile against its own
    reference, by the tolerance method and by the ci method (benchmark/stats.py)."""
    notes: List[str] = []
    profiles = sorted(summary["profile"].unique(), key=_profile_order)
    try:
        refs = default_references(profiles)
    except NLBenchError as exc:
        refs, notes = {}, [f"no verdicts: {exc}"]
    notes += [f"profile {ref.profile}: against {ref.label}" for ref in refs.values()]
    present = set(summary["checkpoint_source"])
    checks = [c for ref in refs.values() for source in (TRAINED, RELEASED) if source in present
              for c in compare(summary, ref, tolerance, source)]

    def keyed(found: List[Check]) -> Dict[Key, Check]:
        return {(c.recipe, c.profile, c.source, c.metric): c for c in found}

    banded = held_to_measured_bands(checks)
    bands = " (a smoke row: ± the band measured for its baseline)" if banded else ""
    return [
        VerdictSource("tolerance", "tol", f"tol: the tolerance method, reference ± {tolerance} mIoU points{bands}, "
                      "Mem and fps ± 10%", keyed(checks), _tolerance_detail, notes),
        VerdictSource("ci", "ci", "ci: the 95% interval of the mean over seeds against the same band (mIoU; "
                      f"one seed gives none, and an assumed std of {assumed_std} says how many would decide)",
                      keyed(apply_ci(checks, tolerance, assumed_std)), _ci_detail),
    ]


def _profile_order(profile: str) -> Tuple[int, str]:
    """full first, then smoke, then any other profile by name (as the markdown tables order them)."""
    return ({"full": 0, "smoke": 1}.get(profile, 2), profile)


def report_columns(summary: pd.DataFrame) -> List[Tuple[str, str, int]]:
    """The figure columns of the report's tables: the published ones, then the fast setting's if any."""
    return COLUMNS + FAST_COLUMNS if has_fast(summary) else COLUMNS


def _fast_figure(row: pd.Series, metric: str, header: str, digits: int) -> Dict[str, Any]:
    """A fast-setting cell: its value and ratio to the published setting's; never judged."""
    return {"metric": metric, "header": header, "value": fast_cell(row, metric[:-len("_fast")], digits),
            "verdicts": [], "not_compared": None}


def _cells(row: pd.Series, sources: List[VerdictSource], columns: List[Tuple[str, str, int]]) -> List[Dict[str, Any]]:
    """One cell per figure column: the reproduced value and, per verdict source, its verdict."""
    cells = []
    for metric, header, digits in columns:
        if metric.endswith("_fast"):
            cells.append(_fast_figure(row, metric, header, digits))
            continue
        verdicts = []
        for source in sources:
            check = source.checks.get((row["recipe"], row["profile"], row["checkpoint_source"], metric))
            if check is not None:
                verdicts.append({"source": source.name, "tag": source.tag, "verdict": check.verdict,
                                 "note": check.note, "detail": source.detail(check),
                                 "deviations": check.shown_deviations})
        value = format_stat(row[f"{metric}_mean"], row[f"{metric}_std"], int(row[f"{metric}_n"]), digits)
        # A figure that no method compares (no reference value, another device) says so once.
        skipped = bool(verdicts) and all(v["verdict"] == "skipped" for v in verdicts)
        cells.append({"metric": metric, "header": header, "value": value, "verdicts": [] if skipped else verdicts,
                      "not_compared": verdicts[0]["note"] if skipped else None})
    return cells


def table_not_compared_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """What a table's cells leave uncompared, said once per reason under the table rather than in every
    cell: 'not compared: Mem (GB) (8 of 8 rows), Inf time (fps) (8 of 8 rows): no reference value'."""
    skipped = ((cell["not_compared"], cell["header"]) for row in rows for cell in row["cells"] if cell["not_compared"])
    return not_compared_lines(skipped, lambda n: f"{n} of {len(rows)} rows")


def _href(target: Path, page_dir: Path) -> str:
    return os.path.relpath(target, page_dir).replace(os.sep, "/")


def row_page(out_dir: Path, profile: str, recipe: str) -> Path:
    return out_dir / "rows" / profile / f"{recipe}.html"


def _row_view(row: pd.Series, p: pd.Series, sources: List[VerdictSource], out_dir: Path, page_dir: Path,
              columns: List[Tuple[str, str, int]]):
    links = release_links(row["recipe"])
    method = p["method"] if row["profile"] == "full" else f"{p['method']} ({row['profile']})"
    return {
        "recipe": row["recipe"], "profile": row["profile"], "method": method, "backbone": p["backbone"],
        "crop_size": p["crop_size"], "lr_schd": str(p["lr_schd"]), "seeds": int(row["n_seeds"]),
        # Rows nlbench trained have a page; results on released checkpoints are shown in the index only.
        "href": _href(row_page(out_dir, row["profile"], row["recipe"]), page_dir)
        if row["checkpoint_source"] == TRAINED else None,
        "config_href": _href(resolve_recipe_path(row["recipe"]), page_dir),
        "model_url": links[0] if links else None, "log_url": links[1] if links else None,
        "cells": _cells(row, sources, columns),
    }


def dataset_tables(summary: pd.DataFrame, published: pd.DataFrame, sources: List[VerdictSource], profile: str,
                   out_dir: Path, page_dir: Path) -> Dict[str, List[Dict[str, Any]]]:
    """Dataset -> the rows of one profile in the published order (as `nlbench tables` prints them)."""
    rows = summary[summary["profile"] == profile].set_index("recipe", drop=False)
    columns = report_columns(rows)
    tables: Dict[str, List[Dict[str, Any]]] = {}
    for recipe, p in published.iterrows():
        if recipe in rows.index:
            view = _row_view(rows.loc[recipe], p, sources, out_dir, page_dir, columns)
            tables.setdefault(p["dataset"], []).append(view)
    return tables


def _tally(source: VerdictSource, profile: str, checkpoint_source: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for (_, check_profile, check_source, _), check in source.checks.items():
        if (check_profile, check_source) == (profile, checkpoint_source):
            counts[check.verdict] = counts.get(check.verdict, 0) + 1
    return counts


# ----------------------------------------------------------------------------- SVG


# ----------------------------------------------------------------------------- row pages


def _figures(rec: Record) -> str:
    figures = [f"{key} {getattr(rec.metrics, key):.2f}" for key in ("aAcc", "mIoU", "mAcc")
               if rec.metrics is not None and getattr(rec.metrics, key) is not None]
    if rec.fps is not None:
        figures.append(f"{rec.fps:.2f} fps")
    if rec.mem_gb is not None:
        figures.append(f"Mem {rec.mem_gb:.2f} GB ({rec.mem_kind or 'unknown kind'})")
    return ", ".join(figures) or "-"


def _stage_rows(kinds: Dict[Kind, Record], page_dir: Path) -> List[Dict[str, Any]]:
    rows = []
    for kind in Kind:
        rec = kinds.get(kind)
        if rec is None:
            rows.append({"kind": kind.value, "missing": True})
            continue
        per_class = rec.metrics.per_class if rec.metrics is not None and kind.value in EVAL_KINDS else None
        rows.append({
            "kind": kind.value, "missing": False, "created_at": rec.created_at, "iterations": rec.iterations,
            "wall_time": _fmt(rec.wall_time_s, 1), "gpu_hours": _fmt(rec.gpu_hours, 3),
            "figures": _figures(rec), "record_href": _href(Path(rec.path), page_dir),
            "record_name": Path(rec.path).name,
            "per_class": [(name, _fmt((v or {}).get("IoU"), 2), _fmt((v or {}).get("Acc"), 2))
                          for name, v in (per_class or {}).items()],
        })
    return rows


def _provenance(kinds: Dict[Kind, Record]) -> Dict[str, Any]:
    present = [k for k in Kind if k in kinds]
    table = []
    for name in PROVENANCE_FIELDS:
        values = [getattr(kinds[k].provenance, name, None) for k in present]
        table.append({"field": name, "values": ["-" if v is None else str(v) for v in values]})
    return {"kinds": [k.value for k in present], "fields": table}


def _cost(recipe_name: str, profile: str, seeds: Dict[int, Dict[Kind, Record]]) -> Dict[str, Any]:
    """GPU-hours the records say were spent, against the V100 estimate (benchmark/launch/cost.py)."""
    spent = [float(r.gpu_hours) for kinds in seeds.values() for r in kinds.values() if r.gpu_hours]
    walls = [float(r.wall_time_s) for kinds in seeds.values() for r in kinds.values() if r.wall_time_s]
    estimate = estimate_gpu_hours(load_recipe(recipe_name, profile=profile))
    full = estimate_gpu_hours(load_recipe(recipe_name)) * max(len(seeds), 1)
    per_seed = estimate * max(len(seeds), 1) if estimate is not None else None
    ratio = sum(spent) / per_seed if spent and per_seed else None
    return {
        "spent": f"{sum(spent):.2f}" if spent else None, "wall_time": f"{sum(walls):.1f}",
        "estimate": f"{per_seed:.2f}" if per_seed is not None else None, "full_estimate": f"{full:.1f}",
        "ratio": f"{ratio:.2f}" if ratio is not None else None, "seeds": len(seeds),
    }


def _reference_view(recipe: Recipe, results_dir: Path, seeds: SeedRecords, warn: Warn) -> Dict[str, Any]:
    """The row's runs overlaid on its reference log (the published one from the cache, or the smoke
    reference) with the curve verdict, as ``nlbench curves`` gives them; nothing is downloaded."""
    row = assess_row(recipe, results_dir, RELEASED, offline=True, strict=False, seeds=seeds, warn=warn)
    if row.assessment is None:
        return {"svg": None, "note": row.note}
    return {"svg": inline_svg(plot_overlay(row), "overlay"), "reference": row.reference_label,
            "verdict": row.verdict,
            "summary": row.assessment.summary() + (f"; {row.deviations}" if row.deviations else "")}


def row_sections(row: pd.Series, seeds: Dict[int, Dict[Kind, Record]], results_dir: Path,
                 page_dir: Path, warn: Warn) -> List[Section]:
    """The sections of one row page, in order (see the module docstring to add one)."""
    recipe, profile = row["recipe"], row["profile"]
    stages = [{"seed": seed, "stages": _stage_rows(kinds, page_dir), "provenance": _provenance(kinds)}
              for seed, kinds in sorted(seeds.items())]
    logs = row_train_logs(results_dir, profile, recipe, seeds)
    curves = plot_row_curves(logs, f"{recipe} ({profile} profile): train.log.jsonl")
    resolved = load_recipe(recipe, profile=profile)
    return [
        Section("cost", "GPU-hours", "cost.html.j2", _cost(recipe, profile, seeds)),
        Section("stages", "Stages and their records", "stages.html.j2", {"seeds": stages}),
        Section("provenance", "Provenance", "provenance.html.j2", {"seeds": stages}),
        Section("curves", "Training curves", "curves.html.j2",
                {"svg": inline_svg(curves, "curves") if curves is not None else None,
                 "logs": [_href(p, page_dir) for p in logs]}),
        Section("reference", f"Against the {reference_kind(resolved)} curve", "reference.html.j2",
                _reference_view(resolved, results_dir, seeds, warn) if logs
                else {"svg": None, "note": "no training log"}),
        Section("recipe", "Resolved recipe", "recipe.html.j2",
                {"yaml": resolved.to_yaml(), "hash": resolved.hash, "profile": profile}),
    ]


# ----------------------------------------------------------------------------- writing


_STRONG = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`(.+?)`")


def inline_markdown(text: str) -> Markup:
    """The **bold** and `code` of the notes shared with the markdown tables, as HTML (escaped first)."""
    html = str(escape(text))
    html = _STRONG.sub(r"<strong>\1</strong>", html)
    return Markup(_CODE.sub(r"<code>\1</code>", html))


def environment() -> Environment:
    env = Environment(loader=PackageLoader("benchmark.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["inline_markdown"] = inline_markdown
    env.filters["not_compared"] = table_not_compared_lines
    return env


def _profile_view(summary: pd.DataFrame, published: pd.DataFrame, sources: List[VerdictSource], profile: str,
                  checkpoint_source: str, out_dir: Path) -> Dict[str, Any]:
    rows = summary[summary["profile"] == profile]
    devices = sorted({str(d) for d in rows["device_name"].dropna()})
    columns = report_columns(rows)
    return {"name": profile, "note": PROFILE_NOTES.get(profile, "a custom recipe profile."),
            "devices": ", ".join(devices) or "unknown", "rows": len(rows), "columns": columns,
            "fast_note": FAST_NOTE if columns != COLUMNS else None,
            "tables": dataset_tables(summary, published, sources, profile, out_dir, out_dir),
            "tallies": [(s, _tally(s, profile, checkpoint_source)) for s in sources]}


def _index_context(collected: Collected, published: pd.DataFrame, sources: List[VerdictSource], results_dir: Path,
                   out_dir: Path) -> Dict[str, Any]:
    summary = collected.summary
    trained, released = of_source(summary, TRAINED), of_source(summary, RELEASED)
    profiles = []
    for profile in sorted(trained["profile"].unique(), key=_profile_order):
        view = _profile_view(trained, published, sources, profile, TRAINED, out_dir)
        view["figures"] = [{"id": f"{kind}-{profile}", "title": FIGURE_TITLES[kind],
                            "svg": inline_svg(fig, f"{kind}-{profile}")}
                           for kind, fig in profile_figures(collected, results_dir, published, profile)]
        profiles.append(view)
    released_views = [_profile_view(released, released_table(published), sources, profile, RELEASED, out_dir)
                      for profile in sorted(released["profile"].unique(), key=_profile_order)]
    released_note = " ".join([RELEASED_NOTE, *[f"{r}: {note}; its mIoU is judged against the released checkpoint's "
                                               "figures." for r, note in released_differences(published).items()]])
    commits = sorted({str(c) for c in summary["git_commit"].dropna()})
    return {"results": str(results_dir), "records": collected.records, "profiles": profiles,
            "released": released_views, "released_note": released_note, "sources": sources,
            "warnings": [*collected.warnings, *collected.choices], "commits": commits,
            "newest": str(summary["created_at"].max())}


def _row_context(row: pd.Series, p: pd.Series, by_seed: Dict[RowKey, Dict[Kind, Record]],  # noqa: PLR0913
                 sources: List[VerdictSource], results_dir: Path, out_dir: Path, path: Path,
                 warn: Warn) -> Dict[str, Any]:
    seeds = row_seeds(by_seed, row["recipe"], row["profile"])
    columns = report_columns(pd.DataFrame([row]))
    return {"results": str(results_dir), "row": _row_view(row, p, sources, out_dir, path.parent, columns),
            "title": f"{row_label(p)} ({row['profile']})", "columns": columns, "sources": sources,
            "index_href": _href(out_dir / "index.html", path.parent), "published": p,
            "sections": row_sections(row, seeds, results_dir, path.parent, warn)}


def build_report(results_dir: Path, out_dir: Path, tolerance: float, warn: Warn) -> List[Path]:
    """Write index.html and one page per (recipe, profile) row nlbench trained; returns the pages written
    (``warn`` is told of each record or log line skipped)."""
    collected = collect_or_warn(results_dir, warn)
    summary, by_seed = collected.summary, collected.newest
    published = load_published()
    sources = verdict_sources(summary, tolerance)
    env = environment()
    pages: List[Tuple[Path, str]] = []
    index = _index_context(collected, published, sources, results_dir, out_dir)
    pages.append((out_dir / "index.html", env.get_template("index.html.j2").render(**index)))
    for _, row in of_source(summary, TRAINED).iterrows():
        if row["recipe"] in published.index:
            path = row_page(out_dir, row["profile"], row["recipe"])
            context = _row_context(row, published.loc[row["recipe"]], by_seed, sources, results_dir, out_dir, path,
                                   warn)
            pages.append((path, env.get_template("row.html.j2").render(**context)))
    try:
        for path, html in pages:
            atomic_write_text(path, html)
    except OSError as exc:
        raise NLBenchError(f"cannot write the report: {exc.strerror or exc}", exc.filename or out_dir) from None
    return [path for path, _ in pages]

