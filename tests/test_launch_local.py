"""Local launcher end to end: `nlbench run-all --profile smoke` on two rows, then re-runs that skip work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.cli import main as cli
from benchmark.launch.status import collect_status

pytestmark = pytest.mark.slow

TWO_ROWS = "nonlocal_r50-d8_4xb4-[24]0k_voc12aug-512x512"
TINY = ["schedule.max_iters=8", "schedule.checkpoint_interval=4", "schedule.eval_interval=8",
        "schedule.log_interval=4", "data.synthetic.train=4", "data.synthetic.val=2",
        "test.ms_flip_ratios=[0.75,1.25]", "bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _kinds(results: Path, recipe: str):
    folder = results / "records" / recipe / "smoke" / "seed0"
    return sorted(p.name.split("-")[0] for p in folder.glob("*.json"))


def test_local_run_all_two_rows_then_skips_what_is_done(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the smoke recipes' relative data roots land here
    results = tmp_path / "results"
    args = ["run-all", "--profile", "smoke", "--filter", TWO_ROWS, "--results", str(results), *_sets(TINY)]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "2 row(s): 2 done" in out
    rows = collect_status(results)
    assert [r["state"] for r in rows] == ["done", "done"]
    names = [r["recipe"] for r in rows]
    for name in names:
        assert _kinds(results, name) == ["bench", "eval", "eval_ms_flip", "train"]
        ev = json.loads(next((results / "records" / name / "smoke" / "seed0").glob("eval-*.json")).read_text())
        assert 0.0 <= ev["metrics"]["mIoU"] <= 100.0 and ev["iterations"] == 8
        assert ev["provenance"]["checkpoint_sha256"]
    assert (tmp_path / "data" / "synthetic").is_dir()

    # Everything is done: nothing runs again.
    assert cli(args) == 0
    assert "nothing to run" in capsys.readouterr().out

    # One stage's record lost: only that stage runs again; training is not repeated.
    name = names[0]
    for p in (results / "records" / name / "smoke" / "seed0").glob("bench-*.json"):
        p.unlink()
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "skipping 1 row(s)" in out and "1 row(s): 1 done" in out
    assert _kinds(results, name) == ["bench", "eval", "eval_ms_flip", "train"]
    log = (results / "work" / "smoke" / name / "seed0" / "job.log").read_text().splitlines()
    assert "stages to run: bench" in [line for line in log if "stages to run" in line][-1]
