"""How a run differed from the published setting of its row, in short phrases stored in every record
(``deviations``) and shown beside each verdict (compare, curves, the HTML report): "below" then reads
"below; effective batch 2 instead of 8".

The published setting is the row's recipe file in the full profile (recipe.published_recipe) on
the table's V100s, with the published datasets (data/checks.py: PUBLISHED_COUNTS). What a run had
is the resolved recipe plus what the launcher gave it: the world size, the device, the data root's
counts and the pretrained file's hash. The smoke profile differs by design (tiny model, synthetic
data, a short schedule); those are listed too, a section in one phrase each.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from benchmark.data.checks import PUBLISHED_COUNTS
from benchmark.recipe import Recipe, published_recipe

PUBLISHED_DEVICE = "V100"  # the table's GPUs (MMSeg's model zoo: 4 or 8 V100s per run)
_SHOWN = 2  # differing keys named per section; the rest are counted
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")


def deviations(recipe: Recipe, world_size: int, device_name: Optional[str], trained: bool = True,
               counts: Optional[Dict[str, int]] = None, pretrained_sha256: Optional[str] = None,
               published: Optional[Recipe] = None) -> List[str]:
    """The ways this run differs from the published one (empty: none found). ``trained``: the run
    trained its own weights (a released checkpoint was trained as published: batch, norm, schedule,
    model and pretrained weights are then MMSeg's own). A profile other than full is one phrase
    naming what it changes by design; the model, schedule, data and pretrained sections then go
    unsaid one by one."""
    pub = published or published_recipe(recipe)
    full = recipe.profile == "full"
    out = [] if full else [_profile_phrase(recipe, counts, trained)]
    if trained:
        out += _training(recipe, pub, world_size, device_name, pretrained_sha256, sections=full)
    if full:
        out += _section("data", _data_view(recipe), _data_view(pub)) + _counts(recipe, counts)
    out += _flags(recipe, pub, trained)
    if device_name and PUBLISHED_DEVICE not in str(device_name).upper():
        out.append(f"device {device_name} instead of {PUBLISHED_DEVICE}")
    return out


def _profile_phrase(recipe: Recipe, counts: Optional[Dict[str, int]], trained: bool) -> str:
    """'smoke profile (by design: depth-18 model, no pretrained weights, synthetic data 32/16 images, ...)'."""
    parts = []
    if trained:
        parts += [f"depth-{recipe.model.depth} model ({recipe.model.base_channels} channels)",
                  f"pretrained {recipe.model.pretrained}" if recipe.model.pretrained else "no pretrained weights"]
    kind = "synthetic " if recipe.data.synthetic is not None else ""
    if kind or counts:
        parts.append(f"{kind}data" + (f" {counts.get('train', '?')}/{counts.get('val', '?')} images" if counts else ""))
    if trained:
        parts.append(f"{recipe.schedule.max_iters} iterations")
    parts.append(f"crop {_shown(recipe.data.crop_size)}")
    return f"{recipe.profile} profile (by design: {', '.join(parts)})"


def _training(recipe: Recipe, pub: Recipe, world_size: int, device_name: Optional[str],  # noqa: PLR0913
              sha256: Optional[str], sections: bool = True) -> List[str]:
    out = []
    batch, published_batch = world_size * recipe.data.imgs_per_gpu, pub.effective_batch
    if batch != published_batch:
        out.append(f"effective batch {batch} instead of {published_batch} ({world_size} x "
                   f"{recipe.data.imgs_per_gpu} images, published {pub.runtime.gpus} GPUs x {pub.data.imgs_per_gpu})")
    on_gpu = device_name is None or str(device_name).lower() != "cpu"
    norm, published_norm = _norm(recipe, world_size, on_gpu), _norm(pub, pub.runtime.gpus, True)
    if norm != published_norm:
        out.append(f"{norm} instead of {published_norm}")
    if not sections:
        return out
    mine, theirs = recipe.model.pretrained, pub.model.pretrained
    if mine != theirs:
        out.append(f"pretrained {mine or 'none'} instead of {theirs or 'none'}")
    elif mine and sha256:
        match = _HASH_IN_NAME.search(mine) or _HASH_IN_NAME.search(_openmmlab_file(mine))
        if match and not sha256.startswith(match.group(1)):
            out.append(f"pretrained file sha256 {sha256[:8]} instead of {match.group(1)}")
    model = {k: v for k, v in recipe.model.model_dump().items() if k != "pretrained"}
    out += _section("model", model, {k: v for k, v in pub.model.model_dump().items() if k != "pretrained"})
    out += _section("schedule", recipe.schedule.model_dump(), pub.schedule.model_dump())
    return out


def _openmmlab_file(source: str) -> str:
    from benchmark.engine.pretrained import OPENMMLAB_FILES

    return OPENMMLAB_FILES.get(source.removeprefix("open-mmlab://"), "")


def _norm(recipe: Recipe, world_size: int, on_gpu: bool) -> str:
    """SyncBN needs more than one process, on CUDA (engine/distributed.py); otherwise each process
    normalises over its own images."""
    return "SyncBN" if recipe.runtime.sync_bn and world_size > 1 and on_gpu else "BN"


def _data_view(recipe: Recipe) -> Dict[str, Any]:
    """The data settings that change what is learnt (where the files are, and the batch, said elsewhere)."""
    skip = ("data_root", "synthetic", "workers_per_gpu", "imgs_per_gpu")
    return {k: v for k, v in recipe.data.model_dump().items() if k not in skip}


def _counts(recipe: Recipe, counts: Optional[Dict[str, int]]) -> List[str]:
    published = PUBLISHED_COUNTS[recipe.data.dataset]
    if not counts or counts == published:
        return []
    kind = "synthetic " if recipe.data.synthetic is not None else ""
    return [f"{kind}data {counts.get('train', '?')}/{counts.get('val', '?')} train/val images instead of "
            f"{published['train']}/{published['val']}"]


def _flags(recipe: Recipe, pub: Recipe, trained: bool) -> List[str]:
    out = []
    pairs = [("test amp", recipe.test.amp, pub.test.amp)]
    if trained:
        pairs = [("amp", recipe.runtime.amp, pub.runtime.amp), ("TF32", recipe.runtime.tf32, pub.runtime.tf32),
                 ("cudnn benchmark", recipe.runtime.cudnn_benchmark, pub.runtime.cudnn_benchmark),
                 ("channels_last", recipe.runtime.channels_last, pub.runtime.channels_last),
                 ("compile", recipe.runtime.compile, pub.runtime.compile)] + pairs
    for name, mine, theirs in pairs:
        if mine != theirs:
            out.append(f"{name} {_shown(mine, 'fp32')} instead of {_shown(theirs, 'fp32')}")
    return out


def _section(name: str, mine: Dict[str, Any], theirs: Dict[str, Any]) -> List[str]:
    """One phrase for a section's differing keys: 'model: depth 18 instead of 50, ... (+3 more)'."""
    mine, theirs = _flat(mine), _flat(theirs)
    keys = [k for k in dict.fromkeys([*theirs, *mine]) if mine.get(k) != theirs.get(k)]
    if not keys:
        return []
    shown = ", ".join(f"{k} {_shown(mine.get(k))} instead of {_shown(theirs.get(k))}" for k in keys[:_SHOWN])
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return [f"{name}: {shown}{more}"]


def _flat(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value: Any, none: str = "none") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)
