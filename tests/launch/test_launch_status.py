"""`nlbench status` from the files jobs leave behind (run file, job_state.json, logs, records)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_launch_plan import _plant

from benchmark.cli import main as cli
from benchmark.launch.plan import Resources, make_plan
from benchmark.launch.run_all import write_run
from benchmark.launch.sacct import _expand_array, parse_sacct
from benchmark.launch.status import collect_status, iteration_reached, row_status
from benchmark.run.state import JOB_LOG, STATE_FILE


def _write_state(work: Path, **body):
    work.mkdir(parents=True, exist_ok=True)
    (work / STATE_FILE).write_text(json.dumps({"hostname": os.uname().nodename, "attempt": 1, **body}))


def test_status_of_every_kind_of_row(tmp_path, capsys):
    plan = make_plan(tmp_path, lambda r: Resources(), pattern="*r50*", profile="smoke")
    jobs = {j.name: j for j in plan.jobs}
    write_run(tmp_path, "local", [j.to_dict() for j in plan.jobs], {})
    names = sorted(jobs)
    done, failed, running, gone, requeued = names[:5]
    # done: every stage has a record
    _plant(tmp_path, done, jobs[done].stages)
    # failed: the job said so, with its message
    _write_state(Path(jobs[failed].work_dir), state="failed", stage="eval", pid=1,
                 error="NLBenchError: data root not found")
    (Path(jobs[failed].work_dir) / JOB_LOG).write_text("x\nFAILED in stage eval: NLBenchError: data root not found\n")
    # running: a live process on this host, 12 iterations in
    _write_state(Path(jobs[running].work_dir), state="running", stage="train", pid=os.getpid())
    with open(Path(jobs[running].work_dir) / "train.log.jsonl", "w") as fh:
        for it in (10, 12):
            fh.write(json.dumps({"event": "train", "iteration": it}) + "\n")
    # "running" but its process is gone: failed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_state(Path(jobs[gone].work_dir), state="running", stage="train", pid=dead.pid)
    # requeued, with a checkpoint at iteration 20
    _write_state(Path(jobs[requeued].work_dir), state="requeued", stage="train", pid=1, attempt=1)
    (Path(jobs[requeued].work_dir) / "iter_20.pth").write_bytes(b"")

    rows = {r["recipe"]: r for r in collect_status(tmp_path)}
    assert len(rows) == len(plan.jobs)
    assert rows[done]["state"] == "done"
    assert rows[failed]["state"] == "failed" and "data root not found" in rows[failed]["message"]
    assert rows[running]["state"] == "running" and rows[running]["iteration"] == 12
    assert rows[gone]["state"] == "failed" and "process gone" in rows[gone]["message"]
    assert rows[requeued]["state"] == "requeued" and rows[requeued]["iteration"] == 20
    others = set(names) - {done, failed, running, gone, requeued}
    assert {rows[n]["state"] for n in others} == {"pending"}

    assert cli(["status", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 done, 1 running, 1 requeued, 3 pending, 2 failed" in out
    assert "failed (eval)" in out and "data root not found" in out


def test_newest_run_wins_and_missing_runs_is_an_error(tmp_path, capsys):
    assert cli(["status", "--results", str(tmp_path)]) == 2
    assert "run `nlbench run-all` first" in capsys.readouterr().err
    plan = make_plan(tmp_path, lambda r: Resources(), pattern="*r50*20k_voc*", profile="smoke")
    entry = plan.jobs[0].to_dict()
    write_run(tmp_path, "slurm", [{**entry, "slurm_job_id": "7_0"}], {})
    write_run(tmp_path, "slurm", [{**entry, "slurm_job_id": "9_3"}], {})
    rows = collect_status(tmp_path)
    assert [r["job_id"] for r in rows] == ["9_3"]


def test_a_corrupt_run_file_is_named_not_silently_dropped(tmp_path, capsys):
    plan = make_plan(tmp_path, lambda r: Resources(), pattern="*r50*20k_voc*", profile="smoke")
    good = write_run(tmp_path, "local", [plan.jobs[0].to_dict()], {})
    broken = good.with_name("zz-broken.json")
    broken.write_text('{"jobs": [{"key": ')  # cut off mid-write by hand or by a crash of another tool
    assert cli(["status", "--results", str(tmp_path)]) == 0  # the readable run is shown ...
    captured = capsys.readouterr()
    assert "1 row(s): 1 pending" in captured.out
    assert captured.err.startswith(f"warning: {broken}: skipped: not valid JSON")  # ... and the broken one named
    good.unlink()
    assert cli(["status", "--results", str(tmp_path)]) == 2  # nothing readable: the broken file is the error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nlbench status: error: {broken}: not valid JSON")


def test_a_live_process_on_this_host_is_running_whatever_sacct_lags_behind(tmp_path):
    plan = make_plan(tmp_path, lambda r: Resources(), pattern="*r50*20k_voc*", profile="smoke")
    entry = {**plan.jobs[0].to_dict(), "slurm_job_id": "56_1", "launcher": "slurm"}
    work = tmp_path / entry["work_dir"]  # relative to the results folder
    _write_state(work, state="running", stage="train", pid=os.getpid())
    late = {"56_1": ("PENDING", 1)}  # what a stale array record made of it before parse_sacct knew better
    assert row_status(tmp_path, entry, late)["state"] == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_state(work, state="running", stage="train", pid=dead.pid)  # gone: SLURM's word counts again
    assert row_status(tmp_path, entry, late)["state"] == "requeued"
    _write_state(work, state="running", stage="train", pid=os.getpid(), hostname="another-node")
    assert row_status(tmp_path, entry, late)["state"] == "requeued"  # cannot be seen from here: not trusted
    # A pid reused by another process (its start time differs), or a final state SLURM reported,
    # is never taken for the job running.
    _write_state(work, state="running", stage="train", pid=os.getpid(), proc_start="1")
    assert row_status(tmp_path, entry, late)["state"] == "requeued"
    _write_state(work, state="running", stage="train", pid=os.getpid())
    row = row_status(tmp_path, entry, {"56_1": ("OUT_OF_MEMORY", 0)})
    assert row["state"] == "failed" and row["message"].startswith("SLURM OUT_OF_MEMORY")


def test_iteration_reached_prefers_the_furthest(tmp_path):
    assert iteration_reached(tmp_path) is None
    (tmp_path / "iter_8.pth").write_bytes(b"")
    (tmp_path / "train.log.jsonl").write_text('{"iteration": 11}\n{"event": "eval", "iteration": 12}\nnot json\n')
    assert iteration_reached(tmp_path) == 12


def test_sacct_array_ids_expand():
    assert _expand_array("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert _expand_array("12_3") == ["12_3"]
    assert _expand_array("13") == ["13"]


def test_sacct_late_array_record_does_not_make_a_running_task_requeued():
    # Seen on the test cluster: slurmdbd still lists task 1 in the array's pending record after
    # task 1 got a RUNNING line of its own, and lists that record after it.
    late = "56_0|RUNNING\n56_1|RUNNING\n56_[1-2%2]|PENDING\n"
    assert parse_sacct(late) == {"56_0": ("RUNNING", 0), "56_1": ("RUNNING", 0), "56_2": ("PENDING", 0)}
    # A real requeue: -D lists the earlier instance of the task, oldest first.
    requeued = "50_0|REQUEUED\n50_1|COMPLETED\n50_2|RUNNING\n50_0|CANCELLED by 0\n50_0|PENDING\n"
    assert parse_sacct(requeued) == {"50_0": ("PENDING", 2), "50_1": ("COMPLETED", 0), "50_2": ("RUNNING", 0)}
    assert parse_sacct("") == {} and parse_sacct("|\n") == {}


def test_shown_path_is_relative_inside_its_folder_and_untouched_outside(tmp_path, monkeypatch):
    # the one helper behind status's log column, compare's reference label and the tables' results label
    from benchmark.io.files import shown_path

    results = tmp_path / "results"
    log = results / "jobs" / "r" / "seed0.log"
    log.parent.mkdir(parents=True)
    assert shown_path(log, results) == "jobs/r/seed0.log"
    assert shown_path(str(results), results) == "."
    outside = tmp_path / "elsewhere" / "x.log"
    assert shown_path(outside, results) == str(outside)
    (tmp_path / "link").symlink_to(results)  # the same folder reached another way
    assert shown_path(tmp_path / "link" / "jobs", results) == "jobs"
    monkeypatch.chdir(results)
    assert shown_path("jobs/r", Path.cwd()) == "jobs/r" and shown_path("../elsewhere", Path.cwd()) == "../elsewhere"
