"""The SLURM launcher against a real SLURM cluster (slurm/test-cluster.sh) through real submitit.

Skipped unless a cluster answers: start one with `slurm/test-cluster.sh start` (what .ci/run does);
SLURM_CONF, or the env file in $NLBENCH_SLURM_DIR (default /tmp/nlbench-slurm), points at it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from report_helpers import work_dir_of
from slurm_cluster import cluster_fixture

from benchmark.cli import main as cli
from benchmark.launch.status import collect_status

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "slurm" / "test-cluster.yaml"
# Smoke rows shrunk further: a few images, 80 iterations with a checkpoint every 5 (a smoke iteration
# takes under 0.1 s: room to interrupt training part-way), two ms+flip scales, a two-image benchmark.
MAX_ITERS = 80
TINY = [f"schedule.max_iters={MAX_ITERS}", "schedule.checkpoint_interval=5", f"schedule.eval_interval={MAX_ITERS}",
        "schedule.log_interval=5", "data.synthetic.train=4", "data.synthetic.val=2",
        "test.ms_flip_ratios=[0.75,1.25]", "bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1"]
THREE_ROWS = "nonlocal_r50-d8_4xb4-[248]0k_*"  # VOC 20k, VOC 40k, ADE20K 80k
INTERRUPTED = "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512"
cluster = cluster_fixture()


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _rows(results: Path):
    return {r["recipe"]: r for r in collect_status(results)}


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.3):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _eval_record(results: Path, recipe: str, kind: str = "eval"):
    folder = results / "records" / recipe / "smoke" / "seed0"
    (path,) = folder.glob(f"{kind}-*.json")
    return json.loads(path.read_text())


def test_array_with_preemption_requeues_and_resumes_to_the_same_result(cluster, capsys):
    results = cluster / "results"
    args = ["run-all", "--launcher", "slurm", "--cluster", str(PROFILE), "--profile", "smoke",
            "--filter", THREE_ROWS, "--results", str(results), "--no-wait", *_sets(TINY)]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "submitted 3 job(s)" in out
    (run_file,) = (results / "jobs" / "runs").glob("*.json")
    entries = json.loads(run_file.read_text())["jobs"]
    ids = {e["slurm_job_id"] for e in entries}
    assert len({i.split("_")[0] for i in ids}) == 1 and len(ids) == 3  # one array, three tasks
    target = next(e for e in entries if e["recipe"] == INTERRUPTED)

    # Interrupt the first row half-way through training, as SLURM preempts: SIGTERM, then USR2.
    work = results / target["work_dir"]  # relative to the results folder
    _wait(lambda: (work / "iter_5.pth").exists(), 150, "the first checkpoint")
    assert _rows(results)[INTERRUPTED]["state"] == "running"
    assert cli(["status", "--results", str(results)]) == 0
    during = capsys.readouterr().out
    for sig in ("SIGTERM", "USR2"):
        subprocess.run(["scancel", target["slurm_job_id"], "--signal", sig], check=True)
    _wait(lambda: _rows(results)[INTERRUPTED]["state"] == "requeued", 60, "status to say requeued")
    assert cli(["status", "--results", str(results)]) == 0
    requeued = capsys.readouterr().out
    print("status during the run:\n" + during + "\nafter the interruption:\n" + requeued)

    rows = _wait(lambda: (lambda r: r if all(x["state"] in ("done", "failed") for x in r.values()) else None)(
        _rows(results)), 240, "every row to finish", poll_s=2)
    assert {name: r["state"] for name, r in rows.items()} == {e["recipe"]: "done" for e in entries}
    assert rows[INTERRUPTED]["requeues"] >= 1
    assert cli(["status", "--results", str(results)]) == 0
    after = capsys.readouterr().out
    print("status after:\n" + after)
    assert "3 row(s): 3 done" in after

    # Every stage's record is present for every row.
    for e in entries:
        folder = results / "records" / e["recipe"] / "smoke" / "seed0"
        assert {p.name.split("-")[0] for p in folder.glob("*.json")} == set(e["stages"])
    log = (work / "job.log").read_text()
    assert "attempt 2" in log and "resuming from latest.pth" in log
    train = _eval_record(results, INTERRUPTED, "train")
    # USR2 during training: the state was saved where training stood (at or after the first
    # periodic checkpoint), not only at a periodic one, and the requeued attempt resumed there.
    assert 5 <= train["start_iteration"] < MAX_ITERS
    assert f"stop requested: checkpoint saved at iteration {train['start_iteration']}" in log
    assert train["provenance"]["slurm_array_job_id"] == target["slurm_job_id"].split("_")[0]

    # The same row without interruption, locally: the resumed run reaches the same result.
    reference = cluster / "reference"
    assert cli(["run-all", "--profile", "smoke", "--filter", INTERRUPTED, "--results", str(reference),
                *_sets(TINY)]) == 0
    for kind in ("eval", "eval_ms_flip"):
        assert (_eval_record(results, INTERRUPTED, kind)["metrics"]
                == _eval_record(reference, INTERRUPTED, kind)["metrics"])


def test_failing_job_is_reported_failed(cluster, capsys, monkeypatch):
    # The pre-flight would stop a missing data root before submitting (tests/launch/test_preflight.py); passed
    # over here, it makes a job that fails on the node as one meeting data gone bad after the checks would.
    import benchmark.launch.preflight as preflight

    monkeypatch.setattr(preflight, "check_jobs", lambda *args, **kwargs: [])
    results = cluster / "results-fail"
    missing = cluster / "no-such-dataset"
    code = cli(["run-all", "--launcher", "slurm", "--cluster", str(PROFILE), "--profile", "smoke",
                "--filter", "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", "--results", str(results),
                *_sets(TINY + ["data.synthetic=null", f"data.data_root={missing}"])])
    assert code == 1  # waited for the array; the row failed
    out = capsys.readouterr().out
    (row,) = _rows(results).values()
    assert row["state"] == "failed"
    assert str(missing) in (row["message"] or "")
    assert "failed" in out and str(missing) in out
    assert cli(["status", "--results", str(results)]) == 0
    assert "1 row(s): 1 failed" in capsys.readouterr().out


def test_gpu_request_on_cpu_cluster_surfaces_sbatch_error(cluster, capsys):
    profile = cluster / "gpu.yaml"
    profile.write_text(PROFILE.read_text().replace("gpus_per_node: 0", "gpus_per_node: 1"))
    results = cluster / "results-gpu"
    code = cli(["run-all", "--launcher", "slurm", "--cluster", str(profile), "--profile", "smoke",
                "--filter", "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", "--results", str(results), *_sets(TINY)])
    err = capsys.readouterr().err
    assert code == 2
    assert "sbatch refused" in err and "gres" in err.lower() and str(profile) in err
    assert "Traceback" not in err
    assert not list((results / "jobs" / "runs").glob("*.json"))  # nothing recorded as submitted


def test_two_ranks_per_job_train_with_torch_distributed(cluster, capsys):
    """cpu_tasks: 2 -> two SLURM tasks = two gloo ranks from submitit's environment; rank 0 writes."""
    profile = cluster / "two-ranks.yaml"
    profile.write_text(PROFILE.read_text().replace("cpu_tasks: 1", "cpu_tasks: 2"))
    results = cluster / "results-2ranks"
    small = [s for s in TINY if not s.startswith("schedule.")] + [
        "schedule.max_iters=4", "schedule.checkpoint_interval=4", "schedule.eval_interval=4", "schedule.log_interval=2"]
    code = cli(["run-all", "--launcher", "slurm", "--cluster", str(profile), "--profile", "smoke",
                "--filter", "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", "--results", str(results), *_sets(small)])
    out = capsys.readouterr().out
    assert code == 0, out
    (row,) = _rows(results).values()
    assert row["state"] == "done"
    work = work_dir_of(results, "smoke", "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512")
    assert "world size 2" in (work / "job.log").read_text()
    train = _eval_record(results, "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", "train")
    assert train["provenance"]["world_size"] == 2
    folder = results / "records" / "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512" / "smoke" / "seed0"
    assert len(list(folder.glob("*.json"))) == 4  # one record per stage: rank 1 wrote none


