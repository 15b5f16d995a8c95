"""A pytest plugin for CI that cannot pass by skipping (tests/conftest.py loads it).

- Under ``CI=true`` a skipped test is a failure, unless it is marked ``gpu`` (no CUDA on a CPU runner)
  or ``parity`` (the live-MMSegmentation parity tests need a separate MMSeg install): a SLURM test
  without its cluster, the browser test without chromium, the TensorBoard tests without tensorboard and
  the full-disk tests without a tmpfs fail the run instead of passing it silently.
- At the end, how many tests of each marker passed, failed and were skipped: written to the file
  ``$NLBENCH_MARKER_SUMMARY`` names when it is set (``.ci/run`` prints it after the suite), else printed
  in the terminal summary under CI=true.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Dict, List, Tuple

import pytest

MAY_SKIP = ("gpu", "parity")
SUMMARY_FILE_ENV = "NLBENCH_MARKER_SUMMARY"
# pytest's own marks say how a test runs, not what it needs: not counted.
_BUILTIN_MARKS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings", "tryfirst", "trylast"}
OUTCOMES = ("passed", "failed", "skipped")

_outcomes: Dict[str, Tuple[Tuple[str, ...], str]] = {}  # nodeid -> (its markers, its outcome)


def ci_on() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _markers(item: pytest.Item) -> Tuple[str, ...]:
    return tuple(sorted({m.name for m in item.iter_markers()} - _BUILTIN_MARKS))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    result = yield
    report = result.get_result()
    markers = _markers(item)
    if report.skipped and ci_on() and not hasattr(report, "wasxfail") and not set(markers) & set(MAY_SKIP):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"CI=true: a skipped test fails the run (only tests marked {' or '.join(MAY_SKIP)} may "
                           f"skip); markers {', '.join(markers) or 'none'}; it skipped because: {reason}")
    _record(report, markers)


def _record(report, markers: Tuple[str, ...]) -> None:
    """One outcome per test: failed in any phase wins, then skipped, then passed (its call)."""
    seen = _outcomes.get(report.nodeid, (markers, ""))[1]
    if report.failed:
        now = "failed"
    elif report.skipped and seen != "failed":
        now = "skipped"
    elif report.when == "call" and report.passed and not seen:
        now = "passed"
    else:
        now = seen
    _outcomes[report.nodeid] = (markers, now)


def marker_counts(outcomes=None) -> Dict[str, Counter]:
    """marker -> Counter of outcomes, plus ``(all)`` and ``(unmarked)``; an expected failure (xfail)
    counts as skipped, as pytest reports it."""
    counts: Dict[str, Counter] = {"(all)": Counter()}
    for markers, outcome in (outcomes if outcomes is not None else _outcomes).values():
        if not outcome:
            continue
        counts["(all)"][outcome] += 1
        for name in markers or ("(unmarked)",):
            counts.setdefault(name, Counter())[outcome] += 1
    return counts


def summary_lines(config) -> List[str]:
    registered = [re.split(r"[:(]", line, maxsplit=1)[0].strip() for line in config.getini("markers")]
    registered = [name for name in registered if name not in _BUILTIN_MARKS]
    counts = marker_counts()
    names = [n for n in registered if n in counts] + sorted(set(counts) - set(registered) - {"(all)"}) + ["(all)"]
    unused = [n for n in registered if n not in counts]
    lines = ["tests per marker (passed / failed / skipped):"]
    lines += [f"  {name:<12} {counts[name]['passed']:>4} / {counts[name]['failed']:>3} / {counts[name]['skipped']:>3}"
              for name in names]
    if unused:
        lines.append(f"  no test ran with marker(s): {', '.join(unused)}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    path = os.environ.get(SUMMARY_FILE_ENV)
    if not (ci_on() or path):
        return
    lines = summary_lines(config)
    if ci_on() and not path:  # with a file, whoever named it prints it (.ci/run, after the suite)
        terminalreporter.write_sep("-", "CI=true: only gpu and parity tests may skip")
        for line in lines:
            terminalreporter.write_line(line)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
