"""Atomic writes, file hashes, JSON lines and tail reads: the file primitives every layer uses.

Every write goes to a temporary file in the destination folder, is flushed and fsynced, and then
``os.replace``-d over the target, so a reader never sees half a file and a crash leaves the old one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Union

from benchmark.errors import NLBenchError

PathLike = Union[str, Path]
CHUNK = 1 << 20
TAIL_BYTES = 65536


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[io.BufferedWriter]:
    """Yield a binary file handle whose contents replace ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        # Every atomic write (checkpoints, records, --json/--out files) fails the same clear way.
        raise NLBenchError(f"cannot write: {exc.strerror or exc}", path) from None
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus umask)
        # so results and checkpoints stay readable by the group, as users of shared clusters expect.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem lets a folder be fsynced)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, os.replace)."""
    try:
        with atomic_file(path) as fh:
            fh.write(data)
    except OSError as exc:  # e.g. ENOSPC while writing: the old file is untouched
        raise NLBenchError(f"cannot write: {exc.strerror or exc}", path) from None
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8", errors: str = "backslashreplace") -> Path:
    """Write ``text`` to ``path`` atomically. A path that is not UTF-8 (its bytes held as surrogates, as
    Python reads such names) is written escaped, ``\\udcff``, rather than failing the whole write."""
    return atomic_write_bytes(path, text.encode(encoding, errors))


def shown_path(path: PathLike, base: PathLike) -> str:
    """``path`` as people read it: relative to the folder ``base`` when it lies inside it (``.`` for base
    itself), so that text shows the same path on every machine; as given otherwise."""
    try:
        return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(path)


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def append_line(path: PathLike, text: str) -> None:
    """Append one line with a single O_APPEND write(), so a killed writer never tears a line.

    A write the disk cannot take (ENOSPC, or a short write) is cut back to where the file ended, so
    no half line stays behind, and becomes an NLBenchError naming the file. The cut assumes one
    writer per file, which is how nlbench appends (rank 0 of one job)."""
    data = (text.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise NLBenchError(f"cannot append: {exc.strerror or exc}", path) from None
    try:
        size = os.fstat(fd).st_size
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes; is the disk full?)")
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise NLBenchError(f"cannot append: {exc.strerror or exc}", path) from None
    finally:
        os.close(fd)


def append_json_line(path: PathLike, entry: Any) -> None:
    """One JSON object per line (NaN is refused: JSON has none)."""
    append_line(path, json.dumps(entry, allow_nan=False))


def read_tail_lines(path: PathLike, nbytes: int = TAIL_BYTES) -> List[str]:
    """The lines of the last ``nbytes`` of a file (the first may be cut); [] when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - nbytes, 0))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def json_safe(node: object) -> object:
    """NaN/inf -> None, recursively: JSON has no NaN."""
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: json_safe(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [json_safe(v) for v in node]
    return node


def write_json(path: PathLike, body: Any, indent: int = 2) -> Path:
    """``body`` as JSON (NaN -> null), written atomically."""
    return atomic_write_text(path, json.dumps(json_safe(body), indent=indent, allow_nan=False) + "\n")
