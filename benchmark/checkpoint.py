"""Checkpoints in MMSegmentation's format, and the atomic file writes every other module uses.

A checkpoint file is a dict ``{"meta": {...}, "state_dict": {...}, "optimizer": {...}?}`` (what
MMSeg 0.x/1.x save) or a bare state dict. Files are always read with ``weights_only=True``: a
checkpoint's pickle can run code, so only tensors and plain containers are accepted.

Every write goes to a temporary file in the destination folder, is flushed and fsynced, and then
``os.replace``-d over the target, so a reader never sees half a file and a crash leaves the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

import torch

from benchmark.errors import NLBenchError

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def _atomic_file(path: PathLike) -> Iterator[io.BufferedWriter]:
    """Yield a binary file handle whose contents replace ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (best effort: not every filesystem lets a folder be fsynced).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, os.replace)."""
    with _atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    with _atomic_file(path) as fh:
        torch.save(obj, fh)
    return Path(path)


def file_sha256(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
