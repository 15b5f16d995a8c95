"""Test pipeline and test modes, as MMSegmentation runs them (used by predict, eval and bench).

Test pipeline: the uint8 RGB image is resized (OpenCV bilinear) to fit ``data.img_scale`` keeping
its aspect ratio, normalised with ImageNet mean/std in RGB order, and not padded.
Test modes: ``whole`` runs the model on the whole resized image; ``slide`` runs it on a grid of
overlapping windows, sums each window's logits into place and divides by how many windows covered
each pixel. Either way the logits are then resized (bilinear, the model's align_corners) back to the
original image size.

ms+flip follows MMSeg 0.x ``--aug-test``, which made the published mIoU(ms+flip): each ratio r
scales the *test scale* (int(w*r), int(h*r)), the image is keep-ratio resized to that, inferred with
and without a horizontal flip; each view's logits are resized to the original size, turned into
softmax probabilities and flipped back, and the 2 x len(ratios) probability maps are averaged.

The model is only ever called as ``model(x)`` on a (1, 3, h, w) tensor, so a test can wrap it to see
which sizes and flips it was shown.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.data.resize import keep_ratio_size, resize_image
from benchmark.data.transforms import MEAN_RGB, STD_RGB
from benchmark.engine.steps import autocast

# One definition of MMSeg's RGB normalisation, shared with the training pipeline.
MEAN, STD = MEAN_RGB, STD_RGB

Device = Union[str, torch.device]


def keep_freed_memory_for_reuse() -> bool:
    """Process-wide (glibc only): keep freed memory for reuse instead of returning it to the OS.

    Full-resolution activations are 128-256 MB each; glibc serves such blocks with mmap and unmaps
    them on free, so every layer's output page-faults in afresh. For a 1024x2048 R-50 forward on CPU
    that was ~5 million page faults and ~7 s of system time; with large blocks kept on the heap it is
    ~0.5 million and under 1 s, at the cost of ~0.6 GB more peak RSS. Meant for command-line
    processes (predict); returns whether it was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    largest = ctypes.c_int(2**31 - 1)
    return bool(mallopt(m_mmap_threshold, largest)) and bool(mallopt(m_trim_threshold, largest))


def to_input_tensor(image_rgb_uint8: np.ndarray, device: Device, channels_last: bool = False) -> torch.Tensor:
    """HxWx3 uint8 RGB -> normalised (1, 3, H, W) float32 tensor on ``device``."""
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb_uint8.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image_rgb_uint8)).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float()
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if channels_last:
        # The permuted image already passes is_contiguous(channels_last) at batch 1, but its batch
        # stride makes torch's convolutions treat it as NCHW; a fresh channels_last copy is unambiguous.
        x = x.clone(memory_format=torch.channels_last)
    return x


def resize_logits(logits: torch.Tensor, size_hw: Tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) logits to ``size_hw`` (a no-op at the same size)."""
    if tuple(logits.shape[-2:]) == tuple(size_hw):
        return logits
    return F.interpolate(logits, size=tuple(size_hw), mode="bilinear", align_corners=align_corners)


def whole_inference(model: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """Logits (N, C, h, w) at the size of ``img`` from one forward pass."""
    return model(img)


def slide_windows(h: int, w: int, crop_hw: Tuple[int, int],
                  stride_hw: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """MMSeg's window grid as (y1, y2, x1, x2): windows start every ``stride`` pixels, the last one
    is shifted back to end at the image border, and a window never exceeds the image."""
    h_crop, w_crop = crop_hw
    h_stride, w_stride = stride_hw
    h_grids = max(h - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2 = min(i * h_stride + h_crop, h)
            x2 = min(j * w_stride + w_crop, w)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


def slide_inference(
    model: nn.Module,
    img: torch.Tensor,
    crop_hw: Tuple[int, int],
    stride_hw: Tuple[int, int],
    num_classes: int,
) -> torch.Tensor:
    """Overlapping-window inference: window logits summed in place, divided by the coverage count."""
    n, _, h, w = img.shape
    preds = img.new_zeros((n, num_classes, h, w))
    count = img.new_zeros((n, 1, h, w))
    for y1, y2, x1, x2 in slide_windows(h, w, crop_hw, stride_hw):
        preds[:, :, y1:y2, x1:x2] += model(img[:, :, y1:y2, x1:x2])
        count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def infer(model: nn.Module, img: torch.Tensor, recipe) -> torch.Tensor:
    """Logits at the size of the (already resized, normalised) ``img`` in the recipe's test mode."""
    test = recipe.test
    if test.mode == "slide":
        return slide_inference(model, img, tuple(test.crop_size), tuple(test.stride), model.num_classes)
    return whole_inference(model, img)


