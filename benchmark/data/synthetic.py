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

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageDraw

from benchmark.data.prepare import TRAIN_IDS_SUFFIX, png_bytes, polygons_to_train_ids
from benchmark.errors import NLBenchError
from benchmark.recipe import DataConfig, resolve_data_root

# `nlbench synth` names -> recipe dataset names.
SYNTH_DATASETS = {"cityscapes": "cityscapes", "ade20k": "ade20k", "voc": "voc12aug"}
_RECIPE_TO_SYNTH = {v: k for k, v in SYNTH_DATASETS.items()}

Polygon = List[Tuple[int, int]]

# Classes the scenes use, in each dataset's stored encoding.
_CITYSCAPES_OBJECTS = ("building", "car", "cargroup")
_ADE_OBJECTS = (1, 13, 0)  # wall, person, and "other" (0 -> ignored after reduction)
_VOC_OBJECTS = (1, 4, 15)  # aeroplane, boat, person

# Every class a scene uses, in each dataset's label encoding (Cityscapes: train ids), background first:
# four, so that every pair of them differs in a cue the training pipeline never blurs. The k-th has
# hue 90k degrees (_class_colour): MMSeg's PhotoMetricDistortion turns a whole image's hue by at most
# 36 degrees, less than half the 90 between neighbours on the wheel (with six classes 60 apart, a
# small model sometimes took the floor for the car in one instruction set and not the other). Its
# stripes run horizontally for even k, vertically for odd k (_class_style): neighbours on the wheel
# differ in both, and a horizontal flip or a rescale changes neither orientation. The classes'
# palette colours were too close for this (ADE20K's sky and car: cyan and blue). docs/SMOKE.md.
_SCENE_CLASSES = {
    "cityscapes": (0, 10, 2, 13),  # road, sky, building, car
    "ade20k": (4, 3, 1, 13),  # floor, sky, wall, person
    "voc12aug": (0,) + _VOC_OBJECTS,
}
_ORIENTATIONS = (0.0, np.pi / 2)
_PERIODS = (4.0, 6.5, 9.0, 5.5)

# Bumped whenever the same parameters would draw other pixels or labels, so that a set written by an
# older nlbench is refused instead of silently trained on (the smoke baseline is a function of it).
RENDERER_VERSION = 2
STAMP_NAME = "synthetic.json"

# Label pixels this close to an object's outline are void (ignored by the loss and the metric), as
# real VOC marks a band about 5 pixels wide around its objects. Without it the smoke mIoU measured how
# sharply a small model had learnt to place edges at output stride 8, which moves by several points
# with the seed; the classes' interiors it learns to saturation (docs/SMOKE.md). The images are drawn
# from the labels without the band: they show the whole scene.
VOID_RADIUS = 2

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


def _outline(poly: Polygon, radius: int = VOID_RADIUS) -> List[Polygon]:
    """Polygons covering a polygon's outline ``2 * radius + 1`` pixels wide: a quadrilateral along each
    edge and a square on each vertex. A two-point polygon is a line (the horizon)."""
    pieces = []
    for k, (x0, y0) in enumerate(poly):
        x1, y1 = poly[(k + 1) % len(poly)]
        length = max(float(np.hypot(x1 - x0, y1 - y0)), 1e-6)
        nx, ny = -(y1 - y0) / length * radius, (x1 - x0) / length * radius
        pieces.append([(round(x0 + nx), round(y0 + ny)), (round(x1 + nx), round(y1 + ny)),
                       (round(x1 - nx), round(y1 - ny)), (round(x0 - nx), round(y0 - ny))])
        pieces.append([(x0 - radius, y0 - radius), (x0 + radius, y0 - radius), (x0 + radius, y0 + radius),
                       (x0 - radius, y0 + radius)])
    return pieces


def _with_void(objects: Sequence[Tuple[Any, Polygon]], void: Any,
               lines: Sequence[Polygon] = ()) -> List[Tuple[Any, Polygon]]:
    """``objects`` with the outline of each (and each of ``lines``) drawn right after it as ``void``."""
    out = [(void, piece) for line in lines for piece in _outline(line)]
    for value, poly in objects:
        out += [(value, poly)] + [(void, piece) for piece in _outline(poly)]
    return out


def _draw(h: int, w: int, fill: int, objects: Sequence[Tuple[int, Polygon]]) -> np.ndarray:
    im = Image.new("L", (w, h), fill)
    draw = ImageDraw.Draw(im)
    for value, poly in objects:
        draw.polygon(poly, fill=int(value))
    return np.array(im)


def _class_style(dataset: str, value: int) -> Tuple[float, float]:
    """(angle, period) of a class's stripes; any class outside the scene (ignored, "other") a fixed
    pseudo-random pair."""
    scene = _SCENE_CLASSES[dataset]
    if value in scene:
        k = scene.index(value)
        return _ORIENTATIONS[k % 2], _PERIODS[k]
    style = np.random.default_rng([7919, int(value)])
    return style.uniform(0, np.pi), style.uniform(3.0, 12.0)


