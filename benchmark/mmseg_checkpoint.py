"""Checkpoints in MMSegmentation's format: strict loading with clear errors, atomic saving, and
MMSeg's released files.

A checkpoint file is a dict ``{"meta": {...}, "state_dict": {...}, "optimizer": {...}?}`` (what
MMSeg 0.x/1.x save) or a bare state dict. Files are always read with ``weights_only=True``: a
checkpoint's pickle can run code, so only tensors and plain containers are accepted.

Saves are atomic (``benchmark.io.files.atomic_file``): a reader never sees half a checkpoint.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from benchmark.errors import NLBenchError
from benchmark.io.download import cached_download
from benchmark.io.files import atomic_file
from benchmark.recipe import Recipe

PathLike = Union[str, Path]


class _HashingWriter:
    """The file torch.save writes to: hashes the bytes on their way to disk, and keeps the OSError
    of a failed write (torch reports a full disk as "unexpected pos ..." from its zip writer)."""

    def __init__(self, fh: Any):
        self.fh, self.digest, self.error = fh, hashlib.sha256(), None

    def write(self, data: Any) -> int:
        try:
            written = self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.digest.update(memoryview(data)[:written])
        return written

    def flush(self) -> None:
        self.fh.flush()


def torch_save_sha256(obj: Any, path: PathLike) -> str:
    """``torch.save(obj)`` to ``path`` atomically; returns the sha256 of the bytes written.

    A write that fails (ENOSPC, EIO, ...) is an NLBenchError naming ``path``; the previous file,
    if any, stays as it was and no temporary file is left behind."""
    writer = None
    try:
        with atomic_file(path) as fh:
            writer = _HashingWriter(fh)
            torch.save(obj, writer)
    except OSError as exc:  # e.g. ENOSPC at the fsync: the previous file stays as it was
        raise NLBenchError(f"cannot write checkpoint: {exc.strerror or exc}", path) from None
    except RuntimeError:
        if writer is None or writer.error is None:
            raise
        raise NLBenchError(f"cannot write checkpoint: {writer.error.strerror or writer.error}", path) from None
    return writer.digest.hexdigest()


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    torch_save_sha256(obj, path)
    return Path(path)


def fetch_released(recipe: Recipe, cache_dir: Optional[PathLike] = None, progress: bool = True) -> Path:
    """MMSeg's released checkpoint of ``recipe``'s row, downloaded once into the cache and verified
    against the sha256 prefix in its release stamp."""
    release = recipe.release
    if release is None:
        raise NLBenchError("this recipe names no released checkpoint", recipe.source or recipe.name, "release")
    return cached_download(release.url, release.sha256_prefix, cache_dir, release.filename, progress)


def resolve_checkpoint(recipe: Recipe, checkpoint: PathLike) -> Path:
    """A checkpoint path, or the row's released file when ``checkpoint`` is 'released'."""
    return fetch_released(recipe) if str(checkpoint) == "released" else Path(checkpoint)


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
        raise NLBenchError(f"not a PyTorch checkpoint (the file starts with {head!r}, not a zip or pickle header)",
                           path)
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
        first = text.splitlines()[0] if text else repr(exc)
        raise NLBenchError(f"not a PyTorch checkpoint (cannot unpickle: {first})", path) from None
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
