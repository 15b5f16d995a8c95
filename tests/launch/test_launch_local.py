"""Local launcher end to end: `nlbench run-all --profile smoke` on two rows, then re-runs that skip work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from report_helpers import work_dir_of

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


def ev_hash(results: Path, recipe: str) -> str:
    path = next((results / "records" / recipe / "smoke" / "seed0").glob("eval-*.json"))
    return json.loads(path.read_text())["provenance"]["recipe_hash"]


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
        # The figure is the mean IoU over the classes that occur (per_class null: absent), and the eval
        # stage on the saved checkpoint scores what training's own evaluation at iteration 8 scored.
        ious = [c["IoU"] for c in ev["metrics"]["per_class"].values() if c["IoU"] is not None]
        assert ious and ev["metrics"]["mIoU"] == pytest.approx(sum(ious) / len(ious), abs=1e-9)
        train_log = work_dir_of(results, "smoke", name) / "train.log.jsonl"
        (at_end,) = [e for e in map(json.loads, train_log.read_text().splitlines())
                     if e.get("event") == "eval" and e.get("iteration") == 8]
        assert ev["metrics"]["mIoU"] == pytest.approx(at_end["mIoU"], abs=1e-6)
        assert ev["provenance"]["checkpoint_sha256"]
    assert (tmp_path / "data" / "synthetic").is_dir()
    # run-all ends with each row's figures against the smoke baseline and the verdicts (compare's)
    verdicts = out[out.index("verdicts (nlbench compare"):]
    assert "against smoke baseline results/reference/smoke.csv" in verdicts
    for name in names:
        assert re.search(rf"\| {re.escape(name)} +\| smoke +\| mIoU +\| \d+\.\d\d +\| \d+\.\d\d +\| 1 ", verdicts)
    assert "Mem (GB) (2 rows), Inf time (fps) (2 rows): no reference value" in verdicts
    # every work dir holds the resolved recipe it ran, named by its hash (the records' recipe_hash)
    for name in names:
        work = work_dir_of(results, "smoke", name)
        text = (work / "recipe.yaml").read_text()
        saved = yaml.safe_load(text)
        assert saved["name"] == name and saved["profile"] == "smoke" and saved["runtime"]["seed"] == 0
        assert saved["schedule"]["max_iters"] == 8 and saved["bench"]["total_images"] == 2  # the --set values
        assert f"recipe hash {ev_hash(results, name)}" in text.splitlines()[0]

    # Everything is done: nothing runs again.
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "nothing to run" in out
    assert all(name in out[out.index("verdicts (nlbench compare"):] for name in names)  # the rows' verdicts still

    # One stage's record lost: only that stage runs again; training is not repeated.
    name = names[0]
    for p in (results / "records" / name / "smoke" / "seed0").glob("bench-*.json"):
        p.unlink()
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "skipping 1 row(s)" in out and "1 row(s): 1 done" in out
    assert _kinds(results, name) == ["bench", "eval", "eval_ms_flip", "train"]
    log = (work_dir_of(results, "smoke", name) / "job.log").read_text().splitlines()
    assert "stages to run: bench" in [line for line in log if "stages to run" in line][-1]


def test_multi_rank_job_runs_under_torchrun(tmp_path, monkeypatch):
    """The local multi-GPU path (one process per device via torch.distributed.run), exercised with two
    gloo ranks on the CPU: the job travels as JSON, every rank runs it, rank 0 alone writes."""
    from benchmark.launch.local import run_local
    from benchmark.launch.plan import Resources, make_plan

    monkeypatch.chdir(tmp_path)
    small = [s for s in TINY if not s.startswith("schedule.")] + [
        "schedule.max_iters=2", "schedule.checkpoint_interval=2", "schedule.eval_interval=2"]
    plan = make_plan(tmp_path / "results", lambda recipe: Resources(1, 2, 0),
                     pattern="nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", profile="smoke", overrides=small)
    (job,) = plan.jobs
    assert run_local(plan.jobs, tmp_path / "results") == {job.key: "done"}
    assert (tmp_path / "results" / "jobs" / "local" / f"{job.key.replace('/', '__')}.json").is_file()
    assert "world size 2" in (work_dir_of(tmp_path / "results", "smoke", job.name) / "job.log").read_text()
    records = list((tmp_path / "results" / "records" / job.name / "smoke" / "seed0").glob("*.json"))
    assert sorted(p.name.split("-")[0] for p in records) == ["bench", "eval", "eval_ms_flip", "train"]
    train = json.loads(next(p for p in records if p.name.startswith("train-")).read_text())
    assert train["provenance"]["world_size"] == 2


def _miou(results: Path, recipe: str, kind: str = "eval") -> float:
    folder = results / "records" / recipe / "smoke" / "seed0"
    return json.loads(next(folder.glob(f"{kind}-*.json")).read_text())["metrics"]["mIoU"]


def test_parallel_jobs_each_in_its_own_process_give_the_sequential_numbers(tmp_path, monkeypatch, capsys):
    # The smoke profile pins runtime.cpu_threads to 1: two jobs side by side compute exactly what
    # one after the other computes, and each job reports that thread count.
    monkeypatch.chdir(tmp_path)
    side, alone = tmp_path / "side", tmp_path / "alone"
    common = ["run-all", "--profile", "smoke", "--filter", TWO_ROWS, *_sets(TINY)]
    assert cli([*common, "--results", str(side), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 at a time (each in its own process" in out and "2 row(s): 2 done" in out
    consoles = sorted((side / "jobs" / "local").glob("*.out"))
    assert len(consoles) == 2 and all("all stages done" in p.read_text() for p in consoles)
    assert cli([*common, "--results", str(alone)]) == 0
    for row in [r["recipe"] for r in collect_status(side)]:
        assert _miou(side, row) == _miou(alone, row) and _miou(side, row, "eval_ms_flip") == _miou(alone, row,
                                                                                                    "eval_ms_flip")
        bench = json.loads(next((side / "records" / row / "smoke" / "seed0").glob("bench-*.json")).read_text())
        assert bench["provenance"]["cpu_threads"] == 1


@pytest.mark.parametrize("extra, says", [
    (["--parallel", "0"], "expected a number of jobs >= 1, got 0"),
    (["--parallel", "2", "--launcher", "slurm", "--cluster", "slurm/example.yaml"], "for the local launcher"),
])
def test_parallel_options_that_cannot_work_are_one_clear_error(tmp_path, capsys, extra, says):
    code = cli(["run-all", "--profile", "smoke", "--filter", TWO_ROWS, "--results", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "--parallel" in err and "Traceback" not in err


def test_a_campaign_whose_every_job_failed_ends_with_its_state_table_and_exit_1(tmp_path, capsys, monkeypatch):
    # No record at all: run-all's closing verdicts say there are none instead of failing the command.
    # The pre-flight would stop a missing data root before any job (tests/launch/test_preflight.py); passed
    # over here, it makes a job that fails as one meeting data gone bad after the checks would.
    import benchmark.launch.preflight as preflight

    monkeypatch.setattr(preflight, "check_jobs", lambda *args, **kwargs: [])
    missing = tmp_path / "no-such-dataset"
    results = tmp_path / "results"
    code = cli(["run-all", "--profile", "smoke", "--filter", "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512",
                "--results", str(results), *_sets(TINY + ["data.synthetic=null", f"data.data_root={missing}"])])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed (train)" in out and "1 row(s): 1 failed" in out
    assert "verdicts: none (" in out and "no result records" in out
