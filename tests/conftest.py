"""Shared test settings: small thread counts (CI has 2 cores), GPU tests skip cleanly on CPU, and under
CI=true any other skip fails the run and the tests of each marker are counted (tests/ci_gate.py)."""

import os

import pytest
from ci_gate import pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401  (hooks, registered by name)

os.environ.setdefault("OMP_NUM_THREADS", "2")


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
