"""The smoke spread file (results/reference/smoke_spread.csv): its one reader and its writers.

The smoke profile's final mIoU is measured several times per row into it, one line a run (a *cell*), in
the columns ``SPREAD_COLUMNS``:

    recipe,seed,cpu_threads,isa,cpu,miou,miou_ms_flip,config_hash

- ``isa``: the instruction-set cap the run was started under, a key of ``ISA_CAPS`` (``native``: none;
  ``avx2``: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2; ``sse41``: ONEDNN_MAX_CPU_ISA=SSE41
  ATEN_CPU_CAPABILITY=default, the second instruction set of a machine without AVX-512);
- ``cpu``: the processor and the instruction set ATen ran on, from the run's own records
  (``"<model name> (<capability>)"``, e.g. ``AMD EPYC (AVX2)``);
- ``miou_ms_flip``: empty for a row that publishes none;
- ``config_hash``: the first 12 hex digits of the run's ``provenance.config_hash`` (the resolved recipe
  without the seed). A cell counts only while it equals the row's smoke configuration at its thread
  count now: a cell measured before the row's smoke profile changed is refused, not averaged in.

scripts/smoke_spread.py (``make smoke-spread``) measures cells and writes them here (``cells_of_run``,
``write_spread``); benchmark/report/baseline.py freezes the file into the smoke baseline; ``spread_table``
is the table docs/SMOKE.md shows.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import pandas as pd

from benchmark.catalog import PUBLISHED_CSV
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.recipe import load_recipe
from benchmark.run.records import CheckpointSource, Kind, load_records, newest_by_kind

SPREAD_COLUMNS = ("recipe", "seed", "cpu_threads", "isa", "cpu", "miou", "miou_ms_flip", "config_hash")
CELL_KEY = ("recipe", "seed", "cpu_threads", "isa", "cpu")  # one run of a row; miou and hash are its result
# The environment each instruction-set cap sets at start-up (oneDNN and ATen read them once).
ISA_CAPS: Dict[str, Dict[str, str]] = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
}
BAND_METRICS = ("miou", "miou_ms_flip")
HASH_DIGITS = 12
Cell = Dict[str, str]


@functools.lru_cache(maxsize=None)
def smoke_config_hash(recipe: str, cpu_threads: int) -> str:
    """The row's smoke configuration at ``cpu_threads`` threads as a cell names it (``config_hash``)."""
    resolved = load_recipe(recipe, [f"runtime.cpu_threads={cpu_threads}"], profile="smoke")
    return resolved.config_hash[:HASH_DIGITS]


# ----------------------------------------------------------------------------- reading


def read_spread(path: Path) -> pd.DataFrame:
    """The spread file, validated: every recipe a row of the published table, seed and cpu_threads whole
    numbers, isa a key of ISA_CAPS, the mIoUs numbers (miou_ms_flip may be empty: NaN), and every cell
    of the row's smoke configuration as it is now. Anything else: one NLBenchError naming the line."""
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
    for line, row in enumerate(raw.to_dict("records"), start=2):
        _check_line(path, line, row, known)
    table = raw[list(SPREAD_COLUMNS)].copy()
    for column in ("seed", "cpu_threads"):
        table[column] = table[column].astype(int)
    for column in BAND_METRICS:
        table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    return table


def _check_line(path: Path, line: int, row: dict, known: set) -> None:
    def bad(column: str, expected: str) -> NLBenchError:
        return NLBenchError(f"line {line}: expected {expected}, got {row[column]!r}", path, column)

    if row["recipe"] not in known:
        raise bad("recipe", "a row of results/published.csv")
    for column in ("seed", "cpu_threads"):
        if not row[column].strip().isdigit():
            raise bad(column, "a whole number")
    if row["isa"] not in ISA_CAPS:
        raise bad("isa", f"one of {', '.join(ISA_CAPS)}")
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
    if not re.fullmatch(f"[0-9a-f]{{{HASH_DIGITS}}}", row["config_hash"]):
        raise bad("config_hash", f"the first {HASH_DIGITS} hex digits of the run's provenance.config_hash")
    now = smoke_config_hash(row["recipe"], int(row["cpu_threads"]))
    if row["config_hash"] != now:
        raise NLBenchError(
            f"line {line}: a run of another smoke configuration of {row['recipe']} (config_hash "
            f"{row['config_hash']}; the recipe's at {row['cpu_threads']} thread(s) is now {now}): measure the row "
            f"again (scripts/smoke_spread.py --out {path}, which drops such lines) or drop its lines",
            path, "config_hash")


def read_cells(path: Path) -> List[Cell]:
    """The file's lines as they are, for merging (scripts/smoke_spread.py); no file: none."""
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and tuple(rows[0].keys()) != SPREAD_COLUMNS:
        raise NLBenchError(f"expected the columns {','.join(SPREAD_COLUMNS)}", path)
    return rows


# ----------------------------------------------------------------------------- writing


