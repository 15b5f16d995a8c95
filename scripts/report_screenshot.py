"""`make examples`: the HTML report's first page as a PNG (docs/images/report_index.png), in headless
chromium (tests/browser.py). Without chromium it says so and leaves the PNG as it is: never fails.

    python scripts/report_screenshot.py RESULTS/report/index.html OUT.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import chromium, load  # noqa: E402


def main(page: str, out: str) -> int:
    if chromium() is None:
        print(f"screenshot: no chromium (`make browser` installs Debian's); {out} left as it was")
        return 0
    target = Path(out)
    # chromium writes the file itself; a temporary name beside it, then a rename, keeps the write atomic.
    partial = target.with_name(f".{target.name}.partial.png")
    result = load(Path(page).resolve().as_uri(), screenshot=partial.resolve())
    if result.returncode != 0 or not partial.is_file():
        print(f"screenshot: chromium failed (exit status {result.returncode}); {out} left as it was")
        partial.unlink(missing_ok=True)
        return 0
    partial.replace(target)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
