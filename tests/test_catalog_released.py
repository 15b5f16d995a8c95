"""Released checkpoints are judged against the figures MMSeg published for that very checkpoint
(its metafile), not the table's where a later release replaced the table's checkpoint: for R-101
ADE20K 160k the released 20210827_221502-7881aa1a has 44.63 / 45.79, the table 43.36 / 44.83."""

from __future__ import annotations

import pandas as pd
from conftest import ADE_R101_ROW as ROW

from benchmark.catalog import PUBLISHED_CSV, load_published, released_differences, released_table
from benchmark.report.collect import RELEASED, TRAINED
from benchmark.report.compare import compare
from benchmark.report.references import load_reference


def test_released_figures_differ_from_the_table_for_one_row_only():
    published = load_published()
    row = published.loc[ROW]
    assert (row["miou"], row["miou_ms_flip"]) == (43.36, 44.83)
    assert (row["released_miou"], row["released_miou_ms_flip"]) == (44.63, 45.79)
    others = published.drop(index=ROW)
    assert (others["released_miou"] == others["miou"]).all()
    assert (others["released_miou_ms_flip_text"] == others["miou_ms_flip_text"]).all()
    assert released_differences(published) == {
        ROW: "released checkpoint 20210827_221502-7881aa1a: mIoU 44.63, ms+flip 45.79 (the table: 43.36, 44.83)"}


def test_a_table_without_released_columns_keeps_its_figures(tmp_path):
    csv = tmp_path / "ref.csv"
    raw = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    raw.drop(columns=["released_miou", "released_miou_ms_flip"]).to_csv(csv, index=False)
    table = released_table(load_published(csv))
    assert table.loc[ROW, "miou"] == 43.36 and table.loc[ROW, "figure_note"] == ""


def _summary(source: str, miou: float) -> pd.DataFrame:
    row = {"recipe": ROW, "profile": "full", "checkpoint_source": source, "device_name": "Tesla V100-SXM2-32GB"}
    for metric, value in (("miou", miou), ("miou_ms_flip", float("nan")), ("mem_gb", float("nan")),
                          ("fps", float("nan"))):
        row.update({f"{metric}_mean": value, f"{metric}_std": float("nan"), f"{metric}_n": 0 if value != value else 1})
    return pd.DataFrame([row])


def test_compare_holds_released_weights_to_their_checkpoints_figures_and_trained_ones_to_the_table():
    ref = load_reference("published")
    [released] = [c for c in compare(_summary(RELEASED, 44.62), ref, 0.5, RELEASED)
                  if c.recipe == ROW and c.metric == "miou"]
    assert released.reference == 44.63 and released.verdict == "reproduced"
    assert "released checkpoint 20210827_221502-7881aa1a" in released.note and "the table: 43.36" in released.note
    [trained] = [c for c in compare(_summary(TRAINED, 44.62), ref, 0.5, TRAINED)
                 if c.recipe == ROW and c.metric == "miou"]
    assert trained.reference == 43.36 and trained.verdict == "better" and trained.note == ""


def _released_miou(ref) -> float:
    checks = compare(_summary(RELEASED, 44.62), ref, 0.5, RELEASED)
    [check] = [c for c in checks if c.recipe == ROW and c.metric == "miou"]
    return check.reference


def test_the_released_figures_follow_the_tables_columns_not_its_label(tmp_path):
    # The same table named by its path is held to the released checkpoint's figures too.
    assert _released_miou(load_reference(str(PUBLISHED_CSV))) == 44.63
    # A table without the released columns: its own figures, whatever it is called.
    csv = tmp_path / "published.csv"
    raw = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    raw.drop(columns=["released_miou", "released_miou_ms_flip"]).to_csv(csv, index=False)
    assert _released_miou(load_reference(str(csv))) == 43.36
