"""What a newcomer reads: compare and the HTML report say once per table what was not compared and
why (never once per cell or row), the smoke baseline is named as such, generated tables carry no
machine's paths, and `status --watch` follows a campaign until every row is final."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from conftest import cli_command, cli_env
from report_helpers import ROW, write_row

from benchmark.catalog import PUBLISHED_CSV
from benchmark.cli import main as cli
from benchmark.launch.plan import Resources, make_plan
from benchmark.launch.run_all import write_run
from benchmark.recipe import REPO_ROOT
from benchmark.run.state import STATE_FILE

R50_769 = "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769"  # publishes ms+flip; ROW (512x1024) does not


def _smoke_baseline(path: Path) -> Path:
    """A smoke baseline as `make reference-logs` writes one: mIoU (and ms+flip where published), no Mem
    or fps, profile smoke, device cpu."""
    table = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    table["miou"] = "40.00"
    table["miou_ms_flip"] = ["42.00" if v else "" for v in table["miou_ms_flip"]]
    table[["mem_gb", "fps"]] = ""
    table["profile"], table["device"] = "smoke", "cpu"
    table.to_csv(path, index=False)
    return path


def test_compare_folds_what_it_did_not_compare_into_one_line_per_reason(tmp_path, capsys):
    results = tmp_path / "results"
    write_row(results, recipe=ROW, profile="smoke", miou=40.2)
    write_row(results, recipe=R50_769, profile="smoke", miou=39.9, ms_flip=42.1)
    ref = _smoke_baseline(tmp_path / "smoke.csv")
    junit, report = tmp_path / "compare.xml", tmp_path / "compare.md"
    code = cli(["compare", "--results", str(results), "--reference", str(ref), "--junit", str(junit),
                "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    table = [line for line in lines if line.startswith("| nonlocal")]
    assert not [line for line in table if "skipped" in line or "no reference value" in line]
    assert sum(ROW in line for line in table) == 1  # its mIoU; its ms+flip has no published value
    assert sum(R50_769 in line for line in table) == 2  # mIoU and ms+flip
    folded = [line for line in lines if "no reference value" in line]
    assert len(folded) == 1, folded
    # 16 baseline rows: ms+flip has no value in 4, Mem and fps in none; the line names the counts
    assert folded[0].startswith("not compared: ") and "Mem (GB) (16 rows)" in folded[0] \
        and "Inf time (fps) (16 rows)" in folded[0] and "mIoU(ms+flip) (4 rows)" in folded[0]
    assert f"profile smoke: reference smoke baseline {ref}; it holds no Mem or fps" in out
    assert report.read_text().count("no reference value") == 1
    # JUnit keeps one skipped case per check: CI servers list them
    skipped = [c for c in ET.parse(junit).getroot().findall("testcase") if c.find("skipped") is not None]
    assert sum("no reference value" in c.find("skipped").get("message") for c in skipped) == 4 + 16 + 16


def test_tables_no_readme_and_links_that_are_the_same_on_every_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a results folder outside the checkout, named relatively
    write_row(tmp_path / "results", recipe=ROW, profile="smoke", miou=40.2)
    assert cli(["tables", "--results", "results", "--no-readme"]) == 0
    assert not (tmp_path / "README.md").exists()
    text = (tmp_path / "results" / "tables.md").read_text()
    assert f"]({'recipes/' + ROW}.yaml)" in text  # the recipe's path in the repository
    assert str(tmp_path) not in text and "../" not in text and str(REPO_ROOT) not in text
    assert "`nlbench tables --results results`" in text
    assert cli(["tables", "--results", "results", "--no-readme", "--check"]) == 2
    assert "--no-readme" in capsys.readouterr().err
    # inside the checkout the link stays relative to the file that holds it (README, results/demo)
    link_from = REPO_ROOT / "results" / "demo"
    from benchmark.report.tables import _links

    assert _links(ROW, link_from)[0] == f"[{ROW}](../../recipes/{ROW}.yaml)"


def test_report_says_once_per_table_what_was_not_compared(tmp_path):
    results = tmp_path / "results"
    write_row(results, recipe=ROW, profile="smoke", miou=40.2)
    write_row(results, recipe=R50_769, profile="smoke", miou=39.9, ms_flip=42.1)
    assert cli(["report", "--results", str(results), "--out", str(tmp_path / "report")]) == 0
    index = (tmp_path / "report" / "index.html").read_text()
    text = re.sub(r"<[^>]+>", " ", index)  # what a reader sees
    notes = re.findall(r"not compared: [^\n]*", text)
    assert len(notes) == 1, notes  # one Cityscapes table of two smoke rows
    assert "Mem (GB) (2 of 2 rows), Inf time (fps) (2 of 2 rows), mIoU(ms+flip) (1 of 2 rows): no reference value" \
        in notes[0]
    assert "smoke baseline" in text
    row_page = (tmp_path / "report" / "rows" / "smoke" / f"{ROW}.html").read_text()
    assert "Against the smoke reference curve" in row_page and "Against the published curve" not in row_page


def _status(results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command("status", "--results", results, *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())


@pytest.mark.slow  # about 5 s: each refresh is a real status of a real process
def test_status_watch_refreshes_until_every_row_is_final(tmp_path, capsys):
    plan = make_plan(tmp_path, lambda r: Resources(), pattern="*r50*20k_voc*", profile="smoke")
    (job,) = plan.jobs
    write_run(tmp_path, "local", [job.to_dict()], {})
    work = Path(job.work_dir)
    work.mkdir(parents=True)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # the job's process
    try:
        (work / STATE_FILE).write_text(json.dumps({"hostname": os.uname().nodename, "attempt": 1,
                                                   "state": "running", "stage": "train", "pid": worker.pid}))
        watch = _status(tmp_path, "--watch", "--interval", "0.3")
        seen = []
        while sum("1 row(s): 1 running" in line for line in seen) < 2:  # two refreshes of the running row
            line = watch.stdout.readline()
            assert line, watch.stderr.read()
            seen.append(line)
        assert watch.poll() is None  # still watching: the row is running
    finally:
        worker.kill()
        worker.wait()
    rest, err = watch.communicate(timeout=60)
    out = "".join(seen) + rest
    assert watch.returncode == 1, out + err  # the process went without finishing: failed
    heads = [line for line in out.splitlines() if line.startswith("nlbench status")]
    assert len(heads) >= 2 and "refreshing every 0.3 s" in heads[0] and "every row is final" in heads[-1]
    assert "1 row(s): 1 running" in out and out.rstrip().endswith("1 row(s): 1 failed")
    relative_log = f"work/smoke/{job.name}/seed0-{job.recipe.hash[:12]}/job.log"
    assert relative_log in out and str(tmp_path) + "/work" not in out  # relative logs
    assert cli(["status", "--results", str(tmp_path), "--watch", "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err


def test_a_pending_local_job_whose_run_all_is_gone_is_final(tmp_path, capsys):
    """A local run-all killed before it started a job leaves it without a state file: status calls it
    failed (it will never start) instead of pending, so `status --watch` ends."""
    plan = make_plan(tmp_path, lambda r: Resources(), pattern="*r50*20k_voc*", profile="smoke")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # the run-all, ended
    gone.wait()
    launcher = {"hostname": os.uname().nodename, "pid": gone.pid}
    write_run(tmp_path, "local", [plan.jobs[0].to_dict()], {"launcher_process": launcher})
    assert cli(["status", "--results", str(tmp_path), "--watch", "--interval", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "every row is final" in out and "never started: the local run-all that planned it" in out
    launcher["pid"] = os.getpid()  # a live run-all: its job is still to come
    write_run(tmp_path, "local", [plan.jobs[0].to_dict()], {"launcher_process": launcher})
    assert cli(["status", "--results", str(tmp_path)]) == 0
    assert "1 row(s): 1 pending" in capsys.readouterr().out
