"""The smoke baseline and its measured noise: results/reference/smoke_spread.csv -> results/reference/smoke.csv.

The smoke profile's final mIoU is measured several times per row (seeds, CPU threads, instruction
sets) into a spread file, one line a run, in the columns ``SPREAD_COLUMNS``:

    recipe,seed,cpu_threads,isa,cpu,miou,miou_ms_flip

(``isa`` is ``native`` or ``avx2``, the latter meaning ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2;
``cpu`` the CPU's model name; ``miou_ms_flip`` empty for a row that has none). Freezing it
(``make smoke-baseline SPREAD=FILE``, benchmark/report/freeze.py) writes the baseline in published.csv's columns plus
``profile``/``device`` and the band columns ``BAND_COLUMNS``: per row and metric the mean of the runs
and the band of benchmark.stats.noise_band (four times the largest deviation from that mean, at least the
default tolerance), rounded outwards to the two decimals it is written with. compare then holds a smoke
row against its own band rather than the fixed tolerance.
"""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import List, Optional

import pandas as pd

from benchmark.catalog import PUBLISHED_CSV, RELEASED_COLUMNS
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.recipe import REPO_ROOT
from benchmark.stats import DEFAULT_TOLERANCE, SPREAD_MARGIN, noise_band

SPREAD_CSV = REPO_ROOT / "results" / "reference" / "smoke_spread.csv"
SPREAD_COLUMNS = ("recipe", "seed", "cpu_threads", "isa", "cpu", "miou", "miou_ms_flip")
SPREAD_ISAS = ("native", "avx2")
BAND_METRICS = ("miou", "miou_ms_flip")
BAND_COLUMNS = ("miou_band", "miou_ms_flip_band", "n_runs", "spread_over")
# What a failing smoke row tells its user (the Makefile target of that name).
# `make smoke-spread` measures the spread on this machine; `smoke-baseline` freezes it (Makefile).
REFREEZE_COMMAND = "make smoke-spread smoke-baseline SPREAD=results/spread-run/smoke_spread.csv"


