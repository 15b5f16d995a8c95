"""The Makefile's freezing steps as one command: ``python -m benchmark.report.freeze ACTION ...``.

- ``spread SPREAD_RUN OUT``: the runs of `make smoke-spread` (SPREAD_RUN/<isa>-t<threads>) as one spread
  file (benchmark/report/baseline.py, ``collect_spread``);
- ``baseline SPREAD OUT``: `make smoke-baseline`: the spread frozen into the smoke baseline OUT, and the
  spread itself kept beside it as ``<folder of OUT>/smoke_spread.csv`` (for the committed
  results/reference/smoke.csv: results/reference/smoke_spread.csv), so that a baseline's source data
  lies next to it;
- ``logs RESULTS``: `make reference-logs`: each row's MMSeg-form training log of a smoke run-all frozen as
  its reference log (benchmark/report/row_curves.py, ``write_reference_logs``).

Bad input (a missing folder, an unreadable or malformed file) is one line naming the file and what was
expected, exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import pandas as pd

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_bytes

KEPT_SPREAD = "smoke_spread.csv"  # the name of the spread kept beside a frozen baseline


def keep_spread(spread: Path, baseline: Path) -> Optional[Path]:
    """Copy ``spread`` beside ``baseline`` as smoke_spread.csv, atomically; None when it is that file already."""
    kept = Path(baseline).parent / KEPT_SPREAD
    if kept.exists() and kept.resolve() == Path(spread).resolve():
        return None
    return atomic_write_bytes(kept, Path(spread).read_bytes())


def freeze_baseline(spread: str, out_csv: str) -> str:
    """Freeze ``spread`` into ``out_csv``, keep the spread beside it, and say what was written."""
    from benchmark.report.baseline import write_spread_baseline

    out = write_spread_baseline(spread, out_csv)
    kept = keep_spread(Path(spread), out)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    bands = sorted(table["miou_band"], key=float)
    kept_text = f"; the spread kept as {kept}" if kept else ""
    return (f"wrote {out}: {len(table)} rows from {sum(map(int, table['n_runs']))} runs of {spread}; "
            f"mIoU bands {bands[0]} to {bands[-1]}{kept_text}")


def collect(spread_run: str, out_csv: str) -> str:
    from benchmark.report.baseline import collect_spread

    return f"wrote {collect_spread(spread_run, out_csv)}"


def reference_logs(results: str) -> str:
    from benchmark.report.row_curves import write_reference_logs

    written = write_reference_logs(results)
    return f"wrote {len(written)} reference logs under {Path(written[0]).parent}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.report.freeze",
                                description="Freeze the smoke references (the Makefile's smoke-spread, "
                                            "smoke-baseline and reference-logs targets).")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("spread", help="SPREAD_RUN/<isa>-t<threads> runs -> one spread file")
    s.add_argument("spread_run")
    s.add_argument("out_csv")
    b = sub.add_parser("baseline", help="a spread file -> the smoke baseline (and the spread kept beside it)")
    b.add_argument("spread")
    b.add_argument("out_csv")
    lg = sub.add_parser("logs", help="a smoke run-all's train.log.json -> results/reference/logs/smoke/")
    lg.add_argument("results")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    target = {"spread": "smoke-spread", "baseline": "smoke-baseline", "logs": "reference-logs"}[args.action]
    try:
        if args.action == "spread":
            message = collect(args.spread_run, args.out_csv)
        elif args.action == "baseline":
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
