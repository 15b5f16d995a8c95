"""Where the report's figures go: a matplotlib figure written as PNG and SVG files, atomically (plots
and the curve overlays save through ``save_figure``), or as an ``<svg>`` element for an HTML page
(``inline_svg``: the report's pages). Importing it selects the Agg backend."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")  # files only, never a window (CI and cluster nodes have no display)
import matplotlib.pyplot as plt  # noqa: E402
from markupsafe import Markup  # noqa: E402

from benchmark.io.files import atomic_write_bytes  # noqa: E402


def save_figure(fig, out_dir: Path, stem: str) -> List[Path]:
    """``out_dir/stem.png`` and ``.svg``; the figure is closed."""
    paths = []
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        # No date in the SVG, so an unchanged figure gives an unchanged file.
        fig.savefig(buf, format=fmt, dpi=120, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        path = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def inline_svg(fig, prefix: str) -> Markup:
    """The figure as an ``<svg>`` element for an HTML page (closes the figure).

    Text stays text (searchable, readable by the browser's font), and every id is prefixed so that
    several figures on one page never share one (matplotlib names glyphs and clip paths by hash)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nlbench"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    return Markup(text)
