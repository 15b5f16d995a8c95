"""Shared test settings and fixtures.

Settings: small thread counts (CI has 2 cores), GPU tests skip cleanly on CPU, and under CI=true any
other skip fails the run and the tests of each marker are counted (tests/ci_gate.py).

Shared by the test files (import the names with ``from conftest import ...``; pytest puts tests/ on
the path): the row names the tests use; ``run_cli`` / ``cli_command`` / ``cli_env`` to spawn
``python -m benchmark`` on this checkout; ``mmseg_poly_lr``; the ``results_with_records`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from ci_gate import pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401  (hooks, registered by name)

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"  # files MMSeg wrote or published, read by the tests

# Rows by name, written out here rather than taken from the catalog, so a renamed recipe fails the tests.
CITY_ROW = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"  # whole-image test; the smoke row most tests train
CITY_SLIDE_ROW = "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769"  # sliding-window test, ms+flip published
VOC_ROW = "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512"  # smoke: ResNet-18 trunk, the smallest crops (48x48)
ADE_ROW = "nonlocal_r50-d8_4xb4-80k_ade20k-512x512"
ADE_R101_ROW = "nonlocal_r101-d8_4xb4-160k_ade20k-512x512"


def cli_env(**extra: str) -> Dict[str, str]:
    """The environment of a spawned CLI: this checkout first on PYTHONPATH, output unbuffered (a test
    that reads a running CLI's lines sees each one when it is printed), one OpenMP thread by default."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def cli_command(*args: str) -> List[str]:
    """The argv of ``nlbench ARGS`` as a child process: ``python -m benchmark ARGS``."""
    return [sys.executable, "-m", "benchmark", *map(str, args)]


def run_cli(*args, cwd=None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run ``nlbench ARGS`` to its end in a child process (text output captured; ``env`` adds variables)."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=cwd, env=cli_env(**env),
                          timeout=timeout)


def mmseg_poly_lr(base_lr: float, min_lr: float, power: float, iteration: int, max_iters: int) -> float:
    """The lr a 0.x log line with ``iter`` = ``iteration`` (1-based) states, written out here from the poly
    policy MMSeg 0.x trained with (mmcv's PolyLrUpdaterHook by iteration; mmengine's PolyLR gives the same
    values): before each iteration the hook sets (base - min) * (1 - done / max_iters) ** power + min, with
    ``done`` the iterations already run, iteration - 1. Tests take expected lrs from here, not from
    benchmark.engine.train.poly_lr, whose own test (tests/engine/test_engine_train.py) checks it against
    mmengine's recursive form."""
    done = iteration - 1
    return (base_lr - min_lr) * (1.0 - done / max_iters) ** power + min_lr


# A record as docs/ARCHITECTURE.md describes schema nlbench.record/1, written out by hand (not through
# benchmark.run.records), so readers are checked against the documented format and not only against
# what the writer happens to produce.
LITERAL_EVAL_RECORD = {
    "schema": "nlbench.record/1", "kind": "eval", "recipe": CITY_ROW, "profile": "smoke", "seed": 1,
    "created_at": "2026-01-02T03:04:05.000000+00:00", "iterations": 40, "wall_time_s": 2.5, "gpu_hours": 0.0,
    "metrics": {"aAcc": 91.0, "mIoU": 30.0, "mAcc": 35.0, "per_class": {"road": {"IoU": 30.0, "Acc": 31.0}}},
    "mem_gb": None, "fps": None,
    "provenance": {"device_name": "cpu", "device_count": 1, "dtype": "float32", "git_commit": "0" * 40},
}
LITERAL_RECORD_NAME = "eval-20260102T030405000000Z-0123abcd.json"


@pytest.fixture
def results_with_records(tmp_path) -> Path:
    """A results folder holding CITY_ROW in the smoke profile: seed 0 a finished row (train, eval
    mIoU 20.0, bench) written through the public writer, seed 1 one eval record (mIoU 30.0) written
    literally as JSON at its documented path (records/<recipe>/<profile>/seed<k>/<kind>-....json)."""
    from report_helpers import write_row

    results = tmp_path / "results"
    write_row(results, recipe=CITY_ROW, profile="smoke", seed=0, miou=20.0)
    folder = results / "records" / CITY_ROW / "smoke" / "seed1"
    folder.mkdir(parents=True)
    (folder / LITERAL_RECORD_NAME).write_text(json.dumps(LITERAL_EVAL_RECORD, indent=2) + "\n")
    return results


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
