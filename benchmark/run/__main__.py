"""``python -m benchmark.run JOB.json``: run one job described by ``Job.to_dict()``.

The local launcher starts it this way under ``torch.distributed.run`` (one process per GPU)."""

from __future__ import annotations

import json
import sys
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
        run_job(job_from_dict(json.loads(Path(argv[0]).read_text())))
    except NLBenchError as exc:
        print(f"nlbench job: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
