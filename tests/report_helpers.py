"""Small builders for result records in the real on-disk layout (shared by tests/test_report_*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from conftest import CITY_ROW as ROW

from benchmark.recipe import list_recipe_paths
from benchmark.run.records import write_record

ROWS = [p.stem for p in list_recipe_paths()]


def make_record(kind: str, recipe: str = ROW, profile: str = "full", seed: int = 0, miou: float = 50.0,
                fps: Optional[float] = 2.0, mem_gb: Optional[float] = 7.0, device: str = "cpu",
                created_at: Optional[str] = None, provenance: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    record: Dict[str, Any] = {
        "kind": kind, "recipe": recipe, "profile": profile, "seed": seed, "iterations": 40,
        "wall_time_s": 1.5, "gpu_hours": 0.0,
        "provenance": {"device_name": device, "device_count": 1, "dtype": "float32", "git_commit": "0" * 40,
                       **(provenance or {})},
    }
    if kind in ("eval", "eval_ms_flip"):
        record["metrics"] = {"aAcc": 90.0, "mIoU": miou, "mAcc": miou + 5,
                             "per_class": {"road": {"IoU": miou, "Acc": miou + 1}}}
    if kind == "bench":
        record["fps"], record["mem_gb"] = fps, mem_gb
    if created_at is not None:
        record["created_at"] = created_at
    return record


def write_row(results, recipe: str = ROW, profile: str = "full", seed: int = 0, miou: float = 50.0,
              ms_flip: Optional[float] = None, fps: float = 2.0, mem_gb: float = 7.0, device: str = "cpu",
              provenance: Optional[Dict[str, Any]] = None) -> None:
    """A finished row: train, eval, (eval ms+flip), bench records (``provenance``: more of its fields)."""
    common = dict(recipe=recipe, profile=profile, seed=seed, device=device, provenance=provenance)
    write_record(results, make_record("train", **common))
    write_record(results, make_record("eval", miou=miou, **common))
    if ms_flip is not None:
        write_record(results, make_record("eval_ms_flip", miou=ms_flip, **common))
    write_record(results, make_record("bench", fps=fps, mem_gb=mem_gb, **common))


def flat_smoke_baseline(path, miou: str = "20.00"):
    """A smoke baseline in the form write_baseline made before bands (no band columns): every row at
    ``miou``, no ms+flip, Mem or fps. Returns ``path``."""
    import pandas as pd

    from benchmark.catalog import PUBLISHED_CSV

    baseline = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    baseline[["mem_gb", "fps", "miou_ms_flip"]] = ""
    baseline["miou"] = miou
    baseline["profile"], baseline["device"] = "smoke", "cpu"
    baseline.to_csv(path, index=False)
    return path


def work_dir_of(results, profile: str, row: str, seed: int = 0, source: str = "trained"):
    """The one work dir a run left for (row, seed): RESULTS/work/<profile>/<row>/[released/]seed<k>-<hash12>."""
    folder = Path(results) / "work" / profile / row / ("released" if source == "released" else "")
    found = sorted(folder.glob(f"seed{seed}-*"))
    assert len(found) == 1, found
    return found[0]
