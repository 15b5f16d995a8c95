"""CI that cannot pass by skipping (tests/ci_gate.py): pytest run for real, in a subprocess, on a small
test file whose tests skip the ways the suite's do (a call to pytest.skip, a fixture that skips, skipif)."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

TINY = '''
import pytest


@pytest.fixture
def cluster():
    pytest.skip("no SLURM test cluster is up")


def test_plain():
    assert True


@pytest.mark.browser
def test_browser():
    pytest.skip("no chromium on PATH")


@pytest.mark.slurm
def test_slurm(cluster):
    assert False, "never reached"


@pytest.mark.gpu
@pytest.mark.skip(reason="needs a CUDA device")
def test_gpu():
    assert False


@pytest.mark.parity
@pytest.mark.skipif(True, reason="set NLBENCH_MMSEG_PYTHON")
def test_parity():
    assert False


@pytest.mark.xfail(strict=True, reason="a known failure is not a skip")
def test_known_failure():
    assert False
'''

INI = """[pytest]
markers =
    slurm: needs the cluster
    browser: needs chromium
    gpu: needs CUDA
    parity: needs MMSeg
    diskfull: needs a tmpfs
"""


def run_pytest(tmp_path: Path, ci: str, summary_file: bool = True):
    (tmp_path / "test_tiny.py").write_text(TINY)
    (tmp_path / "pytest.ini").write_text(INI)
    summary = tmp_path / "summary.txt"
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("NLBENCH_MARKER_SUMMARY", None)
    if summary_file:
        env["NLBENCH_MARKER_SUMMARY"] = str(summary)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_gate", "-p", "no:cacheprovider", "-rA",
                           "test_tiny.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc, summary.read_text() if summary.exists() else ""


def counts(summary: str) -> dict:
    """'  browser  0 /  1 /  0' -> {'browser': (0, 1, 0)}"""
    out = {}
    for line in summary.splitlines()[1:]:
        name, _, figures = line.strip().partition(" ")
        if "/" in figures:
            out[name] = tuple(int(x) for x in figures.split("/"))
    return out


def test_under_ci_a_skip_fails_the_run_except_gpu_and_parity(tmp_path):
    proc, summary = run_pytest(tmp_path, "true")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "FAILED test_tiny.py::test_browser" in out and "ERROR test_tiny.py::test_slurm" in out
    assert "CI=true: a skipped test fails the run (only tests marked gpu or parity may skip); markers browser; " \
           "it skipped because: Skipped: no chromium on PATH" in out
    assert "SKIPPED [1] test_tiny.py" in out and "needs a CUDA device" in out and "set NLBENCH_MMSEG_PYTHON" in out
    assert "XFAIL" in out  # an expected failure stays one
    assert counts(summary) == {"slurm": (0, 1, 0), "browser": (0, 1, 0), "gpu": (0, 0, 1), "parity": (0, 0, 1),
                               "(unmarked)": (1, 0, 1), "(all)": (1, 2, 3)}
    assert "no test ran with marker(s): diskfull" in summary
    assert "tests per marker" not in out  # the file's reader prints it (.ci/run)
    proc, _ = run_pytest(tmp_path, "true", summary_file=False)
    assert proc.returncode == 1 and "CI=true: only gpu and parity tests may skip" in proc.stdout
    assert "  browser         0 /   1 /   0" in proc.stdout  # no file: the counts in the run's own summary


def test_without_ci_the_same_skips_pass_and_are_still_counted(tmp_path):
    proc, summary = run_pytest(tmp_path, "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 4 skipped, 1 xfailed" in proc.stdout
    assert counts(summary)["browser"] == (0, 0, 1) and counts(summary)["(all)"] == (1, 0, 5)
    assert "tests per marker" not in proc.stdout  # only the file, outside CI