def test_a_second_run_all_submits_nothing_queued_and_scancel_saves_and_says_cancelled(cluster, capsys):
    """Two run-alls a few seconds apart over three rows: the second asks SLURM and submits none of
    the tasks the first has pending or running; scancel (SIGTERM alone) of a training task saves at
    the next iteration boundary and status says cancelled, not failed, and never done."""
    results = cluster / "results-twice"
    args = ["run-all", "--launcher", "slurm", "--cluster", str(PROFILE), "--profile", "smoke",
            "--filter", THREE_ROWS, "--results", str(results), "--no-wait", *_sets(TINY)]
    assert cli(args) == 0
    assert "submitted 3 job(s)" in capsys.readouterr().out
    time.sleep(3)
    assert cli(args) == 0
    second = capsys.readouterr().out
    assert second.count("of an earlier run-all is ") == 3 and "not submitted again" in second
    assert "nothing to submit" in second and "submitted" not in second.replace("not submitted", "")
    (run_file,) = (results / "jobs" / "runs").glob("*.json")  # one run file: nothing was resubmitted
    entries = json.loads(run_file.read_text())["jobs"]
    target = next(e for e in entries if e["recipe"] == INTERRUPTED)
    work = results / target["work_dir"]
    _wait(lambda: (work / "iter_5.pth").exists(), 150, "the first checkpoint")
    assert cli(["status", "--results", str(results)]) == 0
    during = capsys.readouterr().out
    assert f"| {target['slurm_job_id']} " in during and "running" in during

    subprocess.run(["scancel", target["slurm_job_id"]], check=True)  # SIGTERM, then SIGKILL after KillWait
    row = _wait(lambda: (lambda r: r if r["state"] == "cancelled" else None)(_rows(results)[INTERRUPTED]), 90,
                "status to say cancelled")
    log = (work / "job.log").read_text()
    assert "stopped by SIGTERM (scancel, or a requeue by hand) in stage train: saved latest.pth at iter " in log
    saved = int(log.split("saved latest.pth at iter ")[-1].split()[0])
    assert 5 <= saved < MAX_ITERS and (work / "latest.pth").is_file()
    assert "stopped by SIGTERM" in row["message"]
    rows = _wait(lambda: (lambda r: r if all(x["state"] in ("done", "failed", "cancelled") for x in r.values())
                          else None)(_rows(results)), 240, "every row to finish", poll_s=2)
    assert {name: r["state"] for name, r in rows.items()} == {
        e["recipe"]: ("cancelled" if e["recipe"] == INTERRUPTED else "done") for e in entries}
    assert cli(["status", "--results", str(results)]) == 0
    after = capsys.readouterr().out
    print("status during the run:\n" + during + "\nafter:\n" + after)
    assert "3 row(s): 2 done, 1 cancelled" in after
    for e in entries:  # one record per stage of the finished rows; none of training for the cancelled one
        kinds = sorted(p.name.split("-")[0] for p in (results / "records" / e["recipe"] / "smoke" / "seed0").glob("*"))
        assert kinds == ([] if e["recipe"] == INTERRUPTED else sorted(e["stages"]))


