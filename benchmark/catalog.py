"""The catalog of rows: the recipes folder, the published table (results/published.csv) and the
links of each row's released checkpoint and training log. `nlbench list` and `nlbench show`.

It sits just above ``recipe`` because every layer that names rows needs it (the plan selects rows
with it, the report prints the published figures and links from it) and it needs nothing but
recipes and one CSV file.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import List, Optional, Tuple

import pandas as pd

from benchmark.errors import NLBenchError
from benchmark.recipe import RECIPES_DIR, REPO_ROOT, list_recipe_paths, load_recipe

PUBLISHED_CSV = REPO_ROOT / "results" / "published.csv"
COLUMNS = ["recipe", "dataset", "method", "backbone", "crop_size", "lr_schd", "mem_gb", "fps", "miou", "miou_ms_flip"]
NUMERIC = ["mem_gb", "fps", "miou", "miou_ms_flip"]
# The figures MMSeg published for the checkpoint it releases for a row (its metafile), where a later
# release replaced the one the table was measured on (R-101 ADE20K 160k: 44.63 / 45.79, the table
# 43.36 / 44.83). Optional columns: absent or empty, they are the table's.
RELEASED_COLUMNS = {"miou": "released_miou", "miou_ms_flip": "released_miou_ms_flip"}


def load_published(path: Optional[Path] = None) -> pd.DataFrame:
    """Published rows keyed by recipe name. Figures are kept as printed strings ('' when absent) in
    the ``*_text`` columns, and as floats (NaN when absent) in the plain columns."""
    path = Path(path or PUBLISHED_CSV)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise NLBenchError(f"cannot read published table: {exc}", path) from None
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise NLBenchError(f"missing columns {missing}; expected {COLUMNS}", path)
    df = raw[COLUMNS].copy()
    for table_col, released_col in RELEASED_COLUMNS.items():
        given = raw[released_col] if released_col in raw.columns else pd.Series([""] * len(raw), index=raw.index)
        raw[released_col] = df[released_col] = given.where(given != "", raw[table_col])
    for col in NUMERIC + list(RELEASED_COLUMNS.values()):
        df[f"{col}_text"] = df[col]
        df[col] = pd.to_numeric(df[col].replace("", None), errors="coerce")
        _refuse_non_numbers(path, raw, col, df[col].isna() & (raw[col] != ""), "a number or empty")
    ints = pd.to_numeric(raw["lr_schd"], errors="coerce")
    _refuse_non_numbers(path, raw, "lr_schd", ints.isna() | (ints != ints.round()), "an iteration count")
    df["lr_schd"] = ints.astype(int)
    return df.set_index("recipe", drop=False)


def released_table(published: pd.DataFrame) -> pd.DataFrame:
    """The table as the released checkpoints' results are judged: each row's mIoU figures are those
    published for the checkpoint MMSeg releases for it; ``figure_note`` says where they differ from
    the table's (empty elsewhere)."""
    out = published.copy()
    notes = pd.Series("", index=out.index)
    for row, note in released_differences(published).items():
        notes[row] = note
    for table_col, released_col in RELEASED_COLUMNS.items():
        out[table_col], out[f"{table_col}_text"] = published[released_col], published[f"{released_col}_text"]
    out["figure_note"] = notes
    return out


def released_differences(published: pd.DataFrame) -> dict:
    """recipe -> "released checkpoint <stamp>: mIoU 44.63, ms+flip 45.79 (the table: 43.36, 44.83)" for
    each row whose released checkpoint's published figures differ from the table's."""
    out = {}
    for recipe, r in published.iterrows():
        pairs = [(c, r[f"{RELEASED_COLUMNS[c]}_text"], r[f"{c}_text"]) for c in RELEASED_COLUMNS]
        if all(mine == table for _, mine, table in pairs):
            continue
        stamp = _release_stamp(str(recipe))
        figures = ", ".join(f"{'mIoU' if c == 'miou' else 'ms+flip'} {mine or '-'}" for c, mine, _ in pairs)
        table = ", ".join(table or "-" for _, _, table in pairs)
        out[recipe] = f"released checkpoint {stamp or '(no release named)'}: {figures} (the table: {table})"
    return out


def _release_stamp(recipe_name: str) -> Optional[str]:
    try:
        release = load_recipe(RECIPES_DIR / f"{recipe_name}.yaml").release
    except NLBenchError:
        return None
    return None if release is None else release.stamp


def _refuse_non_numbers(path: Path, raw: pd.DataFrame, column: str, bad: pd.Series, expected: str) -> None:
    if bad.any():
        row = raw[bad].iloc[0]
        raise NLBenchError(f"row {row['recipe']!r}: expected {expected}, got {row[column]!r}", path, column)


def select_recipe_paths(pattern: Optional[str], key: str = "--filter") -> List[Path]:
    """The recipes whose names match the glob ``pattern`` (all of them for None)."""
    paths = list_recipe_paths()
    if pattern:
        paths = [p for p in paths if fnmatch.fnmatch(p.stem, pattern)]
        if not paths:
            raise NLBenchError(f"no recipe matches {pattern!r}; `nlbench list` shows the names", key=key)
    if not paths:
        raise NLBenchError("no recipes found", key="recipes")
    return paths


def release_links(recipe_name: str) -> Optional[Tuple[str, str]]:
    """(checkpoint URL, training log URL) of a row's release; None when the recipe names none."""
    try:
        release = load_recipe(RECIPES_DIR / f"{recipe_name}.yaml").release
    except NLBenchError:
        return None
    return None if release is None else (release.url, release.log_url)

