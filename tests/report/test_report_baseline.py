"""The smoke baseline that carries its own spread, and the ci gate's demands (--min-seeds, --fail-on).

The spread files here are written by hand in the spread file's documented columns, and the expected
baselines and bands worked out by hand from the rule (mean of the runs; band = max(0.5, 4 x the
largest |run - mean|), widened by the mean's rounding and rounded up to 0.01). Each line's config_hash
is the row's smoke configuration's, as a run of it records (``provenance.config_hash``).
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli
from report_helpers import ROW, ROWS, flat_smoke_baseline, make_record, write_row

from benchmark.catalog import PUBLISHED_CSV
from benchmark.cli import main as cli
from benchmark.errors import NLBenchError
from benchmark.recipe import REPO_ROOT, load_recipe
from benchmark.report.baseline import baseline_from_spread
from benchmark.report.references import load_reference
from benchmark.report.spread import cells_of_run, read_spread, spread_table
from benchmark.run.records import write_record

R101_769 = "nonlocal_r101-d8_4xb2-40k_cityscapes-769x769"  # a row with an ms+flip figure
HEADER = "recipe,seed,cpu_threads,isa,cpu,miou,miou_ms_flip,config_hash\n"
CPU = "AMD EPYC 9454P 48-Core Processor"


def config_hash(recipe: str, threads: int, digits: int = 12) -> str:
    """What a smoke run of ``recipe`` at ``threads`` threads records as provenance.config_hash."""
    return load_recipe(recipe, [f"runtime.cpu_threads={threads}"], profile="smoke").config_hash[:digits]


H1, H2, H769_1, H769_2 = config_hash(ROW, 1), config_hash(ROW, 2), config_hash(R101_769, 1), config_hash(R101_769, 2)
# ROW: mean 44.10, largest deviation 0.30 -> band 1.20. R101_769: mIoU all 47.00 -> the floor 0.50;
# ms+flip 48.0/49.0/48.5/48.5 -> mean 48.50, deviation 0.50 -> band 2.00.
SPREAD = HEADER + "".join([
    f"{ROW},0,1,native,{CPU},44.0,,{H1}\n",
    f"{ROW},1,2,native,{CPU},44.4,,{H2}\n",
    f"{ROW},0,1,avx2,{CPU},43.8,,{H1}\n",
    f"{ROW},1,2,avx2,{CPU},44.2,,{H2}\n",
    f"{R101_769},0,1,native,{CPU},47.0,48.0,{H769_1}\n",
    f"{R101_769},1,1,native,{CPU},47.0,49.0,{H769_1}\n",
    f"{R101_769},0,2,avx2,{CPU},47.0,48.5,{H769_2}\n",
    f"{R101_769},1,2,avx2,{CPU},47.0,48.5,{H769_2}\n",
])


def run_inproc(capsys, *args):
    code = cli(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def spread(tmp_path):
    path = tmp_path / "smoke_spread.csv"
    path.write_text(SPREAD)
    return path


def freeze(spread: Path, out: Path) -> subprocess.CompletedProcess:
    """`make smoke-baseline` as a user runs it, with this interpreter's environment as the venv."""
    venv = Path(sys.prefix)
    return subprocess.run(["make", "-s", "-o", str(venv / ".installed"), "smoke-baseline", f"VENV={venv}",
                           f"SPREAD={spread}", f"SMOKE_BASELINE={out}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_make_smoke_baseline_freezes_each_rows_mean_and_band(spread, tmp_path):
    out = tmp_path / "smoke.csv"
    res = freeze(spread, out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"wrote {out}: 2 rows from 8 runs" in res.stdout and "mIoU bands 0.50 to 1.20" in res.stdout
    table = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("recipe")
    assert table.loc[ROW, ["miou", "miou_band", "miou_ms_flip", "miou_ms_flip_band", "n_runs"]].tolist() == [
        "44.10", "1.20", "", "", "4"]
    assert table.loc[R101_769, ["miou", "miou_band", "miou_ms_flip", "miou_ms_flip_band"]].tolist() == [
        "47.00", "0.50", "48.50", "2.00"]
    assert table.loc[ROW, "spread_over"] == f"4 runs: 2 seeds; threads 1, 2; isa avx2, native; cpu {CPU}"
    published = pd.read_csv(PUBLISHED_CSV, dtype=str).set_index("recipe")
    assert table.loc[ROW, "backbone"] == published.loc[ROW, "backbone"]
    assert set(table["profile"]) == {"smoke"} and set(table["mem_gb"]) == {""}
    ref = load_reference(str(out))
    assert ref.profile == "smoke" and ref.bands.loc[ROW, "miou_band"] == 1.2


def test_the_written_band_covers_the_rounding_of_the_mean(tmp_path):
    path = tmp_path / "s.csv"
    # mean 10.0036..., written 10.00: the band 0.5 (the floor) widens by 0.0036 and rounds up to 0.51
    path.write_text(HEADER + "".join(f"{ROW},{s},1,native,x,{v},,{H1}\n" for s, v in enumerate([10.0, 10.004, 10.007])))
    row = baseline_from_spread(path).set_index("recipe").loc[ROW]
    assert (row["miou"], row["miou_band"]) == ("10.00", "0.51")


@pytest.mark.parametrize("line, message", [
    (f"{ROW},0,1,sse4,x,40.0,,{H1}", "isa: line 2: expected one of native, avx2, sse41, got 'sse4'"),
    (f"no_such_row,0,1,native,x,40.0,,{H1}", "recipe: line 2: expected a row of results/published.csv"),
    (f"{ROW},zero,1,native,x,40.0,,{H1}", "seed: line 2: expected a whole number, got 'zero'"),
    (f"{ROW},0,1,native,x,,,{H1}", "miou: line 2: expected an mIoU in points, got ''"),
    (f"{ROW},0,1,native,x,140,,{H1}", "miou: line 2: expected an mIoU in points, 0 to 100"),
    (f"{ROW},0,1,native,x,40.0,,{H1.upper()}", "config_hash: line 2: expected the first 12 hex digits"),
    # a run of the row at 2 threads filed as 1: another configuration (runtime.cpu_threads is part of it)
    (f"{ROW},0,1,native,x,40.0,,{H2}", f"config_hash: line 2: a run of another smoke configuration of {ROW} "
                                      f"(config_hash {H2}; the recipe's at 1 thread(s) is now {H1}): measure the "
                                      "row again (scripts/smoke_spread.py --out "),
])
def test_a_bad_spread_line_is_one_error_naming_file_line_and_column(tmp_path, line, message):
    path = tmp_path / "s.csv"
    path.write_text(HEADER + line + "\n")
    with pytest.raises(NLBenchError) as info:
        read_spread(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_a_spread_file_without_its_columns_fails_make_on_one_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(f"recipe,miou\n{ROW},40\n")
    res = freeze(path, tmp_path / "out.csv")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"smoke-baseline: error: {path}: missing columns ['seed', 'cpu_threads', 'isa', 'cpu'" in res.stderr
    assert not (tmp_path / "out.csv").exists()


def test_smoke_rows_are_held_to_their_measured_band(spread, tmp_path, capsys):
    baseline = tmp_path / "smoke.csv"
    baseline.write_text(baseline_from_spread(spread).to_csv(index=False))
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    write_row(inside, recipe=ROW, profile="smoke", miou=45.15)  # +1.05: outside ±0.5, inside ±1.20
    write_row(inside, recipe=R101_769, profile="smoke", miou=47.2, ms_flip=46.6)  # ms+flip -1.90 within ±2.00
    code, out, _ = run_inproc(capsys, "compare", "--results", str(inside), "--reference", str(baseline))
    assert code == 0 and "3 reproduced, 0 better, 0 regressed" in out, out
    assert out.count("is held to its own measured band") == 1

    write_row(outside, recipe=ROW, profile="smoke", miou=42.85)  # -1.25: beyond ±1.20
    junit = tmp_path / "c.xml"
    code, out, _ = run_inproc(capsys, "compare", "--results", str(outside), "--reference", str(baseline),
                              "--junit", str(junit))
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("FAIL smoke"))
    assert line.startswith(f"FAIL smoke {ROW} mIoU: 42.85 is 1.25 below the reference 44.10")
    assert "beyond its band ±1.20, from the measured spread (4 runs: 2 seeds; threads 1, 2; isa avx2, native" in line
    assert "make smoke-spread smoke-baseline" in out
    assert out.splitlines()[-1] == ("FAIL: 1 regression(s) beyond the band (the tolerance; a smoke row: its "
                                    "measured spread)")
    failure = ET.parse(junit).getroot().find("testcase/failure")
    assert failure.get("message") == line

    # the ci method holds the interval to the same band: [42.90, 45.30] for ROW
    for seed, value in ((1, 43.9), (2, 44.3)):
        write_row(inside, recipe=ROW, profile="smoke", seed=seed, miou=value)
    code, out, _ = run_inproc(capsys, "compare", "--results", str(inside), "--reference", str(baseline),
                              "--method", "ci")
    assert "[42.90, 45.30]" in out


def test_an_old_baseline_without_bands_keeps_the_tolerance_said_once(tmp_path, capsys):
    baseline = flat_smoke_baseline(tmp_path / "smoke.csv")
    results = tmp_path / "r"
    write_row(results, recipe=ROW, profile="smoke", miou=20.45)
    write_row(results, recipe=R101_769, profile="smoke", miou=20.55)
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--reference", str(baseline))
    assert code == 0 and "1 reproduced, 1 better" in out
    assert out.count("carries no measured band") == 1 and "make smoke-spread smoke-baseline" in out

    old = pd.read_csv(baseline, dtype=str, keep_default_na=False)
    old["miou_band"] = "1.0"  # some band columns but not all: refused
    old.to_csv(baseline, index=False)
    code, _, err = run_inproc(capsys, "compare", "--results", str(results), "--reference", str(baseline))
    assert code == 2 and "missing band columns ['miou_ms_flip_band', 'n_runs', 'spread_over']" in err


def one_seed_of_every_row(results: Path) -> None:
    published = pd.read_csv(PUBLISHED_CSV).set_index("recipe")
    for recipe in ROWS:
        flip = published.loc[recipe, "miou_ms_flip"]
        write_row(results, recipe=recipe, miou=float(published.loc[recipe, "miou"]),
                  ms_flip=None if flip != flip else float(flip))


def test_min_seeds_fails_a_one_seed_run_that_ci_alone_passes(tmp_path, capsys):
    results = tmp_path / "r"
    one_seed_of_every_row(results)
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--method", "ci")
    assert code == 0 and out.rstrip().endswith("PASS: nothing below the band at 95% confidence (28 inconclusive)")

    junit = tmp_path / "c.xml"
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--method", "ci", "--min-seeds", "3",
                              "--junit", str(junit))
    assert code == 1
    assert out.splitlines()[-1] == ("FAIL: 28 mIoU check(s) of 16 row(s) with fewer than 3 seeds "
                                    "(--min-seeds 3; most seeds of such a row: 1)")
    assert "0 inconclusive" in out and "28 too-few-seeds" in out
    assert f"FAIL full {ROW} mIoU: too-few-seeds: 1 seed, fewer than --min-seeds 3" in out
    assert ET.parse(junit).getroot().get("failures") == "28"

    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--method", "ci", "--fail-on",
                              "inconclusive")
    assert code == 1 and out.splitlines()[-1] == "FAIL: 28 check(s) inconclusive (--fail-on inconclusive)"


def test_min_seeds_is_met_by_enough_seeds_and_asks_nothing_of_released_checkpoints(tmp_path, capsys):
    from report_helpers import make_record

    from benchmark.run.records import write_record

    results = tmp_path / "r"
    for seed, value in enumerate((78.2, 78.25, 78.3)):  # published 78.24: three seeds, interval inside ±0.5
        write_row(results, recipe=ROW, seed=seed, miou=value)
    released = {**make_record("eval", recipe=R101_769, miou=78.57), "checkpoint_source": "released"}
    write_record(results, released)
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--method", "ci", "--min-seeds", "3")
    assert code == 0 and "too-few-seeds" not in out.replace("0 too-few-seeds", ""), out
    # the 15 rows never run are `missing`: listed and counted, exempt from --min-seeds
    from benchmark.report.compare import RELEASED_TITLE

    trained = out.split(RELEASED_TITLE)[0]
    missing = {line.split("|")[1].strip() for line in trained.splitlines()
               if "| mIoU " in line and "| missing " in line and "| no record" in line}
    assert missing == set(ROWS) - {ROW}, out
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--method", "ci", "--min-seeds", "4")
    assert code == 1 and "FAIL: 1 mIoU check(s) of 1 row(s) with fewer than 4 seeds" in out
    assert "(the interval alone says reproduced)" in out


@pytest.mark.parametrize("args, message", [
    (["--min-seeds", "3"], "--min-seeds: only the ci method counts seeds"),
    (["--fail-on", "inconclusive"], "--fail-on: only the ci method"),
    (["--method", "ci", "--min-seeds", "0"], "--min-seeds: expected a whole number of seeds >= 1, got 0"),
])
def test_gate_flags_refuse_what_they_cannot_mean(tmp_path, capsys, args, message):
    write_row(tmp_path / "r", recipe=ROW)
    code, _, err = run_inproc(capsys, "compare", "--results", str(tmp_path / "r"), *args)
    assert code == 2 and message in err


def test_compare_help_names_the_gate_flags():
    res = run_cli("compare", "--help")
    assert "--min-seeds N" in res.stdout and "--fail-on {inconclusive}" in res.stdout
    assert "miou_band" in res.stdout


def _full_hash(recipe, threads):
    return load_recipe(recipe, [f"runtime.cpu_threads={threads}"], profile="smoke").config_hash


def _smoke_run(results, recipe, seed, miou, ms_flip=None, threads=1, **provenance):
    facts = {"cpu_model": "Test CPU", "cpu_capability": "AVX2", "config_hash": _full_hash(recipe, threads)}
    write_row(results, recipe=recipe, profile="smoke", seed=seed, miou=miou, ms_flip=ms_flip,
              provenance={**facts, **provenance})


def test_the_cells_of_a_run_are_its_current_smoke_runs_with_the_cpu_they_ran_on(tmp_path):
    run = tmp_path / "native-t1"
    _smoke_run(run, ROW, 0, 44.0)
    _smoke_run(run, ROW, 1, 44.4)
    _smoke_run(run, R101_769, 0, 47.0, ms_flip=48.5)
    _smoke_run(run, R101_769, 1, 47.5)  # ms+flip not there yet: left out until it is
    _smoke_run(run, ROW, 2, 40.0, config_hash="f" * 64)  # the row's smoke profile before it changed
    _smoke_run(run, ROW, 3, 40.0, threads=2)  # another thread count than the group's
    _smoke_run(run, ROW, 4, 40.0, cpu_model=None)  # an older record: no processor named
    _smoke_run(run, ROW, 6, 40.0, cpu_capability=None)  # ... or no instruction set
    write_row(run, recipe=ROW, profile="full", seed=5, miou=70.0)  # not a smoke run
    # an ms+flip record of another training of the row (another checkpoint) is not this eval's
    facts = {"cpu_model": "Test CPU", "cpu_capability": "AVX2", "config_hash": _full_hash(R101_769, 1)}
    write_record(run, make_record("eval", recipe=R101_769, profile="smoke", seed=2, miou=47.0,
                                  provenance={**facts, "checkpoint_sha256": "a" * 64}))
    write_record(run, make_record("eval_ms_flip", recipe=R101_769, profile="smoke", seed=2, miou=48.0,
                                  provenance={**facts, "checkpoint_sha256": "b" * 64}))
    # a released checkpoint's evaluation is not a smoke training's result
    released = make_record("eval", recipe=ROW, profile="smoke", seed=7, miou=40.0, provenance=facts)
    write_record(run, {**released, "checkpoint_source": "released"})
    cells = cells_of_run(run, "native", 1)
    assert [(c["recipe"], c["seed"], c["cpu"], c["miou"], c["miou_ms_flip"], c["config_hash"]) for c in cells] == [
        (R101_769, "0", "Test CPU (AVX2)", "47.0000", "48.5000", H769_1),
        (ROW, "0", "Test CPU (AVX2)", "44.0000", "", H1), (ROW, "1", "Test CPU (AVX2)", "44.4000", "", H1)]
    assert {(c["isa"], c["cpu_threads"]) for c in cells} == {("native", "1")}


def test_smoke_spread_collects_into_the_file_keeping_other_machines_and_dropping_stale_cells(tmp_path):
    work, out, table = tmp_path / "work", tmp_path / "spread.csv", tmp_path / "SMOKE.md"
    _smoke_run(work / "native-t1", ROW, 0, 44.0)
    _smoke_run(work / "native-t1", ROW, 1, 44.5)
    out.write_text(HEADER + f"{ROW},0,1,avx2,Other CPU (AVX2),43.5,,{H1}\n"
                   + f"{ROW},1,1,native,Other CPU (AVX512),42.0,,{'0' * 12}\n")
    table.write_text("# notes\n<!-- smoke-spread:begin -->\nold\n<!-- smoke-spread:end -->\ntail\n")
    res = subprocess.run([sys.executable, "scripts/smoke_spread.py", "--collect-only", "--groups", "native:1:0-1",
                          "--filter", ROW, "--work", str(work), "--out", str(out), "--table", str(table)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "dropped 1 cell(s) of an earlier smoke configuration" in res.stdout
    assert out.read_text().splitlines() == [
        HEADER.strip(), f"{ROW},0,1,native,Test CPU (AVX2),44.0000,,{H1}",
        f"{ROW},1,1,native,Test CPU (AVX2),44.5000,,{H1}", f"{ROW},0,1,avx2,Other CPU (AVX2),43.5,,{H1}"]
    read_spread(out)  # what freezing reads
    text = table.read_text()
    assert text.startswith("# notes\n<!-- smoke-spread:begin -->\n| row |") and text.endswith("-->\ntail\n")
    # 3 cells: seeds 0 and 1 (max-min 0.50), and seed 0 on another processor (0.50 from 44.00)
    assert f"| {ROW} | mIoU | 3 | 44.00 | 43.50 | 44.50 | **1.00** | 0.50 | n/a | 0.50 |" in text


def test_freezing_keeps_the_spread_beside_the_baseline(spread, tmp_path, capsys):
    from benchmark.report.freeze import main as freeze_main

    out = tmp_path / "reference" / "smoke.csv"
    out.parent.mkdir()
    assert freeze_main(["baseline", str(spread), str(out)]) == 0
    kept = out.parent / "smoke_spread.csv"
    assert kept.read_text() == SPREAD and f"the spread kept as {kept}" in capsys.readouterr().out
    assert freeze_main(["baseline", str(kept), str(out)]) == 0  # re-frozen from the kept spread itself
    assert kept.read_text() == SPREAD and "kept" not in capsys.readouterr().out
    assert freeze_main(["logs", str(tmp_path / "no-run")]) == 2
    assert capsys.readouterr().err.startswith("reference-logs: error: ")


@pytest.mark.parametrize("spread_arg, freezes", [([], False), (["SPREAD=elsewhere.csv"], True)])
def test_reference_logs_refreezes_the_baseline_only_from_an_explicit_spread(spread_arg, freezes):
    venv = Path(sys.prefix)
    res = subprocess.run(["make", "-n", "-o", str(venv / ".installed"), "reference-logs", f"VENV={venv}",
                          *spread_arg], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "benchmark.report.freeze logs" in res.stdout
    assert ("benchmark.report.freeze baseline 'elsewhere.csv'" in res.stdout) == freezes
    assert "write_baseline" not in res.stdout and ("smoke baseline left as it is" in res.stdout) != freezes


def test_the_committed_smoke_baseline_is_the_freeze_of_the_committed_spread_of_todays_profile():
    # Every committed cell is a run of its row's smoke configuration as the recipes say it now (read_spread
    # refuses any other), and smoke.csv is exactly what freezing those cells gives: a change of the smoke
    # profile without a new measurement and a new baseline fails here, not in a user's gate.
    reference = REPO_ROOT / "results" / "reference"
    frozen = baseline_from_spread(reference / "smoke_spread.csv").reset_index(drop=True)
    committed = pd.read_csv(reference / "smoke.csv", dtype=str, keep_default_na=False)
    assert list(frozen.columns) == list(committed.columns)
    pd.testing.assert_frame_equal(frozen.astype(str), committed, check_dtype=False)


def test_the_spread_tables_dimensions_hold_the_other_two_fixed():
    # ISA/CPU compares one seed and thread count across caps or processors; the seeds column compares
    # seeds within one cap on one processor, never an AVX2-capped run against a native one.
    cell = dict(recipe=ROW, cpu_threads="1", miou_ms_flip="", config_hash=H1)
    cells = [dict(cell, seed="0", isa="native", cpu="A (AVX2)", miou="99.0"),
             dict(cell, seed="1", isa="native", cpu="A (AVX2)", miou="99.2"),
             dict(cell, seed="0", isa="avx2", cpu="A (AVX2)", miou="98.9"),
             dict(cell, seed="1", isa="sse41", cpu="A (DEFAULT)", miou="98.5"),
             dict(cell, seed="0", isa="native", cpu="A (AVX2)", cpu_threads="2", miou="99.5")]
    row = next(line for line in spread_table(cells).splitlines() if line.startswith(f"| {ROW} | mIoU |"))
    # max-min 1.00; seeds 0.20 (native, 1 thread); threads 0.50 (seed 0 native); ISA/CPU 0.70 (seed 1)
    assert row == f"| {ROW} | mIoU | 5 | 99.02 | 98.50 | 99.50 | **1.00** | 0.20 | 0.50 | 0.70 |"
