"""A campaign as an adversarial user runs it (issue 23): a killed `run-all --parallel` launcher, a
changed `--set`, a recipe edited while its row is queued, a moved results folder. Real run-alls
through the CLI's process, the forkserver launcher, real locks; the assertions count records, read
logs and status lines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_command, cli_env, run_cli
from conftest import VOC_ROW as ROW

from benchmark.engine.attempts import read_attempts
from benchmark.io.jobenv import process_alive
from benchmark.run.lock import Holder, lock_path
from benchmark.run.records import KINDS

TINY = ["schedule.checkpoint_interval=2", "schedule.eval_interval=1000", "schedule.log_interval=1",
        "data.synthetic.train=2", "data.synthetic.val=1", "data.crop_size=[32,32]", "data.imgs_per_gpu=1",
        "test.ms_flip_ratios=[1.0]", "bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1"]


def _run_all(results: Path, iters: int, *extra: str):
    """The arguments of `nlbench run-all` of the row in the smoke profile, ``iters`` iterations."""
    sets = [*TINY, f"schedule.max_iters={iters}"]
    return ("run-all", "--profile", "smoke", "--filter", ROW, "--results", results,
            *[a for s in sets for a in ("--set", s)], *extra)


def _records(results: Path, seed: int = 0):
    folder = results / "records" / ROW / "smoke" / f"seed{seed}"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _train_iterations(work: Path):
    lines = [json.loads(line) for line in (work / "train.log.jsonl").read_text().splitlines() if line.strip()]
    return [line["iteration"] for line in lines if "event" not in line and "iteration" in line]


def _status(results: Path):
    proc = run_cli("status", "--results", results, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _wait_gone(holder: Holder, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while process_alive(holder.pid, holder.proc_start):
        assert time.monotonic() < deadline, f"pid {holder.pid} still runs"
        time.sleep(0.1)


ITERS = 2000  # the killed-launcher test's schedule


@pytest.mark.slow
def test_a_killed_parallel_launcher_leaves_its_jobs_held_and_a_rerun_waits_for_them(tmp_path):
    results = tmp_path / "results"
    # Long enough (tens of seconds) that the jobs still train when the second run-all has started and
    # planned: 120 iterations took 2.4 s, and the second run-all's start (pre-flight included) lost the race.
    args = _run_all(results, ITERS, "--parallel", "2", "--seeds", "2", "--set", "schedule.checkpoint_interval=500")
    first = subprocess.Popen(cli_command(*args), cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    works = lambda: sorted((results / "work" / "smoke" / ROW).glob("seed*-*"))  # noqa: E731
    deadline = time.monotonic() + 300
    while not (len(works()) == 2 and all(len(_train_iterations(w)) >= 3 for w in works()
                                         if (w / "train.log.jsonl").is_file())
               and all((w / "train.log.jsonl").is_file() for w in works())):
        assert first.poll() is None and time.monotonic() < deadline, "no training to interrupt"
        time.sleep(0.2)
    # Mid-training: the job processes named themselves in their locks; the launcher dies at once.
    holders = [Holder.parse(lock_path(results, f"smoke/{ROW}/seed{k}").read_text()) for k in (0, 1)]
    assert all(h.pid != first.pid and "run-all --parallel" in h.what for h in holders)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert all(process_alive(h.pid, h.proc_start) for h in holders)  # the jobs train on

    second = run_cli(*args, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    for k, holder in enumerate(holders):
        assert (f"smoke/{ROW}/seed{k}: held by nlbench job (run-all --parallel, launcher pid {first.pid}), "
                f"pid {holder.pid}") in second.stdout, second.stdout
        assert f"smoke/{ROW}/seed{k}: done by the other run; nothing left to run here" in second.stdout
        _wait_gone(holder)  # nothing left running
        assert sorted(r["kind"] for r in _records(results, k)) == sorted(KINDS)  # one record of each kind
        [work] = [w for w in works() if w.name.startswith(f"seed{k}-")]
        assert _train_iterations(work) == list(range(1, ITERS + 1))  # every iteration once
        assert [a.get("outcome") for a in read_attempts(work)] == ["done"]  # one attempt, never "lost"
    assert "2 row(s): 2 done" in _status(results)


@pytest.mark.slow
def test_a_changed_set_runs_again_beside_the_old_results_and_the_folder_can_move(tmp_path):
    results = tmp_path / "results"
    assert run_cli(*_run_all(results, 2), cwd=tmp_path).returncode == 0
    [old] = (results / "work" / "smoke" / ROW).glob("seed0-*")
    proc = run_cli(*_run_all(results, 4), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dirs = sorted((results / "work" / "smoke" / ROW).glob("seed0-*"))
    [new] = [d for d in dirs if d != old]
    assert _train_iterations(old) == [1, 2] and _train_iterations(new) == [1, 2, 3, 4]
    hashes = {r["provenance"]["recipe_hash"][:12] for r in _records(results)}
    assert len(_records(results)) == 2 * len(KINDS) and {old.name[6:], new.name[6:]} == hashes
    status = _status(results)
    assert "4/4" in status and "1 row(s): 1 done" in status and f"seed0-{new.name[6:]}/job.log" in status
    collect = run_cli("collect", "--results", results, timeout=120)
    assert collect.returncode == 0
    assert f"record(s) of another resolved recipe (hash {old.name[6:]}" in collect.stderr

    # Moved: status reads the moved folder's own state and logs; run-all there has nothing left to do.
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(results), moved)
    status = _status(moved)
    assert "1 row(s): 1 done" in status and f"log (in {moved})" in status and str(results) not in status
    again = run_cli(*_run_all(moved, 4), cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and "nothing to run: every planned row is complete" in again.stdout


@pytest.mark.slow
def test_a_recipe_edited_while_its_row_is_queued_runs_as_planned(tmp_path):
    recipes = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", recipes)
    env = cli_env(NLBENCH_RECIPES=str(recipes))
    results = tmp_path / "results"
    cmd = cli_command(*_run_all(results, 4, "--parallel", "2", "--seeds", "3"))
    run = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = results / "jobs" / "runs"
    deadline = time.monotonic() + 120
    while not any(runs.glob("*.json")):
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    path = recipes / f"{ROW}.yaml"  # seed 2 waits for a slot: its recipe changes meanwhile
    path.write_text(path.read_text().replace("ms_flip_published: true", "ms_flip_published: false"))
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    [plan] = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    planned = {e["seed"]: e["recipe_hash"] for e in plan["jobs"]}
    for seed in (0, 1, 2):
        records = _records(results, seed)
        assert sorted(r["kind"] for r in records) == sorted(KINDS)  # ms+flip too: the planned recipe
        assert {r["provenance"]["recipe_hash"] for r in records} == {planned[seed]}


def test_report_into_a_results_folder_whose_name_is_not_utf8(tmp_path):
    from report_helpers import write_row

    results = os.fsdecode(bytes(tmp_path) + b"/res\xff")  # as Python reads such a name: a surrogate
    write_row(results)
    # A strict console encoding (as on a C-locale terminal): a path with a surrogate must still print.
    env = {**cli_env(), "PYTHONIOENCODING": "utf-8:strict"}
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"benchmark", b"report", b"--results",
                           os.fsencode(results)], capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    assert b"res\\udcff" in proc.stdout + proc.stderr  # the path said, escaped
    page = (Path(results) / "report" / "index.html").read_bytes()
    assert b"res\\udcff" in page  # the name shown escaped, the page still UTF-8
    page.decode("utf-8")


@pytest.mark.slow
def test_an_old_format_work_dir_of_an_interrupted_run_is_renamed_and_resumed(tmp_path):
    """A work dir named as before work dirs carried the recipe hash (``seed0/``), of a run interrupted
    before any record: a run-all of another recipe leaves it as it is and says so; one of its own
    recipe renames it to ``seed0-<hash12>`` and resumes from its latest.pth, instead of starting over."""
    results = tmp_path / "R"
    first = run_cli(*_run_all(results, 4), timeout=600)
    assert first.returncode == 0, first.stderr
    (work,) = (results / "work" / "smoke" / ROW).glob("seed0-*")
    old = work.with_name("seed0")
    work.rename(old)  # as a run of an earlier nlbench left it
    shutil.rmtree(results / "records")  # interrupted before any stage was recorded
    other = run_cli(*_run_all(results, 6, "--dry-run"), timeout=300)
    assert other.returncode == 0, other.stderr
    assert f"left {old} as it is" in other.stdout and old.is_dir()
    again = run_cli(*_run_all(results, 4), timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"renamed {old} to {work.name}" in again.stdout
    assert not old.exists() and work.is_dir() and not list(work.parent.glob("seed0-*[!" + work.name[-1] + "]"))
    starts = [line.split(" train: ")[1] for line in (work / "job.log").read_text().splitlines()
              if " train: from scratch" in line or " train: resuming from" in line]
    assert len(starts) == 2 and starts[0] == "from scratch" and starts[1].startswith("resuming from"), starts
    assert len(_records(results)) == len(KINDS)
    older = work.with_name("seed0-0123456789ab")  # named by a hash of an older rule, the same recipe
    work.rename(older)
    shutil.rmtree(results / "records")  # interrupted again
    plan = run_cli(*_run_all(results, 4, "--dry-run"), timeout=300)
    assert f"run-all renames {older} to {work.name}" in plan.stdout, plan.stdout
