"""Evaluation on the val split: the recipe's test pipeline and mode, MMSeg's metrics.

Each image is predicted at its own size by ``benchmark.engine.inference`` (single scale, or the published
multi-scale + flip test), the argmax is scored against the original label (never resized), and the
per-class areas are summed over the split. Under torch.distributed, rank r takes images r, r + W,
r + 2W, ... and the areas are summed over ranks before the metrics are computed, so every rank gets
the same figures.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional

import torch
from torch import nn

from benchmark.data.classes import CLASS_NAMES
from benchmark.engine import distributed
from benchmark.engine.distributed import DistInfo, device_info
from benchmark.engine.inference import predict_logits, predict_ms_flip_probs
from benchmark.engine.metrics import SegMetric
from benchmark.engine.open_data import open_split
from benchmark.mmseg_checkpoint import load_weights, resolve_checkpoint
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import Recipe


def image_scores(model: nn.Module, image, recipe: Recipe, device: torch.device, ms_flip: bool = False) -> torch.Tensor:
    """(C, H, W) scores of one val image whose argmax evaluation scores: the logits of the recipe's
    test pipeline and mode (in its layout: NCHW unless runtime.channels_last), or the ms+flip
    probabilities."""
    if ms_flip:
        return predict_ms_flip_probs(model, image, recipe, device)
    return predict_logits(model, image, recipe, device)


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset, recipe: Recipe, info: DistInfo, ms_flip: bool = False,
                   progress: bool = True) -> Dict[str, Any]:
    """Metrics of ``model`` (already on ``info.device``, in eval mode) over ``dataset``, in percent."""
    metric = SegMetric(CLASS_NAMES[recipe.data.dataset])
    indices = range(info.rank, len(dataset), info.world_size)
    bar = None
    if progress and info.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(indices), unit="img", desc="eval ms+flip" if ms_flip else "eval", dynamic_ncols=True)
    for i in indices:
        image, label = dataset.read_image(i), dataset.read_label(i)
        if image.shape[:2] != label.shape:  # as training checks it (read_sample): one clear error
            raise dataset.size_error(i, image, label)
        metric.update(image_scores(model, image, recipe, info.device, ms_flip).argmax(dim=0), label)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    metric.all_reduce(info.device)
    out = metric.compute()
    out["num_images"] = metric.num_images
    return out


def evaluate(recipe: Recipe, checkpoint: str, ms_flip: bool = False, data_root: Optional[str] = None,
             device: str = "auto", progress: bool = True) -> Dict[str, Any]:
    """Evaluate ``checkpoint`` on the val split.

    Returns the metrics at the top level ({"aAcc", "mIoU", "mAcc", "per_class"}, percent, full
    precision) plus what a record needs: num_images, wall_time_s, ms_flip, checkpoint and the device facts.
    """
    started = time.perf_counter()
    info = distributed.init_distributed(device)
    distributed.use_runtime(recipe.runtime, info.device)
    # The data first: a missing or broken data root stops before a released checkpoint is downloaded.
    dataset = open_split(recipe.data, "val", data_root)
    path = resolve_checkpoint(recipe, checkpoint) if info.is_main else None
    distributed.barrier()  # a download happens once, on rank 0
    path = resolve_checkpoint(recipe, checkpoint) if path is None else path

    model = build_segmentor(recipe.model)
    load_weights(model, path)
    model.to(info.device).eval()
    metrics = evaluate_model(model, dataset, recipe, info, ms_flip=ms_flip, progress=progress)
    metrics.update({
        "ms_flip": ms_flip,
        "checkpoint": str(path),
        "wall_time_s": time.perf_counter() - started,
        "world_size": info.world_size,
        **device_info(info.device, amp=recipe.test.amp),  # its dtype: the inference's (test.amp)
    })
    return metrics