def _failing_bin(folder: Path, name: str, after: int = 0) -> str:
    """PATH with a real ``name`` executable first: it runs the cluster's own ``name`` ``after`` times, then
    fails as a SLURM command does when the controller or database does not answer."""
    folder.mkdir(parents=True, exist_ok=True)
    real = shutil.which(name)
    script = folder / name
    script.write_text(f"#!/bin/sh\ncount=$(cat {folder}/calls 2>/dev/null || echo 0)\n"
                      f"echo $((count + 1)) > {folder}/calls\n"
                      f"if [ \"$count\" -lt {after} ]; then exec {real} \"$@\"; fi\n"
                      f"echo '{name}: error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n")
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_run_all_stops_when_slurm_cannot_say_what_is_still_queued(cluster, capsys, monkeypatch):
    """After a real submission, a second run-all whose squeue (then sacct) fails says so in one line,
    exit 2, and submits nothing: a silent queue is not an empty one."""
    results = cluster / "results-blind"
    args = ["run-all", "--launcher", "slurm", "--cluster", str(PROFILE), "--profile", "smoke",
            "--filter", INTERRUPTED, "--results", str(results), "--no-wait", *_sets(TINY)]
    assert cli(args) == 0
    capsys.readouterr()
    runs = results / "jobs" / "runs"
    (run_file,) = runs.glob("*.json")
    (task,) = [e["slurm_job_id"] for e in json.loads(run_file.read_text())["jobs"]]
    path = os.environ["PATH"]
    try:
        for broken in ("squeue", "sacct"):
            monkeypatch.setenv("PATH", _failing_bin(cluster / f"failing-{broken}", broken))
            assert cli(args) == 2
            captured = capsys.readouterr()
            assert f"`{broken} " in captured.err and "nothing submitted" in captured.err, captured
            assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
            assert "submitted 1 job" not in captured.out
            assert list(runs.glob("*.json")) == [run_file]  # no second submission
    finally:
        monkeypatch.setenv("PATH", path)
        subprocess.run(["scancel", task], check=False)


