"""Segmentation metrics with MMSegmentation's IoUMetric semantics.

Per image, four per-class pixel counts are taken over the pixels whose label is not the ignore index:
intersection (prediction == label), union, predicted area and label area. These are summed over the
whole split (never averaged per image), and only then turned into ratios:

- aAcc = total intersection / total label area (all classes together);
- IoU[c] = intersection[c] / union[c]: NaN when the class has neither ground truth nor prediction
  (0 / 0); 0 when it was predicted but never present;
- Acc[c] = intersection[c] / label[c]: NaN whenever the class has no ground truth at all;
- mIoU, mAcc = NaN-ignoring means, so each mean leaves out exactly the classes that are NaN above.

MMSeg counts with float32 histograms; we count with int64, which is exact (float32 stops counting
single pixels past 2^24 per class, a relative difference of ~1e-7 at worst).
Figures are kept at full precision in percent; rounding to 2 decimals happens only for display.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from benchmark.engine import distributed
from benchmark.recipe import IGNORE_INDEX

ArrayLike = Union[np.ndarray, torch.Tensor]


def intersect_and_union(
    pred: ArrayLike, label: ArrayLike, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Per-class (intersection, union, predicted area, label area) of one image, shape (4, C), int64.

    ``pred`` and ``label`` are (H, W) class-index maps of the same size. Pixels labelled
    ``ignore_index`` are left out; values outside [0, num_classes) count for no class (as
    ``torch.histc`` over [0, C-1] does in MMSeg).
    """
    pred_t = torch.as_tensor(pred)
    label_t = torch.as_tensor(label, device=pred_t.device)
    if pred_t.shape != label_t.shape:
        raise ValueError(f"prediction {tuple(pred_t.shape)} and label {tuple(label_t.shape)} differ in size")
    pred_t = pred_t.reshape(-1).long()
    label_t = label_t.reshape(-1).long()
    keep = label_t != ignore_index
    pred_t, label_t = pred_t[keep], label_t[keep]

    def area(values: torch.Tensor) -> torch.Tensor:
        values = values[(values >= 0) & (values < num_classes)]
        return torch.bincount(values, minlength=num_classes).cpu()

    area_intersect = area(pred_t[pred_t == label_t])
    area_pred = area(pred_t)
    area_label = area(label_t)
    area_union = area_pred + area_label - area_intersect
    return torch.stack([area_intersect, area_union, area_pred, area_label])


class SegMetric:
    """Accumulates the per-class areas of a split; ``compute`` turns the sums into metrics."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX):
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.areas = torch.zeros(4, len(self.class_names), dtype=torch.int64)
        self.num_images = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        self.areas += intersect_and_union(pred, label, len(self.class_names), self.ignore_index)
        self.num_images += 1

    def all_reduce(self, device: Optional[torch.device] = None) -> None:
        """Sum the areas (and image counts) of every rank; a no-op outside torch.distributed."""
        if distributed.get_world_size() == 1:
            return
        # nccl reduces CUDA tensors only; gloo takes CPU ones.
        packed = torch.cat([self.areas.reshape(-1), torch.tensor([self.num_images])])
        packed = distributed.all_reduce_sum(packed.to(device or torch.device("cpu"))).cpu()
        self.areas = packed[:-1].reshape(self.areas.shape)
        self.num_images = int(packed[-1])

    def compute(self) -> Dict[str, object]:
        return areas_to_metrics(self.areas, self.class_names)


def areas_to_metrics(areas: torch.Tensor, class_names: Sequence[str]) -> Dict[str, object]:
    """Summed (4, C) areas -> {"aAcc", "mIoU", "mAcc", "per_class": {name: {"IoU", "Acc"}}} in percent.

    NaN per-class values are kept as NaN (JSON writers turn them into null).
    """
    intersect, union, _pred, label = (areas[i].double().numpy() for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / union
        acc = intersect / label
        a_acc = intersect.sum() / label.sum()
    return {
        "aAcc": float(a_acc * 100),
        "mIoU": _nanmean_percent(iou),
        "mAcc": _nanmean_percent(acc),
        "per_class": {
            name: {"IoU": float(iou[i] * 100), "Acc": float(acc[i] * 100)} for i, name in enumerate(class_names)
        },
    }


def _nanmean_percent(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean() * 100) if finite.size else math.nan


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_metrics(metrics: Dict[str, object]) -> str:
    """The per-class table and the summary line, rounded to 2 decimals as MMSeg prints them."""
    per_class = metrics["per_class"]
    width = max([len("Class")] + [len(name) for name in per_class])
    lines = [f"{'Class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
    for name, row in per_class.items():
        lines.append(f"{name:<{width}}  {_fmt(row['IoU']):>6}  {_fmt(row['Acc']):>6}")
    lines.append("-" * (width + 16))
    lines.append(f"aAcc: {_fmt(metrics['aAcc'])}  mIoU: {_fmt(metrics['mIoU'])}  mAcc: {_fmt(metrics['mAcc'])}")
    return "\n".join(lines)
