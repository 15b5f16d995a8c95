"""A run-all against a job another run holds, and the per-job lock under them (benchmark/run/lock.py):
real processes, real flock, real dead pids."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import VOC_ROW as ROW
from conftest import cli_command, cli_env

from benchmark.run.lock import Holder, JobHeld, JobLock, lock_path
from benchmark.run.records import KINDS

HELD_BY = "nlbench run-all (local)"  # what the helper process holding a job says it is
KEY = f"smoke/{ROW}/seed0"
TINY = ["schedule.max_iters=2", "schedule.checkpoint_interval=2", "schedule.eval_interval=2", "data.synthetic.train=2",
        "data.synthetic.val=1", "data.crop_size=[32,32]", "data.imgs_per_gpu=1", "test.ms_flip_ratios=[1.0]",
        "bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1"]


# Takes the lock as the process named by argv[2], says "held", and keeps it until its stdin closes;
# then it releases the lock (as a run that finished its job would) and says "released".
_HOLDER = textwrap.dedent("""
    import sys
    from benchmark.run.lock import JobLock
    lock = JobLock(sys.argv[1], what=sys.argv[2]).acquire()
    print("held", flush=True)
    sys.stdin.read()
    lock.release()
    print("released", flush=True)
""")


def _holder_process(path: Path, what: str = "test holder"):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), what], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=cli_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def _let_go(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "released"
    assert holder.wait(timeout=60) == 0


def _read_until(proc: subprocess.Popen, text: str, timeout_s: float = 300) -> str:
    """The lines ``proc`` prints up to the first that holds ``text`` (a timer kills it if none comes)."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                return "".join(lines)
    finally:
        timer.cancel()
    raise AssertionError(f"{text!r} never came; the output was:\n{''.join(lines)}")


def _records(results: Path):
    return sorted(p.name for p in (results / "records" / ROW / "smoke" / "seed0").glob("*.json"))


def _run_all_against(holder: subprocess.Popen, cmd, cwd: Path, while_held=lambda: None) -> str:
    """Start ``cmd`` (a run-all) while ``holder`` holds the job; once it says it waits, call
    ``while_held``, then let the holder go; returns the run-all's whole output (it must exit 0)."""
    run = subprocess.Popen(cmd, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _read_until(run, f"{KEY}: waiting for the run that holds it")
        assert f"held by {HELD_BY}, pid {holder.pid} on {socket.gethostname()}" in out
        while_held()
        assert run.poll() is None, out
        _let_go(holder)
        out += run.communicate(timeout=600)[0]
    finally:
        run.kill()
        holder.kill()
    assert run.returncode == 0, out
    return out


# ----------------------------------------------------------------------------- a run-all against a held job


@pytest.mark.slow
def test_a_run_all_waits_for_the_holder_then_runs_only_what_is_missing(tmp_path):
    """The other run-all is a helper process that holds the job's lock until told: while it holds it
    the run-all waits and runs nothing; once free it runs every stage, once. A run-all whose job the
    holder finishes meanwhile (its records appear while it waits) runs none of its stages."""
    sets = [a for s in TINY for a in ("--set", s)]
    first, second = tmp_path / "first", tmp_path / "second"

    def job_logs(results: Path):  # the seed's work dir is seed0-<hash12>
        return sorted((results / "work" / "smoke" / ROW).glob("seed0-*/job.log"))

    def nothing_ran():
        time.sleep(2)  # two of the waiting run's polls (1 s each): still held, so still nothing may run
        assert _records(first) == [] and job_logs(first) == []

    cmd = cli_command("run-all", "--profile", "smoke", "--filter", ROW, "--results", first, *sets)
    out = _run_all_against(_holder_process(lock_path(first, KEY), HELD_BY), cmd, tmp_path, nothing_ran)
    # Each (row, seed, stage) ran once: one record per stage, one job start in the job's log.
    done = _records(first)
    assert sorted(name.split("-")[0] for name in done) == sorted(KINDS)
    [log] = job_logs(first)
    assert log.read_text().count("stages to run: train, eval, eval_ms_flip, bench") == 1
    assert "stages to run: none" not in log.read_text()
    assert "done by the other run" not in out and lock_path(first, KEY).read_text() == ""  # released

    def the_holder_finishes():  # its records land while it holds the job (the same recipe, so they count)
        shutil.copytree(first / "records", second / "records")

    cmd = cli_command("run-all", "--profile", "smoke", "--filter", ROW, "--results", second, *sets)
    out = _run_all_against(_holder_process(lock_path(second, KEY), HELD_BY), cmd, tmp_path, the_holder_finishes)
    assert f"{KEY}: done by the other run; nothing left to run here" in out
    assert _records(second) == done and job_logs(second) == []  # no stage ran here
    assert lock_path(second, KEY).read_text() == ""  # released


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
            assert subprocess.run(child, capture_output=True, text=True, env=cli_env()).stdout.strip() == "True"
        proc = subprocess.run(child, capture_output=True, text=True, env=cli_env())
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
