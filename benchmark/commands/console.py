"""What the commands write beside their output: the library's warning and note lines, on stderr."""

from __future__ import annotations

import sys


def warn(line: str) -> None:
    print(line, file=sys.stderr)
