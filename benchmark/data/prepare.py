"""`nlbench prepare`: turn raw downloads into the layouts MMSeg (and nlbench) read.

- Cityscapes: ``gtFine/**/*_gtFine_polygons.json`` -> ``*_gtFine_labelTrainIds.png`` with the
  official cityscapesscripts label table and polygon rasterizer (what MMSeg's converter calls).
- VOC 2012 + SBD: SBD's ``cls/*.mat`` -> ``VOC2012/SegmentationClassAug/*.png``, and
  ``ImageSets/Segmentation/aug.txt`` (+ ``trainaug.txt``) with the image lists MMSeg's
  ``tools/dataset_converters/voc_aug.py`` writes: aug = (SBD train + SBD val) minus (VOC train + VOC
  val); trainaug = (VOC train + SBD train + SBD val) minus VOC val. MMSeg writes these sets in Python
  set order (which changes from run to run); we write them sorted.

Both are idempotent: existing outputs are skipped, and each run reports what it wrote and skipped.
Every file is written atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from benchmark.data.layouts import read_split_file
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_bytes, atomic_write_text

POLYGONS_SUFFIX = "_gtFine_polygons.json"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def png_bytes(array: np.ndarray, palette: Optional[List[int]] = None) -> bytes:
    """PNG encoding of a uint8 HxW (grey or, with ``palette``, palette-indexed) or HxWx3 (RGB) array."""
    im = Image.fromarray(array)
    if palette is not None:
        im.putpalette(palette)  # turns an "L" image into a "P" image with the same indices
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- Cityscapes


def polygons_to_train_ids(json_path: Path) -> np.ndarray:
    """Rasterize one ``*_gtFine_polygons.json`` into trainIds (uint8 HxW) with cityscapesscripts."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.helpers.labels import name2label
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    try:
        raw = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as exc:
        raise NLBenchError(f"cannot read polygons JSON: {exc}", json_path) from None
    for key in ("imgHeight", "imgWidth", "objects"):
        if key not in raw:
            raise NLBenchError("missing key in Cityscapes polygons JSON", json_path, key)
    # cityscapesscripts exits the process on an unknown label; check first so the error names the file.
    for i, obj in enumerate(raw["objects"]):
        label = obj.get("label")
        if not isinstance(label, str):
            raise NLBenchError("expected a label name", json_path, f"objects[{i}].label")
        if label not in name2label and not (label.endswith("group") and label[: -len("group")] in name2label):
            raise NLBenchError(f"label {label!r} is not in cityscapesscripts' label table", json_path,
                               f"objects[{i}].label")
        if not isinstance(obj.get("polygon"), list):
            raise NLBenchError("expected a list of [x, y] points", json_path, f"objects[{i}].polygon")
    annotation = Annotation()
    annotation.fromJsonFile(str(json_path))
    return np.array(createLabelImage(annotation, "trainIds"), dtype=np.uint8)


def prepare_cityscapes(src: Path, dst: Optional[Path] = None, log=print) -> Tuple[int, int]:
    """Write ``DST/gtFine/<split>/<city>/<n>_gtFine_labelTrainIds.png`` for every polygons JSON under
    ``SRC/gtFine``. Returns (written, skipped)."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src
    gt_dir = src / "gtFine"
    if not gt_dir.is_dir():
        raise NLBenchError("folder not found; expected the raw Cityscapes root containing gtFine/", gt_dir)
    sources = sorted(gt_dir.rglob(f"*{POLYGONS_SUFFIX}"))
    if not sources:
        raise NLBenchError(f"no *{POLYGONS_SUFFIX} files found", gt_dir)

    written = skipped = 0
    for json_path in sources:
        rel = json_path.relative_to(gt_dir).as_posix()[: -len(POLYGONS_SUFFIX)]
        out = dst / "gtFine" / f"{rel}{TRAIN_IDS_SUFFIX}"
        if out.is_file() and out.stat().st_mtime >= json_path.stat().st_mtime:
            skipped += 1
            continue
        atomic_write_bytes(out, png_bytes(polygons_to_train_ids(json_path)))
        written += 1
    log(f"cityscapes: wrote {written} *{TRAIN_IDS_SUFFIX} under {dst / 'gtFine'}, "
        f"skipped {skipped} already up to date")
    return written, skipped


# ----------------------------------------------------------------------------- VOC + SBD


def read_sbd_mat(path: Path) -> np.ndarray:
    """SBD's class segmentation: ``GTcls.Segmentation`` of a ``cls/*.mat`` file, as uint8 HxW."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise NLBenchError(f"cannot read MATLAB file ({exc})", path) from None
    try:
        seg = data["GTcls"][0]["Segmentation"][0]  # the indexing MMSeg's voc_aug.py uses
    except (KeyError, IndexError, ValueError, TypeError):
        raise NLBenchError("expected an SBD class struct with a Segmentation field", path,
                           "GTcls.Segmentation") from None
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.size == 0:
        raise NLBenchError(f"expected a 2-D segmentation, got shape {seg.shape}", path, "GTcls.Segmentation")
    if seg.min() < 0 or seg.max() > 255:
        raise NLBenchError(f"values {seg.min()}..{seg.max()} do not fit a uint8 label", path, "GTcls.Segmentation")
    return seg.astype(np.uint8)


