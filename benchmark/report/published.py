"""The published NonLocal table (results/published.csv): the one source of published figures."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from benchmark.errors import NLBenchError
from benchmark.recipe import REPO_ROOT

PUBLISHED_CSV = REPO_ROOT / "results" / "published.csv"
COLUMNS = ["recipe", "dataset", "method", "backbone", "crop_size", "lr_schd", "mem_gb", "fps", "miou", "miou_ms_flip"]
NUMERIC = ["mem_gb", "fps", "miou", "miou_ms_flip"]


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
    for col in NUMERIC:
        df[f"{col}_text"] = df[col]
        df[col] = pd.to_numeric(df[col].replace("", None), errors="coerce")
    df["lr_schd"] = df["lr_schd"].astype(int)
    return df.set_index("recipe", drop=False)
