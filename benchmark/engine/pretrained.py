"""ImageNet initialisation of the backbone, as MMSeg's configs do it (``pretrained='open-mmlab://resnet50_v1c'``).

A source is ``open-mmlab://resnet{18,50,101}_v1c`` (downloaded once into the nlbench cache and checked
against the sha256 prefix in its file name), an http(s) URL, or a local file. The file holds the
backbone's weights under the backbone's own key names (``stem.0.weight``, ``layer1.0.conv1.weight``,
...), optionally prefixed with ``backbone.``; ImageNet classifier keys (``fc.*``) are dropped.

MMSeg loads these with ``strict=False`` and only logs what did not match; nlbench refuses a file that
leaves any backbone weight unset or has a wrong shape, because such a run would silently train from
scratch and miss the published numbers by many points.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from benchmark.errors import NLBenchError
from benchmark.io.download import cache_dir_default, download
from benchmark.mmseg_checkpoint import load_checkpoint, state_dict_problems

OPENMMLAB_BASE_URL = "https://download.openmmlab.com/pretrain/third_party"
# name -> file name; the 8 hex digits are the first digits of the file's sha256.
OPENMMLAB_FILES = {
    "resnet18_v1c": "resnet18_v1c-b5776b93.pth",
    "resnet50_v1c": "resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": "resnet101_v1c-e67eebb6.pth",
}
_HASHED_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")
# Buffers older checkpoints do not carry; their absence changes nothing numerically.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def pretrained_url(source: str) -> str:
    """``source`` with an ``open-mmlab://`` name replaced by its URL (anything else as given)."""
    if source.startswith("open-mmlab://"):
        name = source[len("open-mmlab://"):]
        if name not in OPENMMLAB_FILES:
            raise NLBenchError(f"unknown open-mmlab model {name!r}; known: {', '.join(sorted(OPENMMLAB_FILES))}",
                               key="model.pretrained")
        base = os.environ.get("NLBENCH_OPENMMLAB_BASE_URL", OPENMMLAB_BASE_URL).rstrip("/")
        return f"{base}/{OPENMMLAB_FILES[name]}"
    return source


def cached_pretrained(source: str, cache_dir: os.PathLike | str | None = None) -> Optional[Path]:
    """Where ``source``'s file is without downloading it (the cache's copy, or the local file), or None."""
    source = pretrained_url(source)
    if source.startswith(("http://", "https://")):
        cache = Path(cache_dir) if cache_dir is not None else cache_dir_default()
        target = cache / source.rsplit("/", 1)[-1]
        return target if target.is_file() else None
    return Path(source) if Path(source).is_file() else None


def resolve_pretrained(source: str, cache_dir: os.PathLike | str | None = None) -> Path:
    """A local path for ``source``, downloading (and hash-checking) remote sources into the cache."""
    source = pretrained_url(source)
    if source.startswith(("http://", "https://")):
        filename = source.rsplit("/", 1)[-1]
        cache = Path(cache_dir) if cache_dir is not None else cache_dir_default()
        target = cache / filename
        if target.exists():
            return target
        match = _HASHED_NAME.search(filename)
        return download(source, target, match.group(1) if match else "")
    path = Path(source)
    if not path.is_file():
        raise NLBenchError("pretrained weights file not found", path, "model.pretrained")
    return path


def load_backbone_weights(backbone: nn.Module, path: os.PathLike | str) -> List[str]:
    """Copy ``path``'s weights into ``backbone``; returns the file's keys that were dropped (``fc.*``)."""
    state = load_checkpoint(path)["state_dict"]
    weights: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        weights[key[len("backbone."):] if key.startswith("backbone.") else key] = value
    expected = backbone.state_dict()
    dropped = sorted(k for k in weights if k.startswith("fc.") and k not in expected)
    for key in dropped:
        del weights[key]
    for key, value in expected.items():
        if key.endswith(_OPTIONAL_SUFFIXES):
            weights.setdefault(key, value)
    problems = state_dict_problems(backbone, weights)
    if problems:
        raise NLBenchError("not pretrained weights for this backbone: " + "; ".join(problems), path, "model.pretrained")
    backbone.load_state_dict(weights, strict=True)
    return dropped
