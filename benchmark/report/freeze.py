"""The reference files nlbench freezes, and the Makefile's freezing steps as one command:
``python -m benchmark.report.freeze ACTION ...``.

- ``baseline SPREAD OUT``: `make smoke-baseline`: the spread frozen into the smoke baseline OUT
  (``write_spread_baseline``), and the spread itself kept beside it as ``<folder of OUT>/smoke_spread.csv``
  (for the committed results/reference/smoke.csv: results/reference/smoke_spread.csv), so that a
  baseline's source data lies next to it;
- ``logs RESULTS``: `make reference-logs`: each row's MMSeg-form training log of a smoke run-all frozen as
  its reference log (``write_reference_logs``).

``write_baseline`` freezes one run's means as a reference CSV of one's own (``compare --reference FILE``).
The spread file itself is measured and written by scripts/smoke_spread.py (its format: report/spread.py).
The readers of these files are elsewhere: the bands in report/baseline.py, the reference
tables in report/references.py, the reference logs in benchmark/curves/.

Bad input (a missing folder, an unreadable or malformed file) is one line naming the file and what was
expected, exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import pandas as pd

from benchmark.catalog import PUBLISHED_CSV, RELEASED_COLUMNS, select_recipe_paths
from benchmark.curves.reader import read_curve
from benchmark.curves.reference import REFERENCE_LOGS
from benchmark.engine.mmseg_log import as_2020_pattern
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_bytes, atomic_write_text
from benchmark.io.layout import ResultsLayout
from benchmark.recipe import REPO_ROOT, Recipe, load_recipe
from benchmark.report.baseline import baseline_from_spread
from benchmark.report.collect import TRAINED, collect, of_source
from benchmark.report.seed_logs import row_seeds, seed_logs
from benchmark.run.records import RecordStore
from benchmark.stats import DEFAULT_TOLERANCE

# ----------------------------------------------------------------------------- baselines


KEPT_SPREAD = "smoke_spread.csv"  # the name of the spread kept beside a frozen baseline


def keep_spread(spread: Path, baseline: Path) -> Optional[Path]:
    """Copy ``spread`` beside ``baseline`` as smoke_spread.csv, atomically; None when it is that file already."""
    kept = Path(baseline).parent / KEPT_SPREAD
    if kept.exists() and kept.resolve() == Path(spread).resolve():
        return None
    return atomic_write_bytes(kept, Path(spread).read_bytes())


def write_spread_baseline(spread, out_csv=None, floor: float = DEFAULT_TOLERANCE) -> Path:
    """Freeze ``spread`` into the smoke baseline ``out_csv`` (default results/reference/smoke.csv), atomically."""
    out = Path(out_csv) if out_csv else REPO_ROOT / "results" / "reference" / "smoke.csv"
    atomic_write_text(out, baseline_from_spread(Path(spread), floor).to_csv(index=False))
    return out


def write_baseline(results_dir, out_csv, profile: str = "smoke") -> Path:
    """Freeze one run's means as a reference CSV of one's own (``--reference FILE``). mIoU and
    mIoU(ms+flip) are kept to two decimals; Mem and fps are left empty, since on a CPU they describe the
    machine rather than the code. It has no band columns (one run says nothing of the spread), so compare
    holds its rows to the tolerance; the committed smoke baseline is instead frozen with its measured
    bands from a spread file (``write_spread_baseline``, ``make smoke-baseline``)."""
    summary = of_source(collect(results_dir).summary, TRAINED)  # a baseline is made of trained rows only
    rows = summary[summary["profile"] == profile].set_index("recipe")
    base = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    base = base[base["recipe"].isin(rows.index)].copy()
    base = base.drop(columns=[c for c in RELEASED_COLUMNS.values() if c in base.columns])  # full-size checkpoints
    if base.empty:
        raise NLBenchError(f"no {profile}-profile records to make a baseline from", results_dir)
    for column in ("miou", "miou_ms_flip"):
        means = rows[f"{column}_mean"]
        base[column] = [f"{means[r]:.2f}" if means[r] == means[r] else "" for r in base["recipe"]]
    base["mem_gb"], base["fps"] = "", ""
    base["profile"], base["device"] = profile, "cpu"
    atomic_write_text(Path(out_csv), base.to_csv(index=False))
    return Path(out_csv)


# ----------------------------------------------------------------------------- smoke reference logs


def reference_log_text(source: Path, recipe: Recipe) -> str:
    """A run's ``train.log.json`` as a reference log in the 2020 pattern, checked with the reader: it
    must give the train lines and every evaluation of the run, each at its iteration."""
    try:
        lines = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise NLBenchError(f"cannot read the run's MMSeg-form log: {exc}", source) from None
    sched = recipe.schedule
    done = read_curve(source, sched.eval_interval, sched.max_iters)
    text = "".join(json.dumps(line) + "\n" for line in as_2020_pattern(lines, {e.iteration for e in done.evals}))
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / source.name
        written.write_text(text)
        back = read_curve(written, sched.eval_interval, sched.max_iters)
    got, want = [e.iteration for e in back.evals], [e.iteration for e in done.evals]
    if not back.train or not got or got != want:
        raise NLBenchError("a reference log needs train lines and evaluations at the run's eval iterations "
                           f"(read back: {got}, run: {want})", source)
    return text


def write_reference_logs(results_dir, out_dir=REFERENCE_LOGS, profile: str = "smoke", seed: int = 0) -> List[Path]:
    """Freeze a smoke run's MMSeg-form logs as the rows' reference logs, in the pattern of the
    published 2020 logs (no train line at an evaluation iteration: ``reference_log_text``). `make reference-logs` runs a
    smoke run-all into results/reference-run and then ``python -m benchmark.report.freeze logs
    results/reference-run``.
    One file per row, ``<out_dir>/<profile>/<recipe>.log.json``, so each row finds a log of its own
    schedule. Each is read back with the reader before it is written."""
    written, missing = [], []
    layout = ResultsLayout.of(results_dir)
    chosen, _ = RecordStore.read(results_dir).chosen_by_kind()
    for path in select_recipe_paths(None):
        # The seed's log of the configuration its records were chosen from (report/seed_logs.py).
        source = seed_logs(results_dir, profile, path.stem, row_seeds(chosen, path.stem, profile),
                           ("train.log.json", "train.log.jsonl")).get(seed)
        if source is None or source.name != "train.log.json":
            if source is not None:
                missing.append(path.stem)  # trained by an nlbench that wrote no MMSeg-form log
            continue
        target = Path(out_dir) / profile / f"{path.stem}.log.json"
        atomic_write_text(target, reference_log_text(source, load_recipe(path, profile=profile)))
        written.append(target)
    if missing:
        raise NLBenchError(f"no train.log.json for {', '.join(missing)}: trained before nlbench wrote one; "
                           "run them again in a fresh results folder", layout.profile_work(profile))
    if not written:
        raise NLBenchError(f"no {profile}-profile train.log.json of seed {seed} to make reference logs from",
                           layout.profile_work(profile))
    return written


# ----------------------------------------------------------------------------- the command


def freeze_baseline(spread: str, out_csv: str) -> str:
    """Freeze ``spread`` into ``out_csv``, keep the spread beside it, and say what was written."""
    out = write_spread_baseline(spread, out_csv)
    kept = keep_spread(Path(spread), out)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    bands = sorted(table["miou_band"], key=float)
    kept_text = f"; the spread kept as {kept}" if kept else ""
    return (f"wrote {out}: {len(table)} rows from {sum(map(int, table['n_runs']))} runs of {spread}; "
            f"mIoU bands {bands[0]} to {bands[-1]}{kept_text}")


def reference_logs(results: str) -> str:
    written = write_reference_logs(results)
    return f"wrote {len(written)} reference logs under {Path(written[0]).parent}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.report.freeze",
                                description="Freeze the smoke references (the Makefile's smoke-baseline and "
                                            "reference-logs targets).")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("baseline", help="a spread file -> the smoke baseline (and the spread kept beside it)")
    b.add_argument("spread")
    b.add_argument("out_csv")
    lg = sub.add_parser("logs", help="a smoke run-all's train.log.json -> results/reference/logs/smoke/")
    lg.add_argument("results")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    target = {"baseline": "smoke-baseline", "logs": "reference-logs"}[args.action]
    try:
        if args.action == "baseline":
            message = freeze_baseline(args.spread, args.out_csv)
        else:
            message = reference_logs(args.results)
    except NLBenchError as exc:
        print(f"{target}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{target}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{target}: {message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
