"""Readers for Cityscapes, ADE20K and Pascal VOC 2012 + Aug in the on-disk layouts MMSegmentation reads.

A *data root* means exactly what MMSeg's ``data_root`` means (``data/cityscapes``,
``data/ade/ADEChallengeData2016``, ``data/VOCdevkit/VOC2012``), so a user points nlbench at the
folders MMSeg already uses. Sample lists are built eagerly (file existence is checked up front, which
is only a ``stat`` per file); pixels are decoded and validated lazily, one sample at a time, and
``check()`` runs that validation over the whole split.

Decoding follows MMSeg's defaults: images with OpenCV (colour, EXIF orientation applied) and handed
out as RGB; labels with PIL as stored (a palette PNG gives its indices, not its colours).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.data.classes import CLASS_NAMES, PALETTES
from benchmark.errors import NLBenchError
from benchmark.recipe import IGNORE_INDEX, DataConfig, data_root_origin, resolve_data_root

Split = Literal["train", "val"]

# Folder names of each split inside the layouts.
_CITYSCAPES_SPLITS = {"train": "train", "val": "val"}
_ADE_SPLITS = {"train": "training", "val": "validation"}
# VOC 2012 + Aug: each split is a list of (split file, label folder), concatenated in this order,
# as MMSeg's pascal_voc12_aug config concatenates train.txt/SegmentationClass and aug.txt/SegmentationClassAug.
_VOC_SPLITS = {
    "train": (("ImageSets/Segmentation/train.txt", "SegmentationClass"),
              ("ImageSets/Segmentation/aug.txt", "SegmentationClassAug")),
    "val": (("ImageSets/Segmentation/val.txt", "SegmentationClass"),),
}


@dataclass(frozen=True)
class Sample:
    name: str  # the image's name relative to its folder, without suffix (MMSeg's basename)
    image: Path
    label: Path


class SegDataset:
    """One split of one dataset: a list of (image, label) files plus decoding and validation."""

    def __init__(self, dataset: str, split: str, root: Path, samples: Sequence[Sample],
                 reduce_zero_label: bool = False):
        self.dataset = dataset
        self.split = split
        self.root = root
        self.samples: Tuple[Sample, ...] = tuple(samples)
        self.reduce_zero_label = reduce_zero_label
        self.classes: Tuple[str, ...] = CLASS_NAMES[dataset]
        self.palette = PALETTES[dataset]
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"SegDataset({self.dataset}, {self.split}, {len(self)} samples, root={self.root})"

    def name(self, i: int) -> str:
        return self.samples[i].name

    def read_image(self, i: int) -> np.ndarray:
        """uint8 RGB, HxWx3."""
        return read_image_file(self.samples[i].image)

    def read_label(self, i: int) -> np.ndarray:
        """uint8 HxW train labels (reduce_zero_label applied), values in [0, classes) or 255."""
        path = self.samples[i].label
        label = read_label_file(path)
        if self.reduce_zero_label:
            label = reduce_zero_label(label)
        check_label_values(label, self.num_classes, path)
        return label

    def read_sample(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(image, label) of sample i, checked to be the same size."""
        image, label = self.read_image(i), self.read_label(i)
        if image.shape[:2] != label.shape:
            raise self.size_error(i, image, label)
        return image, label

    def size_error(self, i: int, image: np.ndarray, label: np.ndarray) -> NLBenchError:
        """The error for sample i whose label and image differ in size."""
        s = self.samples[i]
        return NLBenchError(f"label is {label.shape[0]}x{label.shape[1]} but its image {s.image} is "
                            f"{image.shape[0]}x{image.shape[1]} (HxW); expected the same size", s.label)

    def check(self) -> int:
        """Decode and validate every sample; raise on the first bad one. Returns the sample count."""
        for i in range(len(self)):
            self.read_sample(i)
        return len(self)


# ----------------------------------------------------------------------------- decoding


