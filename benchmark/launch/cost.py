"""What a job costs, estimated: V100 GPU-hours from the model's GMac at the job's input sizes.

GPU-hour estimate (an estimate, not a measurement): the convolution cost of the NonLocal model
grows linearly with the pixels of its input and the non-local matrix products quadratically, so
with the costs in docs/FIDELITY.md (R-50-D8 at 512x1024: 400 GMac of convolutions + 34 GMac of
non-local products; R-101-D8: 555 + 34)

    GMac(h, w) = conv[depth] * h * w / (512 * 1024) + 34 * (h * w / (512 * 1024)) ** 2

reproduces the stated costs at 769x769 and 1024x2048 within 2%. A training iteration costs 3x a
forward pass (backward ~ 2x forward) per image; evaluation costs one forward per view (whole image,
each sliding window, 12 views for ms+flip). Throughput assumed on a V100: 6.0 TMac/s for inference,
which is what the published fps of the measured rows imply (5.8-6.1 TMac/s), and 4.5 TMac/s for
training (75% of that, for SyncBN, data loading and a less efficient backward). The auxiliary head
(~3%) and data loading stalls are ignored.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

from benchmark.recipe import Recipe
from benchmark.run.records import KINDS

_REF_PIXELS = 512 * 1024
_CONV_GMAC_AT_REF = {50: 400.0, 101: 555.0}  # docs/FIDELITY.md, "Cost"
_NL_GMAC_AT_REF = 34.0
INFER_TMAC_PER_S = 6.0
TRAIN_TMAC_PER_S = 4.5
# Validation images per dataset (Cityscapes val, ADE20K validation, VOC 2012 val).
VAL_IMAGES = {"cityscapes": 500, "ade20k": 2000, "voc12aug": 1449}
# A typical validation image (h, w) before the test resize: Cityscapes is 1024x2048; ADE20K and VOC
# images are ~375-512 px high with a 4:3-ish aspect, so the (2048, 512) test scale makes them ~512x683.
TYPICAL_VAL_SIZE = {"cityscapes": (1024, 2048), "ade20k": (384, 512), "voc12aug": (375, 500)}


def forward_gmac(depth: int, h: int, w: int) -> Optional[float]:
    """Estimated GMac of one forward pass at (h, w), or None for a depth the table lacks."""
    if depth not in _CONV_GMAC_AT_REF:
        return None
    scale = h * w / _REF_PIXELS
    return _CONV_GMAC_AT_REF[depth] * scale + _NL_GMAC_AT_REF * scale * scale


def _test_size(recipe: Recipe, h: int, w: int, ratio: float = 1.0) -> Tuple[int, int]:
    """Keep-ratio test resize of an (h, w) image to img_scale x ratio (mmcv's rule)."""
    from benchmark.data.resize import keep_ratio_size

    return keep_ratio_size(h, w, tuple(int(s * ratio) for s in recipe.data.img_scale))


def _view_gmac(recipe: Recipe, h: int, w: int) -> float:
    """One test view at an already-resized (h, w): whole image, or every sliding window."""
    depth = recipe.model.depth
    if recipe.test.mode == "whole":
        return forward_gmac(depth, h, w) or 0.0
    ch, cw = recipe.test.crop_size
    sh, sw = recipe.test.stride
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    return rows * cols * (forward_gmac(depth, min(ch, h), min(cw, w)) or 0.0)


def image_test_gmac(recipe: Recipe, ms_flip: bool = False) -> float:
    h, w = TYPICAL_VAL_SIZE[recipe.data.dataset]
    if not ms_flip:
        return _view_gmac(recipe, *_test_size(recipe, h, w))
    return sum(2 * _view_gmac(recipe, *_test_size(recipe, h, w, r)) for r in recipe.test.ms_flip_ratios)


def estimate_gpu_hours(recipe: Recipe, stages: Sequence[str] = KINDS) -> Optional[float]:
    """Estimated V100 GPU-hours of one job (see the module docstring), None for smoke-size models."""
    depth = recipe.model.depth
    crop = forward_gmac(depth, *recipe.data.crop_size)
    if crop is None:
        return None
    sched = recipe.schedule
    n_val = VAL_IMAGES[recipe.data.dataset]
    single = image_test_gmac(recipe)
    train_gmac = eval_gmac = 0.0
    if "train" in stages:
        train_gmac = 3.0 * crop * recipe.effective_batch * sched.max_iters
        eval_gmac += (sched.max_iters // sched.eval_interval) * n_val * single  # evaluations while training
    if "eval" in stages:
        eval_gmac += n_val * single
    if "eval_ms_flip" in stages:
        eval_gmac += n_val * image_test_gmac(recipe, ms_flip=True)
    if "bench" in stages:
        eval_gmac += recipe.bench.total_images * single
    seconds = train_gmac / (TRAIN_TMAC_PER_S * 1e3) + eval_gmac / (INFER_TMAC_PER_S * 1e3)
    return seconds / 3600.0


def estimate_saved_gpu_hours(recipe: Recipe, stages: Sequence[str], stopped_at: int) -> Optional[float]:
    """What a job stopped after ``stopped_at`` training iterations did not spend: the rest of its
    training (and the evaluations in it) and its later stages. None for smoke-size models."""
    total, train = estimate_gpu_hours(recipe, stages), estimate_gpu_hours(recipe, ("train",))
    if total is None or train is None:
        return None
    done = min(max(stopped_at, 0), recipe.schedule.max_iters) / recipe.schedule.max_iters
    return total - train * done
