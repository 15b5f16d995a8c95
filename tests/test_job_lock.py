"""Two run-alls into one results folder, and the per-job lock under them (benchmark/run/lock.py):
real processes, real flock, real dead pids."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from report_helpers import work_dir_of

from benchmark.run.lock import Holder, JobHeld, JobLock, lock_path
from benchmark.run.records import KINDS

REPO = Path(__file__).resolve().parent.parent
ROW = "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512"
KEY = f"smoke/{ROW}/seed0"
# 40 iterations: the first run-all still trains when the second (a few seconds of start-up) plans.
TINY = ["schedule.max_iters=40", "schedule.checkpoint_interval=40", "schedule.eval_interval=40",
        "data.synthetic.train=2",
        "data.synthetic.val=1", "data.crop_size=[32,32]", "data.imgs_per_gpu=1", "test.ms_flip_ratios=[1.0]",
        "bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _wait_for(what, timeout_s: float, proc=None):
    deadline = time.monotonic() + timeout_s
    while not what():
        assert proc is None or proc.poll() is None, "the process ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


_HOLDER = textwrap.dedent("""
    import sys, time
    from benchmark.run.lock import JobLock
    lock = JobLock(sys.argv[1], what="test holder").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def _holder_process(path: Path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


# ----------------------------------------------------------------------------- two run-alls


@pytest.mark.slow
def test_two_run_alls_into_one_folder_never_run_a_stage_twice(tmp_path):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmark", "run-all", "--profile", "smoke", "--filter", ROW, "--results",
           str(results), *[a for s in TINY for a in ("--set", s)]]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = lock_path(results, KEY)
    # The second starts once the first holds the job (its pid in the lock file), mid-way through it.
    _wait_for(lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text(), 300, first)
    second = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    out_first, _ = first.communicate(timeout=600)
    out_second, _ = second.communicate(timeout=600)
    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second

    # Each (row, seed, stage) ran once: one record per stage, one job start in the job's log.
    records = sorted(p.name.split("-")[0] for p in (results / "records" / ROW / "smoke" / "seed0").glob("*.json"))
    assert records == sorted(KINDS)
    log = (work_dir_of(results, "smoke", ROW) / "job.log").read_text()
    assert log.count("stages to run: train, eval, eval_ms_flip, bench") == 1
    assert "stages to run: none" not in log
    # The second said whom it waited for, and that nothing was left for it to do.
    assert f"held by nlbench run-all (local), pid {first.pid} on {socket.gethostname()}" in out_second
    assert f"{KEY}: waiting for the run that holds it" in out_second
    assert f"{KEY}: done by the other run; nothing left to run here" in out_second
    assert lock.read_text() == ""  # released


# ----------------------------------------------------------------------------- the lock itself


def test_a_held_lock_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path):
    path = lock_path(tmp_path / "results", KEY)
    holder = _holder_process(path)
    try:
        with pytest.raises(JobHeld) as info:
            JobLock(path).acquire()
        held = info.value.holder
        assert (held.pid, held.host, held.what) == (holder.pid, socket.gethostname(), "test holder")
        assert held.alive() is True
        assert str(info.value).startswith(f"held by test holder, pid {holder.pid} on {socket.gethostname()} since ")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Killed without releasing: the file still names it, the kernel dropped its flock.
    assert Holder.parse(path.read_text()).pid == holder.pid
    lock = JobLock(path, what="second").acquire()
    try:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        assert lock.took_over.alive() is False
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert path.read_text() == ""


def test_a_lock_is_reentrant_in_its_process_and_for_the_children_it_names(tmp_path):
    from benchmark.run.lock import held_for_children

    path = lock_path(tmp_path, KEY)
    outer = JobLock(path).acquire()
    try:
        inner = JobLock(path).acquire()  # run_job inside the local launcher, same process
        assert inner.borrowed
        inner.release()
        assert json.loads(path.read_text())["pid"] == os.getpid()  # still held by the outer lock
        child = [sys.executable, "-c", "import sys; from benchmark.run.lock import JobLock; "
                 "print(JobLock(sys.argv[1]).acquire().borrowed)", str(path)]
        with held_for_children(outer):
            assert subprocess.run(child, capture_output=True, text=True, env=_env()).stdout.strip() == "True"
        proc = subprocess.run(child, capture_output=True, text=True, env=_env())
        assert "JobHeld" in proc.stderr  # a child not told holds nothing
    finally:
        outer.release()


def test_without_flock_a_lock_file_of_a_dead_pid_on_this_host_is_stale(tmp_path):
    """The fallback for file systems without flock: an exclusively created ``.held`` file."""
    path = lock_path(tmp_path, KEY)
    path.parent.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Holder(socket.gethostname(), gone.pid, "2026-01-01T00:00:00+00:00", None, "crashed run")
    lock = JobLock(path)
    lock.held_file.write_text(dead.to_json())
    lock._try_exclusive_file()
    assert lock.took_over == dead
    assert Holder.parse(lock.held_file.read_text()).pid == os.getpid()
    with pytest.raises(JobHeld, match=f"pid {os.getpid()}"):
        JobLock(path)._try_exclusive_file()  # a live holder on this host
    lock.release()
    assert not lock.held_file.exists()

    # On another host nothing can be checked from here: held, and the message says how to clear it.
    lock.held_file.write_text(Holder("elsewhere", 1, "2026-01-01T00:00:00+00:00", None, "").to_json())
    with pytest.raises(JobHeld, match=f"another host: remove {lock.held_file}"):
        JobLock(path)._try_exclusive_file()


def test_without_flock_a_slow_taker_never_removes_the_lock_a_faster_one_took(tmp_path):
    """Two takers found the same stale holder; the faster one replaced its file before the slower
    one moved it aside: the slower one puts it back and keeps trying (it then finds it held)."""
    path = lock_path(tmp_path, KEY)
    path.parent.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Holder(socket.gethostname(), gone.pid, "2026-01-01T00:00:00+00:00", None, "crashed run")
    faster = Holder(socket.gethostname(), os.getppid(), "2026-01-01T00:00:01+00:00", None, "faster taker")
    slow = JobLock(path)
    slow.held_file.write_text(faster.to_json())  # what the slow taker finds when it acts on `dead`
    assert slow._remove_stale(dead) is False
    assert Holder.parse(slow.held_file.read_text()) == faster
    assert sorted(p.name for p in path.parent.iterdir()) == [slow.held_file.name]
    with pytest.raises(JobHeld, match="faster taker"):
        slow._try_exclusive_file()
    slow.held_file.write_text(dead.to_json())
    assert slow._remove_stale(dead) is True and not slow.held_file.exists()
