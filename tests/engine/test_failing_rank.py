"""A failing rank stops the others within seconds, naming it (engine/distributed.py, RankWatch).

Two gloo ranks on the CPU, each started on its own with torchrun's variables and no torchrun agent
(as srun starts them), so nothing but nlbench's own watch can stop the survivor before gloo's
30-minute timeout: rank 0 failing in a write that only rank 0 makes, a killed rank 1 (same host:
its pid is gone), a killed rank 0 (the store's host is gone), and a stopped rank 1 (alive but
silent, as a rank on a host that went away: its heartbeat stops).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import VOC_ROW as ROW
from conftest import cli_command, cli_env

pytestmark = pytest.mark.slow
WITHIN_S = 30  # "within seconds": far below gloo's 30 min or NCCL's 10 min


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd, tmp_path: Path, **extra_env):
    """Both ranks of a 2-process job, each started alone (stdout and stderr to files)."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = cli_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", **extra_env)
        out = open(tmp_path / f"rank{rank}.out", "w")
        err = open(tmp_path / f"rank{rank}.err", "w")
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=err))
    return procs


def _stderr(tmp_path: Path, rank: int) -> str:
    return (tmp_path / f"rank{rank}.err").read_text()


def _wait_for(what, procs, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert all(p.poll() is None for p in procs), "a rank ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _exits_within(proc, seconds: float) -> int:
    started = time.monotonic()
    code = proc.wait(timeout=seconds + 120)  # don't hang the suite if the watch fails
    assert time.monotonic() - started < seconds, f"took {time.monotonic() - started:.0f} s"
    return code


def _stop_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("nlbench: rank"))


def _train(tmp_path: Path, *extra: str):
    return cli_command("train", ROW, "--profile", "smoke", "--device", "cpu", "--work-dir", tmp_path / "work",
                       "--data-root", tmp_path / "voc", "--set", "data.synthetic.train=4",
                       "--set", "data.synthetic.val=1", "--set", "data.crop_size=[32,32]",
                       "--set", "data.imgs_per_gpu=1", "--set", "schedule.log_interval=1", *extra)


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    from benchmark.data.synthetic import write_synthetic

    return write_synthetic("voc", tmp_path_factory.mktemp("data") / "voc", train=4, val=1, size_hw=(64, 80))


def test_rank_0_failing_in_its_checkpoint_write_stops_rank_1(tmp_path, voc):
    os.symlink(voc, tmp_path / "voc")
    (tmp_path / "work" / "iter_1.pth").mkdir(parents=True)  # only rank 0 writes it; rank 1 waits at a barrier
    r0, r1 = _start(_train(tmp_path, "--set", "schedule.max_iters=2", "--set", "schedule.checkpoint_interval=1"),
                    tmp_path)
    assert r0.wait(timeout=600) == 2
    err = _stderr(tmp_path, 0)
    assert "Traceback" not in err
    assert f"nlbench train: error: {tmp_path / 'work' / 'iter_1.pth'}: cannot write: is a directory" in err.splitlines()
    assert _exits_within(r1, WITHIN_S) == 1
    line = _stop_line(_stderr(tmp_path, 1))
    assert line == f"nlbench: rank 1 stops: rank 0 failed: {tmp_path / 'work' / 'iter_1.pth'}: cannot write: " \
                   "is a directory"


def test_a_killed_rank_1_stops_rank_0(tmp_path, voc):
    os.symlink(voc, tmp_path / "voc")
    r0, r1 = _start(_train(tmp_path, "--set", "schedule.max_iters=1000"), tmp_path)
    log = tmp_path / "work" / "train.log.jsonl"
    try:
        _wait_for(lambda: log.exists() and '"iteration": 1' in log.read_text(), [r0, r1])
        r1.send_signal(signal.SIGKILL)
        assert _exits_within(r0, WITHIN_S) == 1
    finally:
        for p in (r0, r1):
            p.kill()
            p.wait()
    assert _stop_line(_stderr(tmp_path, 0)) == (
        f"nlbench: rank 0 stops: rank 1 failed: its process (pid {r1.pid} on {socket.gethostname()}) is gone (killed?)")


_LOOP = textwrap.dedent("""
    import time, torch
    from benchmark.engine import distributed
    distributed.init_distributed("cpu")
    print("ready", flush=True)
    while True:  # what training does between checkpoints: collectives
        distributed.all_reduce_sum(torch.ones(1))
        time.sleep(0.02)
""")


@pytest.mark.parametrize("case", ["killed rank 0", "stopped rank 1"])
def test_a_lost_store_host_or_a_silent_rank_stops_the_other(case, tmp_path):
    victim, survivor = (0, 1) if case == "killed rank 0" else (1, 0)
    procs = _start([sys.executable, "-c", _LOOP], tmp_path, NLBENCH_RANK_TIMEOUT_S="3")
    try:
        _wait_for(lambda: all("ready" in (tmp_path / f"rank{r}.out").read_text() for r in range(2)), procs)
        procs[victim].send_signal(signal.SIGKILL if victim == 0 else signal.SIGSTOP)
        assert _exits_within(procs[survivor], WITHIN_S) == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
    line = _stop_line(_stderr(tmp_path, survivor))
    if victim == 0:
        assert line.startswith("nlbench: rank 1 stops: rank 0 failed: the job's store (on rank 0, or its launcher) "
                               "cannot be reached")
    else:
        assert line.startswith("nlbench: rank 0 stops: rank 1 failed: no heartbeat for ")