def _align_corners(model: nn.Module) -> bool:
    return bool(getattr(model, "align_corners", False))


def inference_autocast(recipe, device: torch.device):
    """The one place inference picks its precision: ``test.amp`` (null: fp32), never the training's
    ``runtime.amp`` (MMSeg 1.x evaluates in fp32 whatever the training's amp; docs/FIDELITY.md)."""
    return autocast(recipe.test.amp, device)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {got}")


def predict_logits(model: nn.Module, image_rgb_uint8: np.ndarray, recipe, device: Device = "cpu",
                   scale: Optional[Sequence[int]] = None, channels_last: Optional[bool] = None) -> torch.Tensor:
    """(C, H, W) float logits at the original image size, on ``device``, from the recipe's test
    pipeline and test mode. ``scale`` replaces ``recipe.data.img_scale`` (used by ms+flip);
    ``channels_last``: the input's layout (default: the recipe's ``runtime.channels_last``, off
    as in MMSeg: NCHW, so that oneDNN runs MMSeg's convolution kernels; docs/FIDELITY.md)."""
    _check_image(image_rgb_uint8)
    h, w = image_rgb_uint8.shape[:2]
    size = keep_ratio_size(h, w, tuple(scale if scale is not None else recipe.data.img_scale))
    with torch.inference_mode():
        layout = recipe.runtime.channels_last if channels_last is None else channels_last
        x = to_input_tensor(resize_image(image_rgb_uint8, size), device, layout)
        with inference_autocast(recipe, x.device):
            logits = infer(model, x, recipe)
            return resize_logits(logits, (h, w), _align_corners(model))[0].float()


def ms_flip_scales(img_scale: Sequence[int], ratios: Sequence[float]) -> List[Tuple[int, int]]:
    """MMSeg 0.x MultiScaleFlipAug: each ratio scales the test scale, truncated to int."""
    return [(int(img_scale[0] * r), int(img_scale[1] * r)) for r in ratios]


def predict_ms_flip_probs(model: nn.Module, image_rgb_uint8: np.ndarray, recipe,
                          device: Device = "cpu") -> torch.Tensor:
    """(C, H, W) softmax probabilities averaged over scales x {no flip, flip} (MMSeg 0.x aug_test)."""
    _check_image(image_rgb_uint8)
    h, w = image_rgb_uint8.shape[:2]
    align_corners = _align_corners(model)
    total: Optional[torch.Tensor] = None
    views = 0
    with torch.inference_mode():
        for scale in ms_flip_scales(recipe.data.img_scale, recipe.test.ms_flip_ratios):
            resized = resize_image(image_rgb_uint8, keep_ratio_size(h, w, scale))
            x = to_input_tensor(resized, device, recipe.runtime.channels_last)
            for flip in (False, True):
                view = x.flip(-1) if flip else x
                with inference_autocast(recipe, x.device):
                    logits = resize_logits(infer(model, view, recipe), (h, w), align_corners).float()
                probs = logits.softmax(dim=1)
                if flip:
                    probs = probs.flip(-1)
                total = probs if total is None else total + probs
                views += 1
    assert total is not None
    return (total / views)[0]