def read_spread(path: Path) -> pd.DataFrame:
    """The spread file, validated: seed and cpu_threads integers, isa one of SPREAD_ISAS, the mIoUs
    numbers (miou_ms_flip may be empty: NaN), every recipe a row of the published table."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise NLBenchError(f"cannot read the spread file: {exc}", path) from None
    missing = [c for c in SPREAD_COLUMNS if c not in raw.columns]
    if missing:
        raise NLBenchError(f"missing columns {missing}; expected {list(SPREAD_COLUMNS)}", path)
    if raw.empty:
        raise NLBenchError("no runs in the spread file", path)
    known = set(pd.read_csv(PUBLISHED_CSV, dtype=str)["recipe"])
    table = raw[list(SPREAD_COLUMNS)].copy()
    for line, row in enumerate(raw.to_dict("records"), start=2):
        _check_spread_line(path, line, row, known)
    for column in ("seed", "cpu_threads"):
        table[column] = table[column].astype(int)
    for column in BAND_METRICS:
        table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    return table


def _check_spread_line(path: Path, line: int, row: dict, known: set) -> None:
    def bad(column: str, expected: str) -> NLBenchError:
        return NLBenchError(f"line {line}: expected {expected}, got {row[column]!r}", path, column)

    if row["recipe"] not in known:
        raise bad("recipe", "a row of results/published.csv")
    for column in ("seed", "cpu_threads"):
        if not row[column].strip().isdigit():
            raise bad(column, "a whole number")
    if row["isa"] not in SPREAD_ISAS:
        raise bad("isa", f"one of {', '.join(SPREAD_ISAS)}")
    for column, may_be_empty in (("miou", False), ("miou_ms_flip", True)):
        text = row[column].strip()
        if text == "" and may_be_empty:
            continue
        try:
            value = float(text)
        except ValueError:
            raise bad(column, "an mIoU in points") from None
        if not 0.0 <= value <= 100.0:
            raise bad(column, "an mIoU in points, 0 to 100")


def _spread_over(runs: pd.DataFrame) -> str:
    """How the runs of one row varied, for people: '20 runs: 5 seeds; threads 1, 2; isa avx2, native; AMD ...'."""
    def listed(column: str) -> str:
        return ", ".join(str(v) for v in sorted(set(runs[column])))

    return (f"{len(runs)} runs: {runs['seed'].nunique()} seeds; threads {listed('cpu_threads')}; "
            f"isa {listed('isa')}; cpu {listed('cpu')}")


def _frozen(mean: float, band: float) -> tuple:
    """(mean, band) as written, to 2 decimals: the band grows by the mean's rounding and is rounded up,
    so the written band holds every value the exact one does."""
    if mean != mean:
        return "", ""
    written = round(mean, 2)
    widened = math.ceil((band + abs(written - mean)) * 100 - 1e-9) / 100
    return f"{written:.2f}", f"{widened:.2f}"


def baseline_from_spread(spread: Path, floor: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """The smoke baseline of a spread file: published.csv's columns of each measured row, its mIoUs the
    means of its runs, ``profile`` smoke, ``device`` cpu and the band columns (module docstring)."""
    runs = read_spread(spread)
    base = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    base = base[base["recipe"].isin(set(runs["recipe"]))].copy()
    # the released checkpoints' figures are the full-size models', never a smoke row's
    base = base.drop(columns=[c for c in RELEASED_COLUMNS.values() if c in base.columns])
    for metric in BAND_METRICS:
        frozen = [_frozen_metric(runs[runs["recipe"] == r][metric], floor) for r in base["recipe"]]
        base[metric] = [mean for mean, _ in frozen]
        base[f"{metric}_band"] = [band for _, band in frozen]
    base["mem_gb"], base["fps"] = "", ""  # a CPU's Mem and fps describe the machine, not the code
    base["profile"], base["device"] = "smoke", "cpu"
    base["n_runs"] = [str(int((runs["recipe"] == r).sum())) for r in base["recipe"]]
    base["spread_over"] = [_spread_over(runs[runs["recipe"] == r]) for r in base["recipe"]]
    return base


def _frozen_metric(values: pd.Series, floor: float) -> tuple:
    got = noise_band(values, floor, SPREAD_MARGIN)
    return _frozen(got.mean, got.band)


def write_spread_baseline(spread, out_csv=None, floor: float = DEFAULT_TOLERANCE) -> Path:
    """Freeze ``spread`` into the smoke baseline ``out_csv`` (default results/reference/smoke.csv), atomically."""
    out = Path(out_csv) if out_csv else REPO_ROOT / "results" / "reference" / "smoke.csv"
    atomic_write_text(out, baseline_from_spread(Path(spread), floor).to_csv(index=False))
    return out


def read_bands(path: Path, extra: pd.DataFrame) -> Optional[pd.DataFrame]:
    """A baseline's band columns by recipe (NaN where empty), or None for a baseline without them (one
    frozen before its spread was measured). Some but not all of them is an error."""
    present = [c for c in BAND_COLUMNS if c in extra.columns]
    if not present:
        return None
    if len(present) < len(BAND_COLUMNS):
        missing: List[str] = [c for c in BAND_COLUMNS if c not in present]
        raise NLBenchError(f"missing band columns {missing}; expected all of {list(BAND_COLUMNS)} or none", path)
    bands = extra[["recipe", *BAND_COLUMNS]].set_index("recipe")
    for column in ("miou_band", "miou_ms_flip_band", "n_runs"):
        values = pd.to_numeric(bands[column].replace("", None), errors="coerce")
        bad = (values.isna() & (bands[column] != "")) | (values < 0)
        if bad.any():
            recipe = bands.index[bad.to_numpy()][0]
            raise NLBenchError(f"row {recipe!r}: expected a number >= 0 or empty, got {bands.loc[recipe, column]!r}",
                               path, column)
        bands[column] = values
    return bands


# ----------------------------------------------------------------------------- measuring the spread

# `make smoke-spread` runs the smoke profile once per instruction set and thread count, each into
# SPREAD_RUN/<isa>-t<threads>; collect_spread turns those runs into the spread file.
_RUN_FOLDER = re.compile(r"(native|avx2)-t(\d+)")


def cpu_model() -> str:
    """This machine's CPU model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def spread_lines(results_dir: Path, cpu_threads: int, isa: str, cpu: str) -> pd.DataFrame:
    """The spread file's lines of one run-all: each trained smoke (recipe, seed) with an mIoU."""
    from benchmark.report.collect import runs
    from benchmark.run.records import load_records

    per_seed = runs(load_records(results_dir)[0])  # no records: an empty table, not an error
    per_seed = per_seed[(per_seed["profile"] == "smoke") & (per_seed["checkpoint_source"] == "trained")
                        & per_seed["miou"].notna()]
    lines = pd.DataFrame({"recipe": per_seed["recipe"], "seed": per_seed["seed"].astype(int),
                          "cpu_threads": cpu_threads, "isa": isa, "cpu": cpu})
    for metric in BAND_METRICS:
        lines[metric] = [f"{v:.2f}" if v == v else "" for v in per_seed[metric]]
    return lines


def collect_spread(spread_run, out_csv, cpu: Optional[str] = None) -> Path:
    """Every ``<isa>-t<threads>`` run under ``spread_run`` as one spread file ``out_csv`` (atomic)."""
    if not Path(spread_run).is_dir():
        raise NLBenchError("expected a folder of spread runs (make smoke-spread writes one)", spread_run)
    folders = sorted(p for p in Path(spread_run).iterdir() if p.is_dir() and _RUN_FOLDER.fullmatch(p.name))
    if not folders:
        raise NLBenchError("expected run folders named <isa>-t<threads> (native-t1, avx2-t2, ...)", spread_run)
    parts = []
    for folder in folders:
        isa, threads = _RUN_FOLDER.fullmatch(folder.name).groups()
        parts.append(spread_lines(folder, int(threads), isa, cpu or cpu_model()))
    table = pd.concat(parts, ignore_index=True)
    if table.empty:
        raise NLBenchError("no trained smoke-profile mIoU in any run folder", spread_run)
    atomic_write_text(Path(out_csv), table[list(SPREAD_COLUMNS)].to_csv(index=False))
    read_spread(Path(out_csv))  # what freezing will read: refuse here, not there
    return Path(out_csv)