def _sbd_dataset_dir(sbd: Path) -> Path:
    # Accept both SBD's benchmark_RELEASE/ (what MMSeg's converter takes) and its dataset/ folder.
    for candidate in (sbd, sbd / "dataset"):
        if (candidate / "cls").is_dir():
            return candidate
    raise NLBenchError("no cls/ folder here or in dataset/; expected SBD's benchmark_RELEASE or its dataset folder",
                       sbd)


def aug_lists(voc_train: List[str], voc_val: List[str], sbd_train: List[str],
              sbd_val: List[str]) -> Tuple[List[str], List[str]]:
    """(aug, trainaug) as MMSeg's voc_aug.py computes them, sorted."""
    sbd_all = set(sbd_train) | set(sbd_val)
    aug = sorted(sbd_all - set(voc_train) - set(voc_val))
    trainaug = sorted((set(voc_train) | sbd_all) - set(voc_val))
    return aug, trainaug


def prepare_voc(voc: Path, sbd: Path, log=print) -> Tuple[int, int]:
    """Convert SBD masks and write the aug split files. Returns (masks written, masks skipped)."""
    voc = Path(voc)
    voc2012 = voc / "VOC2012"
    if not voc2012.is_dir():
        raise NLBenchError("folder not found; --voc expects the VOCdevkit folder containing VOC2012/", voc2012)
    sbd_dir = _sbd_dataset_dir(Path(sbd))
    sets = voc2012 / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_split_file(sets / "train.txt"), read_split_file(sets / "val.txt")
    sbd_train, sbd_val = read_split_file(sbd_dir / "train.txt"), read_split_file(sbd_dir / "val.txt")


    out_dir = voc2012 / "SegmentationClassAug"
    written = skipped = 0
    mats = sorted((sbd_dir / "cls").glob("*.mat"))
    if not mats:
        raise NLBenchError("no .mat files found", sbd_dir / "cls")
    for mat in mats:
        out = out_dir / f"{mat.stem}.png"
        if out.is_file() and out.stat().st_mtime >= mat.stat().st_mtime:
            skipped += 1
            continue
        atomic_write_bytes(out, png_bytes(read_sbd_mat(mat)))
        written += 1
    log(f"voc: wrote {written} masks to {out_dir}, skipped {skipped} already up to date")

    aug, trainaug = aug_lists(voc_train, voc_val, sbd_train, sbd_val)
    missing = [n for n in aug if not (out_dir / f"{n}.png").is_file()]
    if missing:
        raise NLBenchError(f"{len(missing)} images of the aug split have no mask (e.g. {missing[0]}.png); "
                           f"expected every SBD train/val image in cls/", out_dir)
    for name, names in (("aug.txt", aug), ("trainaug.txt", trainaug)):
        path = sets / name
        text = "".join(f"{n}\n" for n in names)
        if path.is_file() and path.read_text() == text:
            log(f"voc: {path} unchanged ({len(names)} images)")
        else:
            atomic_write_text(path, text)
            log(f"voc: wrote {path} ({len(names)} images)")
    return written, skipped

