"""MMSegmentation's training pipeline and test resize, with every random draw from an explicit generator.

Training, in MMSeg's order (``configs/_base_/datasets/*.py``): random keep-ratio resize of img_scale
by a ratio in ``ratio_range`` -> random crop (re-drawn while one class dominates) -> horizontal flip
-> photometric distortion -> normalize (RGB mean/std) -> pad to the crop size with 0 / 255.

Each step is a plain function of (image, label, rng); ``TrainPipeline`` strings them together. Images
are uint8 RGB HxWx3 until normalization; labels uint8 HxW throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
import torch

from benchmark.data.resize import keep_ratio_size, resize_image, resize_label
from benchmark.recipe import IGNORE_INDEX, DataConfig

# ImageNet statistics in RGB order (MMSeg's img_norm_cfg with to_rgb=True).
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

# PhotoMetricDistortion's defaults, which every NonLocal config uses.
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18

# RandomCrop tries a crop, then re-draws up to this many times while it is dominated by one class.
CROP_RETRIES = 10

Image = np.ndarray
Label = np.ndarray


def random_resize(img: Image, label: Label, img_scale: Tuple[int, int], ratio_range: Tuple[float, float],
                  rng: np.random.Generator) -> Tuple[Image, Label]:
    """Scale ``img_scale`` by a ratio drawn uniformly from ``ratio_range`` (each edge truncated to int,
    as mmcv's RandomResize does), then resize keeping the aspect ratio to fit that scale."""
    low, high = ratio_range
    ratio = rng.random() * (high - low) + low
    scale = (int(img_scale[0] * ratio), int(img_scale[1] * ratio))
    size = keep_ratio_size(img.shape[0], img.shape[1], scale)
    return resize_image(img, size), resize_label(label, size)


def _crop_box(shape: Tuple[int, ...], crop_hw: Tuple[int, int], rng: np.random.Generator) -> Tuple[int, int, int, int]:
    margin_h = max(shape[0] - crop_hw[0], 0)
    margin_w = max(shape[1] - crop_hw[1], 0)
    y = int(rng.integers(0, margin_h + 1))
    x = int(rng.integers(0, margin_w + 1))
    return y, y + crop_hw[0], x, x + crop_hw[1]


def random_crop(img: Image, label: Label, crop_hw: Tuple[int, int], cat_max_ratio: float,
                rng: np.random.Generator, ignore_index: int = IGNORE_INDEX) -> Tuple[Image, Label]:
    """MMSeg's RandomCrop. A crop is accepted when it holds more than one (non-ignored) class and
    none of them covers ``cat_max_ratio`` or more of the non-ignored pixels; otherwise it is re-drawn,
    at most ``CROP_RETRIES`` times, and the last draw is kept unchecked. A crop with a single class
    (or only ignored pixels) is therefore always re-drawn. Images smaller than the crop are cropped
    to their own size on that edge (padding comes later)."""
    box = _crop_box(img.shape, crop_hw, rng)
    if cat_max_ratio < 1.0:
        for _ in range(CROP_RETRIES):
            y1, y2, x1, x2 = box
            counts = np.bincount(label[y1:y2, x1:x2].ravel(), minlength=256)  # uint8 labels; faster than unique
            counts[ignore_index] = 0
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = _crop_box(img.shape, crop_hw, rng)
    y1, y2, x1, x2 = box
    return img[y1:y2, x1:x2], label[y1:y2, x1:x2]


def random_flip(img: Image, label: Label, prob: float, rng: np.random.Generator) -> Tuple[Image, Label]:
    """Horizontal flip of image and label together with probability ``prob``."""
    if rng.random() < prob:
        return img[:, ::-1], label[:, ::-1]
    return img, label


def _scale_shift(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # float32 arithmetic, clipped, then truncated back to uint8, as MMSeg's convert().
    out = channel.astype(np.float32) * alpha + beta
    return np.clip(out, 0, 255).astype(np.uint8)


def photometric_distortion(img: Image, rng: np.random.Generator) -> Image:
    """MMSeg's PhotoMetricDistortion on a uint8 RGB image; every step applies with probability 0.5:
    brightness (+-32) -> [contrast 0.5-1.5 here in mode 1] -> saturation x0.5-1.5 -> hue +-18 ->
    [contrast here in mode 0]. Draws happen in MMSeg's order.

    MMSeg runs it on the BGR image its loader returns and converts with BGR2HSV. Brightness and
    contrast treat channels alike, and converting our RGB image with RGB2HSV yields the same H, S, V
    per pixel, so the result is exactly MMSeg's with the channels in RGB order (converting RGB data
    with BGR2HSV would rotate hues the wrong way)."""
    if rng.integers(2):
        img = _scale_shift(img, beta=rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_first = bool(rng.integers(2))  # MMSeg's "mode == 1"
    if contrast_first:
        img = _contrast(img, rng)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _scale_shift(hsv[:, :, 1], alpha=rng.uniform(*SATURATION_RANGE))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        # numpy's randint(-18, 18) excludes 18: MMSeg's shifts are -18..17 (OpenCV hue is 0..179).
        shift = int(rng.integers(-HUE_DELTA, HUE_DELTA))
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + shift) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first:
        img = _contrast(img, rng)
    return img


def _contrast(img: Image, rng: np.random.Generator) -> Image:
    if rng.integers(2):
        return _scale_shift(img, alpha=rng.uniform(*CONTRAST_RANGE))
    return img


def normalize(img: Image, mean: Tuple[float, ...] = MEAN_RGB, std: Tuple[float, ...] = STD_RGB) -> np.ndarray:
    """float32 (img - mean) / std per RGB channel."""
    mean_a = np.asarray(mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(std, dtype=np.float32)
    return (img.astype(np.float32) - mean_a) * inv_std


def pad_to(img: np.ndarray, label: Label, size_hw: Tuple[int, int], pad_value: float = 0.0,
           label_pad_value: int = IGNORE_INDEX) -> Tuple[np.ndarray, Label]:
    """Pad at the bottom and right to ``size_hw`` (MMSeg's Pad: image with 0 after normalization,
    label with the ignore index)."""
    h, w = label.shape
    ph, pw = size_hw[0] - h, size_hw[1] - w
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {h}x{w} to the smaller size {size_hw[0]}x{size_hw[1]}")
    if ph == 0 and pw == 0:
        return img, label
    img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=pad_value)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=label_pad_value)
    return img, label


def resize_for_test(img: Image, img_scale: Tuple[int, int]) -> Image:
    """The test pipeline's resize: the uint8 image rescaled (bilinear) to fit ``img_scale`` keeping
    its aspect ratio; small images are scaled up. Labels are never resized at test time."""
    return resize_image(img, keep_ratio_size(img.shape[0], img.shape[1], img_scale))


@dataclass(frozen=True)
class TrainPipeline:
    """MMSeg's training pipeline for one recipe. Call with (image RGB uint8, label uint8, rng) to get
    (float32 CHW tensor, int64 HW tensor), both of the crop size."""

    img_scale: Tuple[int, int]  # (w, h) bound of the keep-ratio resize, before the random ratio
    crop_size: Tuple[int, int]  # (h, w)
    ratio_range: Tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True

    @classmethod
    def from_config(cls, data_cfg: DataConfig) -> "TrainPipeline":
        return cls(img_scale=tuple(data_cfg.img_scale), crop_size=tuple(data_cfg.crop_size),
                   ratio_range=tuple(data_cfg.ratio_range), cat_max_ratio=data_cfg.cat_max_ratio,
                   flip_prob=data_cfg.flip_prob)

    def augment(self, img: Image, label: Label, rng: np.random.Generator) -> Tuple[Image, Label]:
        """The random steps, up to (not including) normalization: uint8 image and label of at most the crop size."""
        img, label = random_resize(img, label, self.img_scale, self.ratio_range, rng)
        img, label = random_crop(img, label, self.crop_size, self.cat_max_ratio, rng)
        img, label = random_flip(img, label, self.flip_prob, rng)
        if self.photometric:
            img = photometric_distortion(np.ascontiguousarray(img), rng)
        return img, label

    def __call__(self, img: Image, label: Label, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        img, label = self.augment(img, label, rng)
        img_f, label = pad_to(normalize(img), label, self.crop_size)
        image_t = torch.from_numpy(np.ascontiguousarray(img_f.transpose(2, 0, 1)))
        label_t = torch.from_numpy(label.astype(np.int64))
        return image_t, label_t


def build_train_pipeline(data_cfg: DataConfig) -> TrainPipeline:
    return TrainPipeline.from_config(data_cfg)
