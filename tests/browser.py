"""A real headless browser for the HTML report's tests: Debian's chromium, started on a file URL.

``load(url)`` returns the DOM as chromium serialises it after loading the page, and every message the
page wrote to its console (JavaScript errors included), read from chromium's own log on stderr.
Each call starts one chromium with a fresh profile folder and no network services, and waits for it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

# chromium logs each console message of the page as '...:INFO:CONSOLE(<line>)] "<text>", source: <url>'
# (newer builds: 'INFO:CONSOLE:<line>]').
_CONSOLE = re.compile(r":CONSOLE[(:]\d*\)?\]\s*(.*)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--enable-logging=stderr", "--v=0"]


def chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Page:
    dom: str
    console: List[str]
    returncode: int


def load(url: str, timeout: float = 120.0, screenshot: Optional[Path] = None) -> Page:
    """Load ``url`` in headless chromium: the DOM after load and the console messages (or a screenshot)."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="nlbench-chromium-") as profile:
        mode = [f"--screenshot={screenshot}", "--window-size=1400,1800", "--hide-scrollbars"] if screenshot \
            else ["--dump-dom"]
        proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *mode, url],
                              capture_output=True, text=True, timeout=timeout)
    console = [m.group(1) for line in proc.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Page(proc.stdout, console, proc.returncode)
