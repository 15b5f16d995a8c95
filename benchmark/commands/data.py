"""`nlbench synth` and `nlbench prepare`: datasets on disk."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Optional, Tuple

from benchmark.data.prepare import prepare_cityscapes, prepare_voc
from benchmark.data.synthetic import write_synthetic
from benchmark.errors import NLBenchError


def synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["cityscapes", "ade20k", "voc"])
    p.add_argument("--out", required=True, help="data root to write")
    p.add_argument("--train", type=int, default=8, help="training images (default 8)")
    p.add_argument("--val", type=int, default=4, help="validation images (default 4)")
    p.add_argument("--size", default="64x128", help="image size HxW (default 64x128)")
    p.add_argument("--seed", type=int, default=0)


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


def prepare_arguments(p: argparse.ArgumentParser) -> None:
    prep = p.add_subparsers(dest="_dataset", metavar="DATASET", required=True)
    pc = prep.add_parser("cityscapes", help="make *_gtFine_labelTrainIds.png from *_gtFine_polygons.json")
    pc.set_defaults(_target="benchmark.commands.data:prepare_cityscapes_command")
    pc.add_argument("--src", required=True, help="raw Cityscapes root (with gtFine/)")
    pc.add_argument("--dst", help="data root to write into (default: --src)")
    pv = prep.add_parser("voc", help="make SegmentationClassAug/*.png and aug.txt from SBD .mat files")
    pv.set_defaults(_target="benchmark.commands.data:prepare_voc_command")
    pv.add_argument("--voc", required=True, help="VOCdevkit folder (containing VOC2012/)")
    pv.add_argument("--sbd", required=True, help="SBD benchmark_RELEASE/dataset folder (with cls/, train.txt, val.txt)")


def prepare_cityscapes_command(src: str, dst: Optional[str] = None) -> int:
    """`nlbench prepare cityscapes`."""
    prepare_cityscapes(Path(src), Path(dst) if dst else None)
    return 0


def prepare_voc_command(voc: str, sbd: str) -> int:
    """`nlbench prepare voc`."""
    prepare_voc(Path(voc), Path(sbd))
    return 0
