"""Where the report's figures go: a matplotlib figure written as PNG and SVG, atomically (plots and the
curve overlays save through ``save_figure``). Importing it selects the Agg backend."""

from __future__ import annotations

import io
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")  # files only, never a window (CI and cluster nodes have no display)
import matplotlib.pyplot as plt  # noqa: E402

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
