"""Keep-ratio resizing with mmcv's semantics (``mmcv.imrescale`` on the OpenCV backend).

Shared by the training pipeline (random rescale), the test pipeline and ms+flip inference, so that
every place that resizes agrees to the pixel.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np


def keep_ratio_size(h: int, w: int, scale: Tuple[float, float]) -> Tuple[int, int]:
    """(new_h, new_w) for an image of size (h, w) rescaled to fit ``scale`` keeping its aspect ratio.

    ``scale`` is a (long, short) bound in either order, e.g. MMSeg's img_scale (2048, 1024): the factor
    is min(long_bound / long_edge, short_bound / short_edge), so small images are scaled up. New sizes
    round half up, as mmcv does: int(x * f + 0.5).
    """
    long_bound, short_bound = max(scale), min(scale)
    factor = min(long_bound / max(h, w), short_bound / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize_image(img: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxW[xC] image (OpenCV INTER_LINEAR, as mmcv's 'bilinear')."""
    h, w = size_hw
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (OpenCV INTER_NEAREST, as mmcv's 'nearest')."""
    h, w = size_hw
    if label.shape[:2] == (h, w):
        return label
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
