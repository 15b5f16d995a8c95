"""The running SLURM test cluster (slurm/test-cluster.sh), shared by the SLURM tests.

Tests that use its ``cluster`` fixture skip unless a cluster answers: SLURM_CONF, or the env file
in $NLBENCH_SLURM_DIR (default /tmp/nlbench-slurm), points at it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def cluster_env():
    """SLURM_CONF of a running test cluster, or None."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        env_file = Path(os.environ.get("NLBENCH_SLURM_DIR", "/tmp/nlbench-slurm")) / "env"
        if env_file.is_file():
            for line in env_file.read_text().splitlines():
                if line.startswith("export SLURM_CONF="):
                    conf = line.split("=", 1)[1].strip()
    if not conf or not Path(conf).is_file():
        return None
    env = {**os.environ, "SLURM_CONF": conf}
    for cmd in (["sinfo", "-h"], ["sacct", "-n", "-X", "-S", "now-1minute"]):
        try:
            if subprocess.run(cmd, env=env, capture_output=True, timeout=15).returncode != 0:
                return None
        except (OSError, subprocess.SubprocessError):
            return None
    return conf


def cluster_fixture():
    """A module-scoped ``cluster`` fixture for a test module (``cluster = cluster_fixture()``): a running
    test cluster and a scratch working dir (relative data roots resolve there)."""

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        conf = cluster_env()
        if conf is None:
            pytest.skip("no SLURM test cluster is up (slurm/test-cluster.sh start)")
        work = tmp_path_factory.mktemp("slurm")
        saved_conf, saved_cwd = os.environ.get("SLURM_CONF"), os.getcwd()
        os.environ["SLURM_CONF"] = conf
        os.chdir(work)
        yield work
        os.chdir(saved_cwd)
        if saved_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved_conf

    return cluster
