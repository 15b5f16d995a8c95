"""The references results are set against, and the device class their Mem and fps belong to.

The reference of full-profile records is the published table (results/published.csv, measured on one
V100); smoke records are set against the committed smoke baseline, results/reference/smoke.csv (in
published.csv's columns plus ``profile``, ``device`` and the measured bands of report/baseline.py).
compare decides with them, plots draws them beside the reproduced numbers, and the metafile names
the device class a figure was measured on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from benchmark.catalog import RELEASED_COLUMNS, load_published
from benchmark.errors import NLBenchError
from benchmark.io.files import shown_path
from benchmark.recipe import REPO_ROOT
from benchmark.report.baseline import read_bands

SMOKE_REFERENCE = REPO_ROOT / "results" / "reference" / "smoke.csv"
PUBLISHED_LABEL = "published (MMSegmentation model zoo)"
PUBLISHED_DEVICE = "V100"  # docs/FIDELITY.md: fps and Mem of the published rows come from one V100 32G


@dataclass(frozen=True)
class Reference:
    label: str  # for people: where the numbers come from
    profile: str  # which records it is compared with
    device_class: Optional[str]  # where its Mem/fps were measured (None: unknown, never compared)
    table: pd.DataFrame  # load_published's frame: recipe -> miou, miou_ms_flip, mem_gb, fps
    # A baseline's measured bands (report/baseline.py's BAND_COLUMNS by recipe); None: every mIoU row
    # keeps the tolerance (the published table, or a smoke baseline frozen before its spread was measured).
    bands: Optional[pd.DataFrame] = None
    # The table has the figures published for each released checkpoint (catalog.RELEASED_COLUMNS) in a
    # full-profile table: released weights are held to those, not to the table's.
    released_figures: bool = False


def device_class(name: Optional[str]) -> Optional[str]:
    """'Tesla V100-SXM2-32GB' -> 'V100', 'NVIDIA H100 80GB HBM3' -> 'H100', 'cpu' -> 'cpu'."""
    if not name or not isinstance(name, str) or ";" in name:  # several devices across seeds: no one class
        return None
    if name.lower() == "cpu":
        return "cpu"
    match = re.search(r"\b([A-Z]{1,2}\d{1,3}[A-Z]?)\b", name.upper())
    return match.group(1) if match else name


def load_reference(spec: str) -> Reference:
    """``published`` or a CSV in published.csv's columns (optional ``profile`` and ``device`` columns)."""
    if spec == "published":
        return Reference(PUBLISHED_LABEL, "full", PUBLISHED_DEVICE, load_published(), released_figures=True)
    path = Path(spec)
    table = load_published(path)
    extra = pd.read_csv(path, dtype=str, keep_default_na=False)

    def single(column: str, default: Optional[str]) -> Optional[str]:
        if column not in extra.columns:
            return default
        values = sorted(set(extra[column]) - {""})
        if len(values) > 1:
            raise NLBenchError(f"expected one value in the whole column, got {values}", path, column)
        return values[0] if values else default

    label = shown_path(path, REPO_ROOT)  # inside the checkout: a path that reads the same on every machine
    profile = single("profile", "full")
    if profile != "full":  # nlbench's own numbers, never to be read as the published ones
        label = f"{profile} baseline {label}"
    # MMSeg's released figures are full-size results: a smoke table copied from published.csv keeps them
    # as stale columns beside its own numbers.
    released = profile == "full" and any(column in extra.columns for column in RELEASED_COLUMNS.values())
    return Reference(label, profile, device_class(single("device", None)), table, read_bands(path, extra), released)


def default_references(profiles: List[str]) -> Dict[str, Reference]:
    """Each profile's own reference: published for full, the committed smoke baseline for smoke."""
    refs = {}
    for profile in profiles:
        if profile == "full":
            refs[profile] = load_reference("published")
        elif profile == "smoke":
            if not SMOKE_REFERENCE.is_file():
                raise NLBenchError("the smoke baseline is missing; pass --reference", SMOKE_REFERENCE)
            refs[profile] = load_reference(str(SMOKE_REFERENCE))
    return refs