def read_image_file(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise NLBenchError("image file not found", path) from None
    except OSError as exc:
        raise NLBenchError(f"cannot read image: {exc.strerror or exc}", path) from None
    # IMREAD_COLOR is mmcv's 'color' flag: 3 channels (grey images expanded), EXIF orientation applied.
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise NLBenchError("cannot decode image (not a valid PNG/JPEG file)", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label_file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            label = np.array(im)
    except FileNotFoundError:
        raise NLBenchError("label file not found", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise NLBenchError(f"cannot decode label image ({exc})", path) from None
    if label.ndim != 2:
        raise NLBenchError(
            f"label image has shape {label.shape}; expected a single-channel or palette PNG (HxW)", path)
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise NLBenchError(f"label values span {label.min()}..{label.max()}; expected 0..255", path)
        label = label.astype(np.uint8)
    return label


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """MMSeg's reduce_zero_label: 0 ("other") -> 255, every other value v -> v - 1, 255 stays 255."""
    out = label.astype(np.int16) - 1
    out[label == 0] = IGNORE_INDEX
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out.astype(np.uint8)


def check_label_values(label: np.ndarray, num_classes: int, path: Path) -> None:
    if label.size == 0 or int(label.max()) < num_classes:
        return
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise NLBenchError(
            f"label values {shown} ({int(bad.sum())} pixels) are outside the {num_classes} classes "
            f"[0, {num_classes - 1}] and not the ignore index {IGNORE_INDEX}", path)


# ----------------------------------------------------------------------------- layouts


def build_dataset(data_cfg: DataConfig, split: Split, data_root: Optional[Union[str, Path]] = None) -> SegDataset:
    """The ``split`` ("train" or "val") of the recipe's dataset, read from ``data_root`` (default: the recipe's)."""
    if split not in ("train", "val"):
        raise NLBenchError(f"unknown split {split!r}; expected 'train' or 'val'")
    given = data_root if data_root is not None else data_cfg.data_root
    root = resolve_data_root(given)
    if not root.is_dir():
        hint = " (it is written on first use when data.synthetic is set)" if data_cfg.synthetic else ""
        raise NLBenchError(
            f"data root not found{data_root_origin(given)}; expected MMSeg's {data_cfg.dataset} layout here "
            f"(set data.data_root or pass --data-root){hint}", root)
    if data_cfg.dataset == "cityscapes":
        return cityscapes(root, split)
    if data_cfg.dataset == "ade20k":
        return ade20k(root, split)
    if data_cfg.dataset == "voc12aug":
        return voc12aug(root, split)
    raise NLBenchError(f"unknown dataset {data_cfg.dataset!r}", key="data.dataset")  # pragma: no cover


def cityscapes(root: Path, split: Split) -> SegDataset:
    """``leftImg8bit/<split>/<city>/<n>_leftImg8bit.png`` <-> ``gtFine/<split>/<city>/<n>_gtFine_labelTrainIds.png``."""
    img_dir = _need_dir(root / "leftImg8bit" / _CITYSCAPES_SPLITS[split])
    ann_dir = _need_dir(root / "gtFine" / _CITYSCAPES_SPLITS[split])
    img_suffix, ann_suffix = "_leftImg8bit.png", "_gtFine_labelTrainIds.png"
    samples = []
    # MMSeg lists every city recursively and sorts by image path.
    for img in sorted(img_dir.rglob(f"*{img_suffix}")):
        rel = img.relative_to(img_dir).as_posix()[: -len(img_suffix)]
        label = ann_dir / f"{rel}{ann_suffix}"
        samples.append(Sample(rel, img, _need_label(label, img)))
    return _nonempty(SegDataset("cityscapes", split, root, samples), img_dir, f"*/*{img_suffix}")


def ade20k(root: Path, split: Split) -> SegDataset:
    """``images/<training|validation>/*.jpg`` <-> ``annotations/<...>/*.png``, reduce_zero_label."""
    img_dir = _need_dir(root / "images" / _ADE_SPLITS[split])
    ann_dir = _need_dir(root / "annotations" / _ADE_SPLITS[split])
    samples = []
    for img in sorted(img_dir.rglob("*.jpg")):
        rel = img.relative_to(img_dir).as_posix()[: -len(".jpg")]
        samples.append(Sample(rel, img, _need_label(ann_dir / f"{rel}.png", img)))
    return _nonempty(SegDataset("ade20k", split, root, samples, reduce_zero_label=True), img_dir, "*.jpg")


def voc12aug(root: Path, split: Split) -> SegDataset:
    """Names from ``ImageSets/Segmentation/*.txt``: ``JPEGImages/<n>.jpg`` <-> ``<label folder>/<n>.png``."""
    img_dir = _need_dir(root / "JPEGImages")
    samples: List[Sample] = []
    for split_file, ann_folder in _VOC_SPLITS[split]:
        split_path = root / split_file
        ann_dir = _need_dir(root / ann_folder)
        for name in read_split_file(split_path):
            img = img_dir / f"{name}.jpg"
            if not img.is_file():
                raise NLBenchError(f"image {img} named in the split is missing", split_path)
            label = ann_dir / f"{name}.png"
            if not label.is_file():
                raise NLBenchError(f"label {label} named in the split is missing", split_path)
            samples.append(Sample(name, img, label))
    files = " + ".join(f for f, _ in _VOC_SPLITS[split])
    return _nonempty(SegDataset("voc12aug", split, root, samples), root, files)


def read_split_file(path: Path) -> List[str]:
    """One image name per line (blank lines skipped), as MMSeg reads ``ann_file``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NLBenchError("split file not found", path) from None
    except OSError as exc:
        raise NLBenchError(f"cannot read split file: {exc.strerror or exc}", path) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _need_dir(path: Path) -> Path:
    if not path.is_dir():
        raise NLBenchError("folder not found (is the data root in MMSeg's layout?)", path)
    return path


def _need_label(label: Path, image: Path) -> Path:
    if not label.is_file():
        raise NLBenchError(f"label for image {image} is missing", label)
    return label


def _nonempty(ds: SegDataset, where: Path, pattern: str) -> SegDataset:
    if len(ds) == 0:
        raise NLBenchError(f"the {ds.split} split is empty (no {pattern})", where)
    return ds
