"""The engine's one door to the data: the data root (a synthetic set is written on first use where
the recipe asks for one) and the splits built from it.

In a multi-process job rank 0 writes a synthetic set first while the other ranks wait at a barrier,
so that the set is written once; ``ensure_dataset`` is safe under races anyway (temporary folder,
first rename wins), so jobs of an array that start side by side need no coordination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from benchmark.data.layouts import SegDataset, build_dataset
from benchmark.data.synthetic import ensure_dataset
from benchmark.engine import distributed
from benchmark.recipe import DataConfig


def data_root(data: DataConfig, override: Optional[Union[str, Path]] = None) -> Path:
    """The data root, written first by rank 0 when it is a synthetic set that does not exist yet."""
    root = ensure_dataset(data, override) if distributed.get_rank() == 0 else None
    distributed.barrier()
    return root if root is not None else ensure_dataset(data, override)


def open_split(data: DataConfig, split: str, override: Optional[Union[str, Path]] = None) -> SegDataset:
    return build_dataset(data, split, data_root(data, override))