def _class_texture(dataset: str, value: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The class's colour and stripes (fixed per class), with per-image phase and noise."""
    colour = _class_colour(dataset, value)
    angle, period = _class_style(dataset, value)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
    # Squeeze the colour into 32..223 so stripes and noise mostly stay inside 0..255.
    base = 32.0 + 0.75 * np.asarray(colour, dtype=np.float32)
    return base[None, None, :] + 25.0 * wave[..., None] + rng.normal(0, 6.0, size=(h, w, 3))


def _class_colour(dataset: str, value: int) -> Tuple[int, int, int]:
    """RGB of a scene class: the k-th of n hues evenly spread around the wheel, saturated, brighter
    for even k; anything else (ignored, "other") a fixed grey."""
    scene = _SCENE_CLASSES[dataset]
    if value not in scene:
        return (90, 90, 90)
    k = scene.index(value)
    hsv = np.array([[[round(180 * k / len(scene)), 230, 240 if k % 2 == 0 else 170]]], np.uint8)  # OpenCV hue: 0..179
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


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
            scene = [("sky", _band(h, w, 0, horizon)), ("road", _band(h, w, horizon, h - 1))]
            shapes = [(_CITYSCAPES_OBJECTS[int(rng.integers(len(_CITYSCAPES_OBJECTS)))], _shape(rng, h, w))
                      for _ in range(int(rng.integers(2, 5)))]
            shapes.append(("ego vehicle", _band(h, w, h - max(2, h // 10), h - 1)))
            if rng.random() < 0.5:  # cityscapesscripts skips labels with a negative id
                shapes.insert(-1, ("license plate", _shape(rng, h // 2, w // 2)))
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            polygons = gt / f"{stem}_gtFine_polygons.json"
            # The image shows the scene without the void band; the polygons (and so the labels) have it.
            _write_polygons(polygons, h, w, scene + shapes)
            image = render_image(polygons_to_train_ids(polygons), "cityscapes", rng)
            _write_polygons(polygons, h, w, scene + _with_void(shapes, "unlabeled", [[(0, horizon), (w - 1, horizon)]]))
            _write_png(gt / f"{stem}{TRAIN_IDS_SUFFIX}", polygons_to_train_ids(polygons))
            _write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)


def _write_polygons(path: Path, h: int, w: int, objects: Sequence[Tuple[str, Polygon]]) -> None:
    doc = {"imgHeight": h, "imgWidth": w,
           "objects": [{"label": name, "polygon": [list(p) for p in poly]} for name, poly in objects]}
    path.write_text(json.dumps(doc, indent=1))


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
            image = render_image(_draw(h, w, 4, objects), "ade20k", rng)
            # void: 0 ("other"), which reduce_zero_label turns into the ignore index
            raw = _draw(h, w, 4, [objects[0]] + _with_void(objects[1:], 0, [[(0, horizon), (w - 1, horizon)]]))
            stem = f"{prefix}_{i + 1:08d}"
            _write_png(root / "annotations" / folder / f"{stem}.png", raw)
            _write_image(root / "images" / folder / f"{stem}.jpg", image)


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
            # VOC marks a band around its objects 255 ("void"); SBD's masks have no such band.
            if ann_folder == "SegmentationClass":
                label, pal = _draw(h, w, 0, _with_void(shapes, 255)), palette
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
        _stamp(dataset, train, val, (h, w), seed).write(tmp / STAMP_NAME)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclasses.dataclass(frozen=True)
class _Stamp:
    """What a synthetic set was written from: kept in the set as synthetic.json."""

    dataset: str
    train: int
    val: int
    size: Tuple[int, int]
    seed: int
    renderer: int = RENDERER_VERSION

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")


def _stamp(dataset: str, train: int, val: int, size_hw: Tuple[int, int], seed: int) -> _Stamp:
    return _Stamp(dataset, train, val, (int(size_hw[0]), int(size_hw[1])), seed)


def _check_stamp(root: Path, want: _Stamp, own_root: bool) -> None:
    """A synthetic set already on disk must come from this renderer and, at the recipe's own data root,
    from the recipe's parameters (a root given by --data-root may hold any set, e.g. `nlbench synth`'s).
    A folder without a stamp is left alone: it may be a real dataset the user pointed the recipe at."""
    path = root / STAMP_NAME
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict) or found.get("renderer") != want.renderer:
        renderer = found.get("renderer") if isinstance(found, dict) else None
        raise NLBenchError(f"this synthetic set was written by another nlbench (renderer {renderer}, expected "
                           f"{want.renderer}); remove the folder and it is written again on first use",
                           root, "data.synthetic")
    if own_root and dict(found, size=tuple(found.get("size") or ())) != dataclasses.asdict(want):
        raise NLBenchError(f"this synthetic set was written with other parameters (found {found}, expected "
                           f"{dataclasses.asdict(want)}); remove the folder and it is written again on first use",
                           root, "data.synthetic")


def check_synthetic_set(data_cfg: DataConfig, data_root: Optional[Union[str, Path]] = None) -> None:
    """Raise NLBenchError when the synthetic set at the data root (``data.synthetic`` set, the folder
    there) was written by another renderer or, at the recipe's own root, with other parameters: what
    ``ensure_dataset`` checks before using it, and doctor's data checks before a run (data/checks.py)."""
    root = resolve_data_root(data_root if data_root is not None else data_cfg.data_root)
    syn = data_cfg.synthetic
    if syn is not None and root.exists():
        want = _stamp(_RECIPE_TO_SYNTH[data_cfg.dataset], syn.train, syn.val, tuple(syn.size), syn.seed)
        _check_stamp(root, want, own_root=data_root is None)


def ensure_dataset(data_cfg: DataConfig, data_root: Optional[Union[str, Path]] = None) -> Path:
    """The data root; when it is missing and the recipe sets ``data.synthetic``, write it first.

    Safe when several processes (ranks, jobs) call it at once: each writes its own temporary copy
    and the first rename wins; the others discard theirs."""
    root = resolve_data_root(data_root if data_root is not None else data_cfg.data_root)
    syn = data_cfg.synthetic
    if syn is None:
        return root
    if root.exists():
        check_synthetic_set(data_cfg, data_root)
        return root
    try:
        write_synthetic(_RECIPE_TO_SYNTH[data_cfg.dataset], root, syn.train, syn.val, tuple(syn.size), syn.seed)
    except (NLBenchError, OSError):
        if not root.is_dir():  # lost a race to another writer: fine; anything else is a real error
            raise
    return root

