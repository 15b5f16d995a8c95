"""The smoke baseline and its measured noise: results/reference/smoke_spread.csv -> results/reference/smoke.csv.

The smoke profile's final mIoU is measured several times per row (seeds, CPU threads, instruction
sets, processors) into a spread file, one line a run (its columns and reader: benchmark/report/spread.py).
Freezing it
(``make smoke-baseline SPREAD=FILE``, benchmark/report/freeze.py) writes the baseline in published.csv's columns plus
``profile``/``device`` and the band columns ``BAND_COLUMNS``: per row and metric the mean of the runs
and the band of benchmark.stats.noise_band (four times the largest deviation from that mean, at least the
default tolerance), rounded outwards to the two decimals it is written with. compare then holds a smoke
row against its own band rather than the fixed tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import pandas as pd

from benchmark.catalog import PUBLISHED_CSV, RELEASED_COLUMNS
from benchmark.errors import NLBenchError
from benchmark.report.spread import BAND_METRICS, read_spread
from benchmark.stats import DEFAULT_TOLERANCE, SPREAD_MARGIN, noise_band

BAND_COLUMNS = ("miou_band", "miou_ms_flip_band", "n_runs", "spread_over")
# What a failing smoke row tells its user (the Makefile target of that name).
# `make smoke-spread` adds this machine's runs to the committed spread; `smoke-baseline` freezes it (Makefile).
REFREEZE_COMMAND = "make smoke-spread smoke-baseline"


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
