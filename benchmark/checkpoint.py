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
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

import torch

from benchmark.errors import NLBenchError

PathLike = Union[str, Path]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def _atomic_file(path: PathLike) -> Iterator[io.BufferedWriter]:
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


# ----------------------------------------------------------------------------- loading


def _numpy_meta_globals() -> List[Any]:
    """The numpy types needed to rebuild arrays and scalars that MMSeg/mmcv may keep in a
    checkpoint's ``meta`` (e.g. a PALETTE saved as an array). They only rebuild data; nothing
    else is ever allowed. Pickles from numpy 1.x name them under ``numpy.core``, numpy 2.x under
    ``numpy._core``, so both spellings are registered."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    allowed: List[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((reconstruct, f"{module}._reconstruct"))
        allowed.append((scalar, f"{module}.scalar"))
    # numpy >= 1.25 pickles dtypes through their classes in numpy.dtypes.
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def _torch_load(path: Path) -> Any:
    """torch.load, weights only; a file whose meta holds numpy arrays is retried with exactly the
    numpy data types allowed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        if "numpy" not in str(first):
            raise
    with torch.serialization.safe_globals(_numpy_meta_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _first(items: List[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> "OrderedDict[str, Any]":
    """DDP saves have every key under ``module.``; drop it when all keys have it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read an MMSeg-format checkpoint (``{"state_dict", "meta"?, "optimizer"?, ...}``) or a bare
    state dict. Returns a dict that always has ``state_dict`` (keys without a DDP ``module.``
    prefix) and ``meta`` (``{}`` when absent); other entries are passed through.

    Raises NLBenchError for a missing file, a folder, a truncated or non-checkpoint file, or a
    pickle that needs anything beyond tensors and plain data.
    """
    path = Path(path)
    if not path.exists():
        raise NLBenchError("checkpoint file not found", path)
    if path.is_dir():
        raise NLBenchError("expected a checkpoint file, got a directory", path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive ("PK\x03\x04"); before PyTorch 1.6 a pickle (protocol 2: 0x80 0x02).
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise NLBenchError(f"not a PyTorch checkpoint (the file starts with {head!r}, not a zip or pickle header)", path)
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f" (it needs {found.group(1)})" if found else ""
            raise NLBenchError(
                f"refusing to load: the file's pickle needs types beyond tensors and plain data{what}; "
                "only weights_only checkpoints are loaded", path) from None
        raise NLBenchError(f"not a PyTorch checkpoint (cannot unpickle: {text.splitlines()[0] if text else exc!r})", path) from None
    except Exception as exc:  # noqa: BLE001 - garbage input fails in many ways inside the unpickler
        first_line = (str(exc).splitlines() or [""])[0].split(". ")[0] or type(exc).__name__
        raise NLBenchError(f"not a readable PyTorch checkpoint (truncated or another kind of file?): {first_line}",
                           path) from None
    if not isinstance(obj, Mapping):
        raise NLBenchError(f"expected a dict with 'state_dict' or a state dict, got {type(obj).__name__}", path)
    if "state_dict" in obj:
        state_dict = obj["state_dict"]
        rest = {k: v for k, v in obj.items() if k != "state_dict"}
    else:
        state_dict, rest = obj, {}
    if not isinstance(state_dict, Mapping):
        raise NLBenchError(f"expected a mapping of parameter name -> tensor, got {type(state_dict).__name__}",
                           path, "state_dict")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise NLBenchError(f"expected tensors only; not a tensor: {_first(bad)}", path, "state_dict")
    out: Dict[str, Any] = dict(rest)
    out["state_dict"] = _strip_prefix(state_dict)
    out.setdefault("meta", {})
    return out


def state_dict_problems(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """What keeps ``state_dict`` from loading strictly into ``model``: missing and unexpected keys,
    shape mismatches (each list cut to its first entries); empty when it matches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_first(mismatched, 3)}")
    return problems


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """Strict match of names and shapes; one NLBenchError naming the first offending keys."""
    problems = state_dict_problems(model, state_dict)
    if problems:
        raise NLBenchError("checkpoint does not match the model: " + "; ".join(problems), path)


def load_weights(model: torch.nn.Module, path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint's weights into ``model`` strictly; returns the checkpoint (for its meta)."""
    ckpt = load_checkpoint(path)
    check_state_dict(model, ckpt["state_dict"], path)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return ckpt


# ----------------------------------------------------------------------------- saving


def save_checkpoint(
    path: PathLike,
    state_dict: Mapping[str, torch.Tensor],
    meta: Optional[Dict[str, Any]] = None,
    optimizer: Optional[Dict[str, Any]] = None,
    **extra: Any,
) -> Path:
    """Write ``{"meta", "state_dict", "optimizer"?, **extra}`` (MMSeg's layout) atomically.

    Tensors are moved to the CPU so the file loads anywhere; ``meta`` and ``extra`` must be plain
    data (str, numbers, lists, dicts, tensors) so the file loads with ``weights_only=True``.
    """
    ckpt: Dict[str, Any] = {
        "meta": dict(meta or {}),
        "state_dict": OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items()),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer
    ckpt.update(extra)
    return atomic_torch_save(ckpt, path)