def test_arrays_submitted_before_a_refused_one_are_in_the_run_file(cluster, capsys, monkeypatch):
    """Two arrays (one per row here: the CPU test cluster offers one resource shape, so the rows are
    split as two shapes would be); sbatch takes the first and fails the second. The first array's task
    is in a run file, so status and the next run-all know it."""
    from benchmark.launch import slurm

    monkeypatch.setattr(slurm, "_group_by_shape", lambda jobs: [[job] for job in jobs])
    monkeypatch.setenv("PATH", _failing_bin(cluster / "failing-sbatch", "sbatch", after=1))
    results = cluster / "results-half"
    code = cli(["run-all", "--launcher", "slurm", "--cluster", str(PROFILE), "--profile", "smoke",
                "--filter", "nonlocal_r50-d8_4xb4-[24]0k_voc12aug-512x512", "--results", str(results), "--no-wait",
                *_sets(TINY)])
    err = capsys.readouterr().err
    assert code == 2 and "sbatch refused" in err and "1 job(s) of an earlier array were submitted" in err
    runs = list((results / "jobs" / "runs").glob("*.json"))
    try:
        assert len(runs) == 1
        (entry,) = json.loads(runs[0].read_text())["jobs"]
        assert entry["slurm_job_id"] and entry["key"] in {r["key"] for r in collect_status(results)}
    finally:
        for run in runs:
            for e in json.loads(run.read_text())["jobs"]:
                subprocess.run(["scancel", e["slurm_job_id"]], check=False)


def test_a_task_that_starts_after_its_results_folder_moved_writes_nothing_under_the_old_path(cluster, capsys):
    """A held task; the results folder moves; the task is released. Its pickled job names the old
    folder: it says so in its SLURM log and writes nothing, instead of rebuilding RESULTS/work and
    RESULTS/jobs/runs at the old path. (submitit's own folder, RESULTS/jobs/slurm, is linked back so
    that the task starts at all: without it SLURM cannot open the task's log.)"""
    profile = cluster / "held.yaml"
    profile.write_text(PROFILE.read_text() + "additional_parameters: {hold: true}\n")
    results, moved = cluster / "results-moving", cluster / "results-moved"
    assert cli(["run-all", "--launcher", "slurm", "--cluster", str(profile), "--profile", "smoke",
                "--filter", INTERRUPTED, "--results", str(results), "--no-wait", *_sets(TINY)]) == 0
    capsys.readouterr()
    (run_file,) = (results / "jobs" / "runs").glob("*.json")
    (task,) = [e["slurm_job_id"] for e in json.loads(run_file.read_text())["jobs"]]
    try:
        results.rename(moved)
        (results / "jobs").mkdir(parents=True)
        (results / "jobs" / "slurm").symlink_to(moved / "jobs" / "slurm")
        subprocess.run(["scontrol", "release", task], check=True)
        _wait(lambda: not subprocess.run(["squeue", "-h", "-j", task], capture_output=True, text=True).stdout.strip(),
              120, "the released task to end")
        logs = "".join(p.read_text() for p in (moved / "jobs" / "slurm").glob(f"{task}/{task}_*_log.*"))
        assert "is gone (the results folder was moved or deleted after submission)" in logs, logs
        assert sorted(os.listdir(results)) == ["jobs"] and sorted(os.listdir(results / "jobs")) == ["slurm"]
        assert not list(moved.glob("work/**/job.log")) and not (moved / "records").exists()
    finally:
        subprocess.run(["scancel", task], check=False)
