"""``python -m benchmark.run JOB.json``: run one job described by ``Job.to_dict()``.

The local launcher starts it this way under ``torch.distributed.run`` (one process per GPU)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from benchmark.errors import NLBenchError
from benchmark.run.job import job_from_dict, run_job


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmark.run JOB.json", file=sys.stderr)
        return 2
    try:
        job_file = Path(argv[0]).resolve()
        # RESULTS/jobs/local/<job>.json: the results folder is where the file is (it may have moved).
        results = job_file.parents[2] if job_file.parent.name == "local" else None
        run_job(job_from_dict(json.loads(job_file.read_text()), str(results) if results else None))
    except NLBenchError as exc:
        print(f"nlbench job: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the console gets one line; a stage's traceback is in its job.log
        if os.environ.get("NLBENCH_DEBUG") == "1":
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"nlbench job: error: {type(exc).__name__}{': ' + first if first else ''} "
              "(a failed stage has its traceback in job.log; NLBENCH_DEBUG=1 prints it here)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
