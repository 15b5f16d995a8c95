"""Pre-flight checks of a data root (``nlbench doctor``, and ``run-all`` before any job): the layout's
split folders and files, image and label counts per split against the published dataset's, and a
sample of label files (values within the classes or the ignore index, sizes equal to their images').

The known ways a reproduction fails on its data: a root that is not there (or resolved against
another folder than meant), labels never converted (``*_labelTrainIds.png`` missing, RGB colour PNGs
instead of class indices), a VOC aug list naming files that were not extracted, an empty split.
Each finding is one line naming the absolute path and what was expected; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Union

from benchmark.data.layouts import (
    build_dataset,
    check_label_values,
    read_image_file,
    read_label_file,
    reduce_zero_label,
)
from benchmark.data.synthetic import check_synthetic_set
from benchmark.errors import NLBenchError
from benchmark.recipe import DataConfig, data_root_origin, resolve_data_root

Level = Literal["ok", "note", "problem"]

# Images (= labels) per split of the datasets the table was trained and evaluated on.
PUBLISHED_COUNTS: Dict[str, Dict[str, int]] = {
    "cityscapes": {"train": 2975, "val": 500},
    "ade20k": {"train": 20210, "val": 2000},
    "voc12aug": {"train": 10582, "val": 1449},
}
SPLITS = ("train", "val")
SAMPLE = 16  # label files decoded per split (spread evenly over it)
MAX_SAMPLE_PROBLEMS = 3  # per split; one broken conversion usually breaks every file alike


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``problem`` stops run-all, ``note`` is said (a smaller set, a setting
    that differs from the published one), ``ok`` says what was found."""

    level: Level
    check: str  # e.g. "data.train", "pretrained", "setting.batch", "slurm.partition"
    message: str  # one line naming the absolute path or key and what was expected

    def line(self) -> str:
        return f"{self.level:<7} {self.check}: {self.message}"


def problems(findings: List[Finding]) -> List[Finding]:
    return [f for f in findings if f.level == "problem"]


def check_data(data: DataConfig, data_root: Optional[Union[str, Path]] = None) -> List[Finding]:
    """Findings about the data root of ``data`` (``data_root`` overrides the recipe's)."""
    given = data_root if data_root is not None else data.data_root
    root = resolve_data_root(given)
    if not root.is_dir():
        if data.synthetic is not None:
            return [Finding("note", "data.root", f"{root}: not there yet; a synthetic {data.dataset} set is written "
                                                 "there on first use (data.synthetic)")]
        return [Finding("problem", "data.root",
                        f"{root}: data root not found{data_root_origin(given)}; expected MMSeg's {data.dataset} "
                        "layout (set data.data_root, pass --data-root, or set $NLBENCH_DATA_BASE)")]
    try:
        check_synthetic_set(data, data_root)  # a set of an older renderer would fail on the node
    except NLBenchError as exc:
        return [Finding("problem", "data.synthetic", str(exc))]
    findings = [Finding("ok", "data.root", f"{root}: {data.dataset} layout")]
    for split in SPLITS:
        findings += check_split(data, split, root)
    return findings


def check_split(data: DataConfig, split: str, root: Path) -> List[Finding]:
    """The split's files (the readers' own errors), its count against the published one, and a sample."""
    check = f"data.{split}"
    try:
        dataset = build_dataset(data, split, root)  # type: ignore[arg-type]
    except NLBenchError as exc:
        return [Finding("problem", check, str(exc))]
    out = [_count_finding(data.dataset, split, len(dataset), root)]
    bad = []
    for i in _sample(len(dataset)):
        message = _sample_problem(dataset, i)
        if message:
            bad.append(Finding("problem", check, message))
        if len(bad) >= MAX_SAMPLE_PROBLEMS:
            break
    return out + bad


def _count_finding(dataset: str, split: str, count: int, root: Path) -> Finding:
    published = PUBLISHED_COUNTS[dataset][split]
    check = f"data.{split}"
    if count == published:
        return Finding("ok", check, f"{root}: {count} image/label pairs, as published")
    smaller = "a smaller set than" if count < published else "more than"
    return Finding("note", check, f"{root}: {count} image/label pairs, {smaller} the published {published}: the "
                                  "results are not comparable with the table")


def _sample(n: int) -> List[int]:
    if n <= SAMPLE:
        return list(range(n))
    return sorted({round(k * (n - 1) / (SAMPLE - 1)) for k in range(SAMPLE)})


def _sample_problem(dataset, i: int) -> Optional[str]:
    """What is wrong with sample i's label (its values, its size against its image), or None."""
    sample = dataset.samples[i]
    try:
        label = read_label_file(sample.label)
        if dataset.reduce_zero_label:
            label = reduce_zero_label(label)
        check_label_values(label, dataset.num_classes, sample.label)
        image = read_image_file(sample.image)
    except NLBenchError as exc:
        return str(exc)
    if image.shape[:2] != label.shape:
        return str(dataset.size_error(i, image, label))
    return None


def dataset_counts(data: DataConfig, data_root: Optional[Union[str, Path]] = None) -> Optional[Dict[str, int]]:
    """Image/label pairs per split of the data root, or None where a split cannot be listed."""
    root = resolve_data_root(data_root if data_root is not None else data.data_root)
    try:
        return {split: len(build_dataset(data, split, root)) for split in SPLITS}  # type: ignore[arg-type]
    except NLBenchError:
        return None
