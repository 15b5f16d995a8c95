"""Small synthetic datasets in the real on-disk layouts, so the real readers run everywhere.

Each image is a scene of polygons (background regions plus a few shapes) on a handful of the
dataset's classes. A class's pixels get the class's own colour and stripe texture plus noise, so a
model can learn the labels from the pixels. Files, folders, formats and encodings are the real ones:

- cityscapes: ``leftImg8bit/{train,val}/<city>/<n>_leftImg8bit.png``, the official
  ``gtFine/.../<n>_gtFine_polygons.json`` (label names from cityscapesscripts' table, including
  ``*group`` names, an ignored ``ego vehicle`` and a skipped ``license plate``), and the
  ``_gtFine_labelTrainIds.png`` that ``nlbench prepare cityscapes`` makes from them.
- ade20k: ``images/{training,validation}/ADE_*.jpg`` and ``annotations/.../*.png`` with raw values
  (0 = other, 1..150), so reduce_zero_label has work to do.
- voc: ``JPEGImages/*.jpg``, palette PNGs in ``SegmentationClass`` (255 outlines, as VOC has),
  grey PNGs in ``SegmentationClassAug`` (what SBD conversion writes), and ``train.txt``, ``aug.txt``,
  ``val.txt`` in ``ImageSets/Segmentation``.

Everything is a function of the seed. A set is written into a temporary folder beside the target and
renamed into place, so a reader never sees half a dataset and two processes may race safely.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageDraw

from benchmark.data.classes import PALETTES
from benchmark.data.prepare import TRAIN_IDS_SUFFIX, png_bytes, polygons_to_train_ids
from benchmark.errors import NLBenchError
from benchmark.recipe import DataConfig, resolve_data_root

# `nlbench synth` names -> recipe dataset names.
SYNTH_DATASETS = {"cityscapes": "cityscapes", "ade20k": "ade20k", "voc": "voc12aug"}
_RECIPE_TO_SYNTH = {v: k for k, v in SYNTH_DATASETS.items()}

Polygon = List[Tuple[int, int]]

# Classes the scenes use, in each dataset's stored encoding.
_CITYSCAPES_OBJECTS = ("building", "vegetation", "car", "person", "cargroup", "persongroup")
_ADE_OBJECTS = (1, 5, 13, 21, 0)  # wall, tree, person, car, and "other" (0 -> ignored after reduction)
_VOC_OBJECTS = (1, 2, 4, 15)  # aeroplane, bicycle, boat, person: red, green, blue, light pink

# Every class a scene uses, in each dataset's label encoding (Cityscapes: train ids), background first.
# Each gets stripes of its own orientation and period (_class_style), so a class stays recognisable
# under the training pipeline's hue, saturation and contrast changes, not only by its colour.
_SCENE_CLASSES = {
    "cityscapes": (0, 10, 2, 8, 13, 11),  # road, sky, building, vegetation, car, person
    "ade20k": (4, 3, 1, 5, 13, 21),  # floor, sky, wall, tree, person, car
    "voc12aug": (0,) + _VOC_OBJECTS,
}

_CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau")}


# ----------------------------------------------------------------------------- scenes and pixels


def _shape(rng: np.random.Generator, h: int, w: int) -> Polygon:
    """A rectangle, triangle or ellipse (as a polygon) of 20-50% of the image on each edge."""
    bh, bw = rng.uniform(0.2, 0.5) * h, rng.uniform(0.2, 0.5) * w
    cy, cx = rng.uniform(bh / 2, h - bh / 2), rng.uniform(bw / 2, w - bw / 2)
    kind = int(rng.integers(3))
    if kind == 0:
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif kind == 1:
        pts = [(rng.uniform(-1, 1), -1), (1, 1), (-1, 1)]
    else:
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        pts = list(zip(np.cos(angles), np.sin(angles)))
    return [(int(round(cx + px * bw / 2)), int(round(cy + py * bh / 2))) for px, py in pts]


def _band(h: int, w: int, y0: int, y1: int) -> Polygon:
    return [(0, y0), (w - 1, y0), (w - 1, y1), (0, y1)]


def _draw(h: int, w: int, fill: int, objects: Sequence[Tuple[int, Polygon]]) -> np.ndarray:
    im = Image.new("L", (w, h), fill)
    draw = ImageDraw.Draw(im)
    for value, poly in objects:
        draw.polygon(poly, fill=int(value))
    return np.array(im)


def _class_style(dataset: str, value: int) -> Tuple[float, float]:
    """(angle, period) of a class's stripes: evenly spread orientations and three periods over the
    scene's classes; any other value (ignored, "other") a fixed pseudo-random pair."""
    scene = _SCENE_CLASSES[dataset]
    if value in scene:
        k = scene.index(value)
        return k * np.pi / len(scene), (4.0, 6.5, 9.0)[k % 3]
    style = np.random.default_rng([7919, int(value)])
    return style.uniform(0, np.pi), style.uniform(3.0, 12.0)


