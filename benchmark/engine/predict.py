"""`nlbench predict`: segment one image with a checkpoint.

Reads a PNG/JPEG of any size as RGB, runs the recipe's test pipeline and test mode, writes the
argmax as a colour PNG in the dataset's palette and, with ``--logits``, the float32 logits (C, H, W)
at the image's resolution as .npy. All outputs are written atomically.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from benchmark.data.classes import PALETTES
from benchmark.data.layouts import read_image_file
from benchmark.engine.distributed import use_tf32
from benchmark.engine.inference import predict_logits
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_bytes
from benchmark.mmseg_checkpoint import load_weights
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import Recipe


def colorize(pred: np.ndarray, dataset: str) -> np.ndarray:
    """HxW class indices -> HxWx3 uint8 RGB in the dataset's palette."""
    palette = np.asarray(PALETTES[dataset], dtype=np.uint8)
    if pred.max(initial=0) >= len(palette):
        raise NLBenchError(f"prediction has class {int(pred.max())} but the {dataset} palette has "
                           f"{len(palette)} colours")
    return palette[pred]


def encode_png(image_rgb: np.ndarray, path: Path) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image_rgb[:, :, ::-1]))
    if not ok:
        raise NLBenchError("could not encode the prediction as PNG", path)
    return buf.tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def predict(recipe: Recipe, checkpoint: Path, image_path: Path, out: Path, logits_out: Optional[Path] = None,
            device: Optional[torch.device] = None) -> dict:
    """Run one prediction and write the outputs; returns a small summary."""
    device = device or torch.device("cpu")
    use_tf32(recipe.runtime.tf32)
    image = read_image_file(image_path)
    model = build_segmentor(recipe.model)
    load_weights(model, checkpoint)
    model.to(device).eval()
    if recipe.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    logits = predict_logits(model, image, recipe, device)
    pred = logits.argmax(dim=0).to(torch.uint8).cpu().numpy()
    seconds = time.perf_counter() - start
    atomic_write_bytes(out, encode_png(colorize(pred, recipe.data.dataset), out))
    if logits_out is not None:
        atomic_write_bytes(logits_out, npy_bytes(logits.float().cpu().numpy()))
    return {"height": image.shape[0], "width": image.shape[1], "classes": int(logits.shape[0]), "seconds": seconds}


def check_target(path: Path, flag: str) -> None:
    """Refuse an output that cannot be written before the model runs, so that a failed prediction
    leaves neither output behind (the second one failing would leave the first)."""
    if path.is_dir():
        raise NLBenchError("cannot write: is a directory", path, flag)
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise NLBenchError(f"cannot write: {existing} is a file, not a folder", path, flag)

