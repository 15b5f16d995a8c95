"""`nlbench run-all` as the command line runs it: the launch layer's run-all, ending with the rows'
figures against their references and the verdicts of `nlbench compare` (report/compare.py:
``rows_verdicts``), which the launch layer may not import itself."""

from __future__ import annotations

import inspect
from typing import Any

from benchmark.launch.run_all import run_all_command as _run_all
from benchmark.report.compare import rows_verdicts


def run_all_command(**options: Any) -> int:
    return _run_all(**options, summarize=rows_verdicts)


# The command line passes run-all's flags by name: the signature is run-all's, less the hook.
_SIGNATURE = inspect.signature(_run_all)
run_all_command.__signature__ = _SIGNATURE.replace(  # type: ignore[attr-defined]
    parameters=[p for name, p in _SIGNATURE.parameters.items() if name != "summarize"])
