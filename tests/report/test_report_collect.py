import math

import pandas as pd
import pytest
from conftest import CITY_ROW, run_cli
from report_helpers import ROW, ROWS, make_record, write_row

from benchmark.errors import NLBenchError
from benchmark.report.collect import collect
from benchmark.run.records import write_record


def test_newest_record_per_kind_wins(tmp_path):
    write_record(tmp_path, make_record("eval", miou=10.0, created_at="2026-01-01T00:00:00+00:00"))
    write_record(tmp_path, make_record("eval", miou=30.0, created_at="2026-01-03T00:00:00+00:00"))
    # an offset other than UTC still orders by the instant: 2026-01-02T23:00 UTC is older than Jan 3
    write_record(tmp_path, make_record("eval", miou=20.0, created_at="2026-01-03T00:00:00+01:00"))
    write_record(tmp_path, make_record("bench", fps=3.0, mem_gb=1.5, device="Tesla V100-SXM2-32GB"))
    summary = collect(tmp_path).summary
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["miou_mean"] == 30.0 and row["miou_n"] == 1 and math.isnan(row["miou_std"])
    assert row["fps_mean"] == 3.0 and row["mem_gb_mean"] == 1.5
    assert row["device_name"] == "Tesla V100-SXM2-32GB"  # Mem/fps provenance comes from the bench record
    assert math.isnan(row["miou_ms_flip_mean"]) and row["miou_ms_flip_n"] == 0


def _with_hash(record, recipe_hash):
    record["provenance"]["recipe_hash"] = recipe_hash
    return record


def test_records_of_another_resolved_recipe_are_left_out_and_every_choice_is_said(tmp_path):
    """A row's kinds come from one resolved recipe (its newest train record's); a newer eval of
    another recipe is left out, and two evals of one recipe are both named with the one used."""
    ours, theirs = "a" * 64, "b" * 64
    for kind, miou in (("train", None), ("eval", 45.72), ("bench", None)):
        rec = make_record(kind, miou=miou or 50.0, created_at="2026-01-01T00:00:00+00:00")
        write_record(tmp_path, _with_hash(rec, ours))
    planted = write_record(tmp_path, _with_hash(make_record("eval", miou=11.11, fps=None,
                                                            created_at="2026-01-05T00:00:00+00:00"), theirs))
    collected = collect(tmp_path)
    row = collected.summary.iloc[0]
    assert row["miou_mean"] == 45.72 and row["recipe_hash"] == ours
    [left_out] = collected.choices
    assert left_out.startswith(f"full/{ROW}/seed0: 1 record(s) of another resolved recipe (hash {'b' * 12}: eval) "
                               "left out")
    assert collected.warnings == []

    # A second eval of the row's own recipe: the newest is used, and both files are named.
    again = write_record(tmp_path, _with_hash(make_record("eval", miou=46.0, created_at="2026-01-03T00:00:00+00:00"),
                                              ours))
    collected = collect(tmp_path)
    assert collected.summary.iloc[0]["miou_mean"] == 46.0
    duplicate = [c for c in collected.choices if "2 eval records" in c]
    assert len(duplicate) == 1 and f"used {again} (the newest" in duplicate[0] and str(planted) not in duplicate[0]
    proc = run_cli("collect", "--results", str(tmp_path), "--out", str(tmp_path / "s.csv"))
    assert proc.returncode == 0
    assert proc.stderr.count("warning: ") == 2 and "2 eval records of one resolved recipe" in proc.stderr


def test_seeds_of_another_configuration_are_not_averaged_with_the_row(tmp_path):
    """Seed 1 trained with another --set than seed 0 (their config_hash, the recipe hash without the
    seed, differ): the row is the newest training's configuration, seed 1 is left out and said."""
    for seed, (config, miou, day) in enumerate([("c" * 64, 40.0, "05"), ("d" * 64, 70.0, "01")]):
        for kind in ("train", "eval"):
            rec = make_record(kind, seed=seed, miou=miou, created_at=f"2026-01-{day}T00:00:00+00:00")
            rec["provenance"].update(recipe_hash=f"{seed}" * 64, config_hash=config)
            write_record(tmp_path, rec)
    collected = collect(tmp_path)
    row = collected.summary.iloc[0]
    assert row["miou_mean"] == 40.0 and row["n_seeds"] == 1 and row["seeds"] == "0"
    assert collected.choices == [f"full/{ROW}/seed1: left out of the row's figures: it ran another configuration "
                                 f"(config hash {'d' * 12}) than the row's newest training ({'c' * 12})"]


