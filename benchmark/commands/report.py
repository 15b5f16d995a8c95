"""`nlbench collect`, `tables`, `plots`, `report` and `curves`: what the records say."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
from tabulate import tabulate

from benchmark.catalog import load_published
from benchmark.commands.arguments import overrides_arguments, results_arguments
from benchmark.commands.console import warn
from benchmark.curves.checks import DIVERGED
from benchmark.curves.reference import RELEASED
from benchmark.errors import NLBenchError, check_number
from benchmark.io.files import atomic_write_text, shown_path, write_json
from benchmark.io.layout import ResultsLayout
from benchmark.report.collect import TRAINED, collect_or_warn, format_stat
from benchmark.report.html import build_report
from benchmark.report.metafile import metafile, write_metafile
from benchmark.report.plots import make_plots
from benchmark.report.row_curves import (
    assess_row,
    format_row,
    overlay_stem,
    row_json,
    run_logs,
    select_recipes,
    write_overlays,
)
from benchmark.report.seed_logs import row_seeds
from benchmark.report.tables import published_tables, results_markdown, splice
from benchmark.run.records import RecordStore


def collect_arguments(p: argparse.ArgumentParser) -> None:
    results_arguments(p)
    p.add_argument("--out", default=None, help="CSV to write (default RESULTS/summary.csv)")


def collect_command(results: str = "results", out: Optional[str] = None) -> int:
    """`nlbench collect`: write the summary CSV and print it."""
    collected = collect_or_warn(results, warn)
    summary = collected.summary
    target = Path(out) if out else ResultsLayout.of(results).summary_csv
    atomic_write_text(target, summary.to_csv(index=False, float_format="%.6g"))
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            r["recipe"], r["profile"], int(r["n_seeds"]),
            format_stat(r["miou_mean"], r["miou_std"], r["miou_n"], 2),
            format_stat(r["miou_ms_flip_mean"], r["miou_ms_flip_std"], r["miou_ms_flip_n"], 2),
            format_stat(r["aacc_mean"], r["aacc_std"], r["aacc_n"], 2),
            format_stat(r["mem_gb_mean"], r["mem_gb_std"], r["mem_gb_n"], 2),
            format_stat(r["fps_mean"], r["fps_std"], r["fps_n"], 2),
            r["device_name"] or "-",
        ])
    headers = ["recipe", "profile", "seeds", "mIoU", "mIoU(ms+flip)", "aAcc", "Mem (GB)", "fps", "device"]
    if (summary["fps_fast_n"] > 0).any():  # bench records with the fast setting: its columns after fps
        headers[8:8] = ["Mem (fast)", "fps (fast)"]
        for row, (_, r) in zip(rows, summary.iterrows()):
            row[8:8] = [format_stat(r["mem_gb_fast_mean"], r["mem_gb_fast_std"], r["mem_gb_fast_n"], 2),
                        format_stat(r["fps_fast_mean"], r["fps_fast_std"], r["fps_fast_n"], 2)]
    if (summary["checkpoint_source"] != TRAINED).any():  # only then: the output of trained runs stays as it was
        headers.insert(2, "checkpoint")
        for row, source in zip(rows, summary["checkpoint_source"]):
            row.insert(2, source)
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    n_warn = len(collected.warnings)
    skipped = f", {n_warn} skipped (warnings above)" if n_warn else ""
    print(f"{collected.records} records{skipped} -> {len(summary)} rows -> {target}")
    return 0


def tables_arguments(p: argparse.ArgumentParser) -> None:
    results_arguments(p)
    p.add_argument("--readme", default="README.md", help="README to update between its marker comments")
    p.add_argument("--no-readme", action="store_true",
                   help="write RESULTS/tables.md only, no README (what `make demo` does: the checkout stays clean)")
    p.add_argument("--check", action="store_true", help="exit 1 if the README's tables are stale; write nothing")
    p.add_argument("--published", action="store_true", help="print the published tables alone")
    p.add_argument("--metafile", metavar="FILE",
                   help="write the reproduced results to FILE in MMSegmentation 1.x's metafile.yaml (model-index) "
                        "layout, one entry per row, instead of the markdown tables")


def tables_command(results: str = "results", readme: str = "README.md", check: bool = False,
                   published: bool = False, metafile: Optional[str] = None, no_readme: bool = False) -> int:
    """`nlbench tables`: write RESULTS/tables.md and the README's block (``no_readme``: tables.md
    only); ``check`` only compares; ``metafile`` writes the results as MMSeg's metafile.yaml instead
    (see report/metafile.py)."""
    if no_readme and check:
        raise NLBenchError("--check compares the README's tables; it does not combine with --no-readme",
                           key="--no-readme")
    table = load_published()
    if metafile is not None:
        return _metafile_command(results, table, Path(metafile), check or published)
    if published:
        blocks = [f"### {dataset}\n\n{text}\n" for dataset, text in published_tables(table).items()]
        print("\n".join(blocks), end="")
        return 0
    summary = collect_or_warn(results, warn).summary
    tables_md = ResultsLayout.of(results).tables_md
    label = shown_path(results, Path.cwd())  # as the command line names it from here, on any machine
    standalone = results_markdown(summary, table, label, tables_md.resolve().parent)
    if no_readme:
        atomic_write_text(tables_md, f"# nlbench results\n\n{standalone}")
        print(f"tables: {tables_md}")
        return 0
    readme_path = Path(readme)
    try:
        current = readme_path.read_text(encoding="utf-8") if readme_path.exists() else ""
    except OSError as exc:
        raise NLBenchError(f"cannot read: {exc.strerror or exc}", readme_path) from None
    updated = splice(current, results_markdown(summary, table, label, readme_path.resolve().parent))
    if check:
        if updated != current:
            print(f"{readme_path}: tables are stale; run `nlbench tables --results {results}`")
            return 1
        print(f"{readme_path}: tables are up to date")
        return 0
    atomic_write_text(tables_md, f"# nlbench results\n\n{standalone}")
    if updated != current:
        atomic_write_text(readme_path, updated)
    print(f"tables: {tables_md}; README {'updated' if updated != current else 'already up to date'}: {readme_path}")
    return 0


def _metafile_command(results: str, published: pd.DataFrame, target: Path, other_mode: bool) -> int:
    if other_mode:
        raise NLBenchError("--metafile writes the reproduced results; it does not combine with --check or "
                           "--published", key="--metafile")
    collected = collect_or_warn(results, warn)
    document = metafile(collected.summary, published, collected.newest, Path(results))
    write_metafile(target, document)
    print(f"metafile: {target} ({len(document['Models'])} models, MMSegmentation 1.x model-index layout)")
    return 0


def plots_arguments(p: argparse.ArgumentParser) -> None:
    results_arguments(p)
    p.add_argument("--out", default=None, help="output folder (default RESULTS/plots)")
    p.add_argument("--reference", default="released", metavar="released|PATH",
                   help="reference curve of the overlays: released (default; published logs from the cache only) "
                        "or a log file (every row) / a folder of <recipe>.log.json files")


def plots_command(results: str = "results", out: Optional[str] = None, reference: str = "released") -> int:
    """`nlbench plots`."""
    folder = Path(out) if out else ResultsLayout.of(results).plots
    written = make_plots(results, folder, reference, warn)
    for path in written:
        print(path)
    print(f"{len(written)} files in {folder}")
    return 0


def report_arguments(p: argparse.ArgumentParser) -> None:
    results_arguments(p)
    p.add_argument("--out", default=None, help="output folder (default RESULTS/report): index.html and rows/")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="mIoU points a row may fall short before its verdict is 'regressed' (default 0.5, as compare)")


def report_command(results: str = "results", out: Optional[str] = None, tolerance: float = 0.5) -> int:
    """`nlbench report`: write the HTML report and print where its first page is."""
    check_number(tolerance, "--tolerance", "tolerance")
    out_dir = Path(out) if out else ResultsLayout.of(results).report
    if out_dir.exists() and not out_dir.is_dir():
        raise NLBenchError("expected a folder for the report's pages, found a file", out_dir, "--out")
    pages = build_report(Path(results), out_dir, tolerance, warn)
    print(f"report: {len(pages)} pages in {out_dir}; open {(out_dir / 'index.html').resolve()}")
    return 0


def curves_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe name, recipe YAML, or a glob on recipe names ('*': every row with runs)")
    overrides_arguments(p, "override a recipe value, e.g. --set guard.spread_floor=1.0 (YAML-typed; repeatable)")
    p.add_argument("--profile", default="full", help="profile of the runs: full (default) or smoke")
    results_arguments(p)
    p.add_argument("--reference", default="released", metavar="released|PATH",
                   help="reference curve: released (the row's published log, downloaded once; in the smoke profile "
                        "results/reference/logs/smoke/<recipe>.log.json) or a log file / folder")
    p.add_argument("--out", default=None, help="folder for the overlay figures (default RESULTS/plots)")
    p.add_argument("--json", dest="json_out", help="write the checks and eval tables as JSON")


def curves_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full", results: str = "results",
                   reference: str = RELEASED, out: Optional[str] = None, json_out: Optional[str] = None) -> int:
    """`nlbench curves`: print each row's checks and eval table, draw its overlay; exit 1 when a row diverged."""
    recipes = select_recipes(recipe, profile, overrides)
    single = len(recipes) == 1
    chosen, _ = RecordStore.read(results).chosen_by_kind()  # each seed's log: that of its chosen records
    rows = []
    for r in recipes:
        seeds = row_seeds(chosen, r.name, profile)
        if single or run_logs(Path(results), profile, r.name, seeds):
            rows.append(assess_row(r, Path(results), reference, seeds=seeds, warn=warn))
    if not rows:
        raise NLBenchError(f"no training logs of the {profile} profile for {recipe!r}",
                           ResultsLayout.of(results).profile_work(profile), "--results")
    out_dir = Path(out) if out else ResultsLayout.of(results).plots
    written = write_overlays(rows, out_dir)
    for row in rows:
        print(format_row(row))
        print(f"  overlay: {', '.join(str(p) for p in written if overlay_stem(row) in p.name)}\n")
    diverged = [r for r in rows if r.verdict == DIVERGED]
    print(f"{len(rows)} row(s): " + ", ".join(f"{sum(r.verdict == v for r in rows)} {v}"
                                              for v in ("on track", "drifting", "diverged")))
    if json_out:
        write_json(Path(json_out), {"rows": [row_json(r) for r in rows], "diverged": len(diverged)})
    return 1 if diverged else 0
