import xml.etree.ElementTree as ET

import pytest
from conftest import run_cli
from report_helpers import ROW, ROWS, flat_smoke_baseline, write_row

from benchmark.cli import main as cli
from benchmark.report.collect import collect
from benchmark.report.compare import compare
from benchmark.report.freeze import write_baseline
from benchmark.report.references import device_class, load_reference

V100 = "Tesla V100-SXM2-32GB"
R101_769 = "nonlocal_r101-d8_4xb2-40k_cityscapes-769x769"  # published 78.57 / 80.29, 12.8 GB, 1.05 fps


def run_inproc(capsys, *args):
    """The CLI's main in this process (cheaper than a subprocess): (exit code, stdout, stderr)."""
    code = cli(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_exit_1_on_planted_regression_and_0_within_tolerance(tmp_path):
    ok, bad = tmp_path / "ok", tmp_path / "bad"
    # within the 0.5 tolerance: 78.24 - 0.4 and 78.57 + 0.3 (two seeds around it)
    write_row(ok, recipe=ROW, miou=77.84)
    write_row(ok, recipe=R101_769, seed=0, miou=78.77, ms_flip=80.29)
    write_row(ok, recipe=R101_769, seed=1, miou=78.97, ms_flip=80.29)
    res = run_cli("compare", "--results", str(ok), "--report", str(tmp_path / "ok.md"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout and "V100" in res.stdout
    assert "reproduced" in (tmp_path / "ok.md").read_text()

    # planted regression: ms+flip 0.6 below the published 80.29
    write_row(bad, recipe=ROW, miou=78.24)
    write_row(bad, recipe=R101_769, miou=78.57, ms_flip=79.69)
    junit = tmp_path / "compare.xml"
    res = run_cli("compare", "--results", str(bad), "--junit", str(junit))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL: 1 regression" in res.stdout
    suite = ET.parse(junit).getroot()
    cases = suite.findall("testcase")
    assert len(cases) == 16 * 4 and suite.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [(f"nlbench.full.{R101_769}", "miou_ms_flip")]
    # a wider tolerance lets it through
    assert run_cli("compare", "--results", str(bad), "--tolerance", "0.7").returncode == 0


def verdicts(checks):
    return {(c.recipe, c.metric): c for c in checks}


def test_verdicts_and_hardware_gate(tmp_path):
    # Mem 12.8 -> 14.5 GB (13% more) and fps 1.05 -> 1.20 on a V100: compared; on a CPU: not
    write_row(tmp_path, recipe=R101_769, miou=79.5, ms_flip=80.0, fps=1.20, mem_gb=14.5, device=V100)
    write_row(tmp_path, recipe=ROW, miou=78.0, fps=9.0, mem_gb=1.0, device="cpu")
    got = verdicts(compare(collect(tmp_path).summary, load_reference("published"), tolerance=0.5))
    assert got[(R101_769, "miou")].verdict == "better" and got[(R101_769, "miou")].delta == pytest.approx(0.93)
    assert got[(R101_769, "miou_ms_flip")].verdict == "reproduced"
    assert got[(R101_769, "mem_gb")].verdict == "regressed"  # lower is better; beyond 10%
    assert got[(R101_769, "fps")].verdict == "better"
    assert got[(ROW, "miou")].verdict == "reproduced"
    assert got[(ROW, "fps")].verdict == "skipped" and "cpu" in got[(ROW, "fps")].note
    assert got[(ROW, "mem_gb")].verdict == "skipped"
    assert got[(ROW, "miou_ms_flip")].verdict == "skipped"  # not published for this row
    assert got[(ROWS[0], "miou")].verdict == "missing"


def test_device_class():
    assert device_class(V100) == "V100"
    assert device_class("NVIDIA H100 80GB HBM3") == "H100"
    assert device_class("cpu") == "cpu"
    assert device_class(None) is None and device_class("Tesla V100; NVIDIA A100") is None


def test_smoke_records_use_the_smoke_baseline_never_the_published_numbers(tmp_path, capsys):
    ref_csv = flat_smoke_baseline(tmp_path / "smoke.csv")
    results = tmp_path / "results"
    write_row(results, recipe=ROW, profile="smoke", miou=20.3)
    # against the published table the smoke row is not compared at all
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--reference", "published")
    assert code == 0 and "no full-profile records" in out and "never compared" in out
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--reference", str(ref_csv))
    assert code == 0 and "1 reproduced" in out, out
    # the default reference of smoke records is the committed baseline, not the published table
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results))
    assert "results/reference/smoke.csv" in out and "no full-profile records" not in out
    write_row(results, recipe=ROW, profile="smoke", seed=1, miou=18.0)  # mean 19.15: 0.85 below
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--reference", str(ref_csv))
    assert code == 1 and "smoke" in out


def test_compare_bad_reference_and_empty_results(tmp_path, capsys):
    write_row(tmp_path / "r", recipe=ROW)
    bad = tmp_path / "bad.csv"
    bad.write_text("recipe,miou\nx,1\n")
    code, _, err = run_inproc(capsys, "compare", "--results", str(tmp_path / "r"), "--reference", str(bad))
    assert code == 2 and "bad.csv" in err and "missing columns" in err
    code, _, err = run_inproc(capsys, "compare", "--results", str(tmp_path / "empty"))
    assert code == 2 and "no result records" in err


def test_write_baseline_then_compare_reproduces(tmp_path, capsys):
    results = tmp_path / "results"
    write_row(results, recipe=ROW, profile="smoke", miou=21.234, ms_flip=22.5, fps=40.0, mem_gb=0.6)
    write_row(results, recipe=R101_769, profile="smoke", miou=9.0)
    ref = load_reference(str(write_baseline(results, tmp_path / "smoke.csv")))
    assert ref.profile == "smoke" and ref.device_class == "cpu" and len(ref.table) == 2
    assert ref.table.loc[ROW, "miou_text"] == "21.23" and ref.table.loc[ROW, "fps_text"] == ""
    code, out, _ = run_inproc(capsys, "compare", "--results", str(results), "--reference", str(tmp_path / "smoke.csv"))
    assert code == 0 and "3 reproduced, 0 better, 0 regressed, 0 missing" in out