def _class_texture(dataset: str, value: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The class's colour and stripes (fixed per class), with per-image phase and noise."""
    colour = _colour(dataset, value)
    angle, period = _class_style(dataset, value)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
    # Squeeze the palette colour into 32..223 so stripes and noise mostly stay inside 0..255.
    base = 32.0 + 0.75 * np.asarray(colour, dtype=np.float32)
    return base[None, None, :] + 25.0 * wave[..., None] + rng.normal(0, 6.0, size=(h, w, 3))


def _colour(dataset: str, value: int) -> Tuple[int, int, int]:
    """A class's palette colour (distinct by design); ignored or "other" pixels a fixed grey."""
    palette = PALETTES[dataset]
    index = value - 1 if dataset == "ade20k" else value  # ADE's stored labels are 1-based
    return palette[index] if 0 <= index < len(palette) else (90, 90, 90)


def render_image(class_map: np.ndarray, dataset: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB image whose pixels show the class of ``class_map`` (stored label values) at each position."""
    h, w = class_map.shape
    img = np.zeros((h, w, 3), np.float32)
    for value in np.unique(class_map):
        mask = class_map == value
        img[mask] = _class_texture(dataset, int(value), h, w, rng)[mask]
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok, f"OpenCV could not encode {path}"
    path.write_bytes(data.tobytes())


def _write_png(path: Path, array: np.ndarray, palette: Optional[List[int]] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(array, palette))


def voc_colormap() -> List[int]:
    """VOC's 256-entry PNG palette (bit-interleaved class index), flattened RGB."""
    flat = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        flat += [r, g, b]
    return flat


# ----------------------------------------------------------------------------- the three layouts


def _cityscapes(root: Path, counts: Dict[str, int], h: int, w: int, seed: int) -> None:
    for split_code, (split, n) in enumerate(counts.items()):
        cities = _CITIES[split]
        for i in range(n):
            rng = np.random.default_rng([seed, split_code, i])
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            horizon = int(rng.uniform(0.3, 0.5) * h)
            objects = [("sky", _band(h, w, 0, horizon)), ("road", _band(h, w, horizon, h - 1))]
            for _ in range(int(rng.integers(2, 5))):
                objects.append((_CITYSCAPES_OBJECTS[int(rng.integers(len(_CITYSCAPES_OBJECTS)))], _shape(rng, h, w)))
            if rng.random() < 0.5:  # cityscapesscripts skips labels with a negative id
                objects.append(("license plate", _shape(rng, h // 2, w // 2)))
            objects.append(("ego vehicle", _band(h, w, h - max(2, h // 10), h - 1)))
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            polygons = gt / f"{stem}_gtFine_polygons.json"
            doc = {"imgHeight": h, "imgWidth": w,
                   "objects": [{"label": name, "polygon": [list(p) for p in poly]} for name, poly in objects]}
            polygons.write_text(json.dumps(doc, indent=1))
            train_ids = polygons_to_train_ids(polygons)
            _write_png(gt / f"{stem}{TRAIN_IDS_SUFFIX}", train_ids)
            image = render_image(train_ids, "cityscapes", rng)
            _write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)


def _ade20k(root: Path, counts: Dict[str, int], h: int, w: int, seed: int) -> None:
    folders = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}
    for split_code, (split, n) in enumerate(counts.items()):
        folder, prefix = folders[split]
        for i in range(n):
            rng = np.random.default_rng([seed, split_code, i])
            horizon = int(rng.uniform(0.3, 0.6) * h)
            objects = [(3, _band(h, w, 0, horizon))]  # sky above, floor (4) below
            objects += [(_ADE_OBJECTS[int(rng.integers(len(_ADE_OBJECTS)))], _shape(rng, h, w))
                        for _ in range(int(rng.integers(2, 5)))]
            raw = _draw(h, w, 4, objects)
            stem = f"{prefix}_{i + 1:08d}"
            _write_png(root / "annotations" / folder / f"{stem}.png", raw)
            _write_image(root / "images" / folder / f"{stem}.jpg", render_image(raw, "ade20k", rng))


def _voc(root: Path, counts: Dict[str, int], h: int, w: int, seed: int) -> None:
    n_train = counts["train"]
    # train.txt (SegmentationClass) gets the first half, aug.txt (SegmentationClassAug) the rest.
    parts = [("train.txt", "SegmentationClass", "2007", max(1, (n_train + 1) // 2), 0),
             ("aug.txt", "SegmentationClassAug", "2008", n_train - max(1, (n_train + 1) // 2), 2),
             ("val.txt", "SegmentationClass", "2010", counts["val"], 1)]
    palette = voc_colormap()
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split_file, ann_folder, year, n, split_code in parts:
        names = []
        for i in range(n):
            rng = np.random.default_rng([seed, split_code, i])
            shapes = [(_VOC_OBJECTS[int(rng.integers(len(_VOC_OBJECTS)))], _shape(rng, h, w))
                      for _ in range(int(rng.integers(1, 4)))]
            classes = _draw(h, w, 0, shapes)
            image = render_image(classes, "voc12aug", rng)
            # VOC marks object boundaries as 255 ("void"); SBD's masks have no such outlines.
            if ann_folder == "SegmentationClass":
                im = Image.fromarray(classes)
                draw = ImageDraw.Draw(im)
                for _, poly in shapes:
                    draw.polygon(poly, outline=255)
                label, pal = np.array(im), palette
            else:
                label, pal = classes, None
            name = f"{year}_{i:06d}"
            names.append(name)
            _write_png(root / ann_folder / f"{name}.png", label, pal)
            _write_image(root / "JPEGImages" / f"{name}.jpg", image)
        (root / ann_folder).mkdir(parents=True, exist_ok=True)
        (sets / split_file).write_text("".join(f"{n}\n" for n in names))


# ----------------------------------------------------------------------------- public API


def write_synthetic(dataset: str, out: Union[str, Path], train: int = 8, val: int = 4,
                    size_hw: Tuple[int, int] = (64, 128), seed: int = 0) -> Path:
    """Write a synthetic ``dataset`` ("cityscapes", "ade20k" or "voc") data root at ``out``.

    Refuses to overwrite a non-empty folder. The set appears at ``out`` in one rename."""
    if dataset not in SYNTH_DATASETS:
        raise NLBenchError(f"unknown synthetic dataset {dataset!r}; expected one of {', '.join(SYNTH_DATASETS)}")
    if train < 1 or val < 1:
        raise NLBenchError(f"expected at least 1 train and 1 val image, got {train} and {val}")
    h, w = size_hw
    if h < 8 or w < 8:
        raise NLBenchError(f"image size {h}x{w} is too small; expected at least 8x8")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NLBenchError("already exists and is not an empty folder; remove it or choose another --out", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        writer = {"cityscapes": _cityscapes, "ade20k": _ade20k, "voc": _voc}[dataset]
        writer(tmp, {"train": train, "val": val}, h, w, seed)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ensure_dataset(data_cfg: DataConfig, data_root: Optional[Union[str, Path]] = None) -> Path:
    """The data root; when it is missing and the recipe sets ``data.synthetic``, write it first.

    Safe when several processes (ranks, jobs) call it at once: each writes its own temporary copy
    and the first rename wins; the others discard theirs."""
    root = resolve_data_root(data_root if data_root is not None else data_cfg.data_root)
    syn = data_cfg.synthetic
    if root.exists() or syn is None:
        return root
    try:
        write_synthetic(_RECIPE_TO_SYNTH[data_cfg.dataset], root, syn.train, syn.val, tuple(syn.size), syn.seed)
    except (NLBenchError, OSError):
        if not root.is_dir():  # lost a race to another writer: fine; anything else is a real error
            raise
    return root


def _parse_size(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise NLBenchError(f"--size expects HxW, e.g. 64x128; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def synth_command(dataset: str, out: str, train: int = 8, val: int = 4, size: str = "64x128", seed: int = 0) -> int:
    """`nlbench synth`."""
    size_hw = _parse_size(size)
    root = write_synthetic(dataset, out, train, val, size_hw, seed)
    print(f"synth: wrote a {dataset} set ({train} train, {val} val, {size_hw[0]}x{size_hw[1]}, "
          f"seed {seed}) to {root}")
    return 0