def test_seeds_give_mean_std_min_max_n(tmp_path):
    values = [70.0, 72.0, 77.0]
    for seed, miou in enumerate(values):
        write_row(tmp_path, seed=seed, miou=miou, ms_flip=miou + 1, fps=2.0 + seed)
    write_row(tmp_path, recipe=ROWS[3], profile="smoke", miou=12.0)
    summary = collect(tmp_path).summary.set_index(["recipe", "profile"])
    row = summary.loc[(ROW, "full")]
    expected = pd.Series(values)
    assert row["n_seeds"] == 3 and row["seeds"] == "0,1,2" and row["miou_n"] == 3
    assert row["miou_mean"] == pytest.approx(expected.mean())
    assert row["miou_std"] == pytest.approx(expected.std(ddof=1))
    assert (row["miou_min"], row["miou_max"]) == (70.0, 77.0)
    assert row["miou_ms_flip_mean"] == pytest.approx(expected.mean() + 1)
    assert row["fps_mean"] == pytest.approx(3.0) and row["aacc_mean"] == 90.0
    assert summary.loc[(ROWS[3], "smoke"), "miou_mean"] == 12.0
    assert len(collect(tmp_path).per_seed) == 4


def test_collect_cli_writes_csv_and_warns_on_stderr(tmp_path):
    write_row(tmp_path, miou=55.0)
    bad = tmp_path / "records" / ROW / "full" / "seed0" / "eval-bad.json"
    bad.write_text('{"schema": "nlbench.record/1", "kind": "eval"')
    out = tmp_path / "out" / "summary.csv"
    res = run_cli("collect", "--results", str(tmp_path), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert str(bad) in res.stderr and "warning" in res.stderr
    assert "55.00" in res.stdout
    df = pd.read_csv(out)
    assert list(df["recipe"]) == [ROW] and df.loc[0, "miou_mean"] == 55.0


def test_empty_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NLBenchError, match="no result records"):
        collect(tmp_path)
    res = run_cli("collect", "--results", str(tmp_path))
    assert res.returncode == 2 and "no result records" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "summary.csv").exists()


def test_train_peak_never_fills_the_published_mem(tmp_path):
    # The train stage's peak is measured the way the recipe trains (SDPA, no DDP, maybe bf16), not
    # in the published setting: it has its own column and Mem (GB) stays empty without a bench Mem.
    train = make_record("train")
    train["mem_gb"], train["mem_kind"] = 0.57, "peak_rss"
    write_record(tmp_path, train)
    write_record(tmp_path, make_record("bench", fps=4.0, mem_gb=None))
    row = collect(tmp_path).summary.iloc[0]
    assert math.isnan(row["mem_gb_mean"]) and row["mem_kind"] is None and row["fps_mean"] == 4.0
    assert row["train_mem_gb_mean"] == 0.57
    bench = make_record("bench", fps=4.0, mem_gb=1.25)
    bench["mem_kind"] = "cuda_max_allocated"
    write_record(tmp_path, bench)
    row = collect(tmp_path).summary.iloc[0]
    assert row["mem_gb_mean"] == 1.25 and row["mem_kind"] == "cuda_max_allocated"
    assert row["train_mem_gb_mean"] == 0.57


def test_a_record_written_by_hand_in_the_documented_format_counts_like_a_written_one(results_with_records):
    """Seed 0 written by benchmark.run.records, seed 1 written literally as the schema says: collect
    reads both (mean of 20 and 30), and so does the CLI in a child process."""
    row = collect(results_with_records).summary.set_index(["recipe", "profile"]).loc[(CITY_ROW, "smoke")]
    assert row["seeds"] == "0,1" and row["miou_n"] == 2 and row["miou_mean"] == pytest.approx(25.0)
    assert (row["miou_min"], row["miou_max"]) == (20.0, 30.0)
    res = run_cli("collect", "--results", results_with_records)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    assert "25.00" in res.stdout