def cells_of_run(results: Path, isa: str, cpu_threads: int) -> List[Cell]:
    """The cells one smoke run-all left in ``results`` (started under ``isa``'s cap with
    runtime.cpu_threads=``cpu_threads``): per (row, seed) its newest eval record of a trained checkpoint,
    with the eval ms+flip record of the same checkpoint where the row publishes one. Only runs of the
    row's smoke configuration now count, and only records that say which processor and instruction set
    made them; a row still missing its ms+flip is left out."""
    records, _ = load_records(Path(results))
    counted = [rec for rec in records
               if rec.profile == "smoke" and rec.kind.value in ("eval", "eval_ms_flip")
               and rec.source == CheckpointSource.TRAINED
               and rec.provenance.cpu_model and rec.provenance.cpu_capability
               and str(rec.provenance.config_hash or "")[:HASH_DIGITS] == _current_hash(rec.recipe, cpu_threads)]
    cells = []
    for (recipe, _, _, seed), kinds in sorted(newest_by_kind(counted).items()):
        rec, ms = kinds.get(Kind.EVAL), kinds.get(Kind.EVAL_MS_FLIP)
        if ms is not None and rec is not None and (ms.provenance.checkpoint_sha256, _cpu(ms)) != (
                rec.provenance.checkpoint_sha256, _cpu(rec)):
            ms = None  # of another training of the row: not this cell's
        if rec is None or (ms is None and _publishes_ms_flip(recipe)):
            continue
        cells.append({"recipe": recipe, "seed": str(seed), "cpu_threads": str(cpu_threads), "isa": isa,
                      "cpu": _cpu(rec), "miou": f"{rec.metrics.mIoU:.4f}",
                      "miou_ms_flip": f"{ms.metrics.mIoU:.4f}" if ms else "",
                      "config_hash": str(rec.provenance.config_hash)[:HASH_DIGITS]})
    return cells


def _cpu(rec) -> str:
    return f"{rec.provenance.cpu_model} ({rec.provenance.cpu_capability})"


def _current_hash(recipe: str, cpu_threads: int) -> str:
    """smoke_config_hash, or "" for a recipe that is not in recipes/ (its records never count)."""
    try:
        return smoke_config_hash(recipe, cpu_threads)
    except NLBenchError:
        return ""


@functools.lru_cache(maxsize=None)
def _publishes_ms_flip(recipe: str) -> bool:
    return load_recipe(recipe, [], profile="smoke").test.ms_flip_published


def merge_cells(old: Iterable[Cell], new: Iterable[Cell]) -> List[Cell]:
    """The union of two lists of cells; a cell of ``new`` replaces the same run (CELL_KEY) of ``old``."""
    cells = {tuple(c[k] for k in CELL_KEY): c for c in old}
    cells.update({tuple(c[k] for k in CELL_KEY): c for c in new})
    return list(cells.values())


def write_spread(path: Path, cells: Iterable[Cell]) -> Path:
    """``cells`` as the spread file ``path``, sorted by row, instruction set, CPU, threads and seed (atomic)."""
    order = {name: i for i, name in enumerate(ISA_CAPS)}
    rows = sorted(cells, key=lambda r: (r["recipe"], order.get(r["isa"], 9), r["cpu"], int(r["cpu_threads"]),
                                        int(r["seed"])))
    lines = [",".join(SPREAD_COLUMNS)] + [",".join(_csv_field(r[c]) for c in SPREAD_COLUMNS) for r in rows]
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if "," in value or '"' in value else value


# ----------------------------------------------------------------------------- the table


def _range_within(rows: List[Cell], column: str, vary: str) -> float:
    """The largest max-min of ``column`` over cells that differ only in ``vary`` (NaN when none do);
    ``platform`` is the instruction-set cap and the processor together."""
    fixed = [c for c in ("seed", "cpu_threads", "platform") if c != vary]
    buckets: Dict[Tuple[str, ...], List[float]] = {}
    for r in rows:
        if r[column]:
            where = {**r, "platform": f"{r['isa']} {r['cpu']}"}
            buckets.setdefault(tuple(where[c] for c in fixed), []).append(float(r[column]))
    spans = [max(v) - min(v) for v in buckets.values() if len(v) > 1]
    return max(spans) if spans else float("nan")


def spread_table(cells: Sequence[Cell]) -> str:
    """Markdown: per row and metric the cells' count, mean, min, max, max-min, and the largest max-min
    along one dimension with the other two fixed: seeds; 1 against 2 threads; the instruction set and
    processor the run had (``cpu``)."""
    lines = ["| row | metric | cells | mean | min | max | max-min | seeds | threads | ISA/CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_row: Dict[str, List[Cell]] = {}
    for c in cells:
        by_row.setdefault(c["recipe"], []).append(c)
    for recipe in sorted(by_row):
        rows = by_row[recipe]
        for column, label in (("miou", "mIoU"), ("miou_ms_flip", "mIoU(ms+flip)")):
            values = [float(r[column]) for r in rows if r[column]]
            if not values:
                continue
            low, high = min(values), max(values)
            dims = [_range_within(rows, column, d) for d in ("seed", "cpu_threads", "platform")]
            lines.append(f"| {recipe} | {label} | {len(values)} | {sum(values) / len(values):.2f} | {low:.2f} | "
                         f"{high:.2f} | **{high - low:.2f}** | "
                         + " | ".join("n/a" if d != d else f"{d:.2f}" for d in dims) + " |")
    return "\n".join(lines)


TABLE_BEGIN, TABLE_END = "<!-- smoke-spread:begin -->", "<!-- smoke-spread:end -->"


def write_table(path: Path, table: str) -> Path:
    """``table`` between the smoke-spread markers of the markdown file ``path`` (atomic)."""
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else f"{TABLE_BEGIN}\n{TABLE_END}\n"
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise NLBenchError(f"expected the markers {TABLE_BEGIN} and {TABLE_END}", path)
    head, rest = text.split(TABLE_BEGIN, 1)
    return atomic_write_text(Path(path), f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}")
