"""``train.log.json``: the training log in MMSeg 0.x's form, beside ``train.log.jsonl``.

MMSeg's ``tools/analyze_logs.py`` and any script written for MMSeg's published logs read it as they
read those (docs/CURVES.md has the format). One ``LogSink`` of the training logger:
  - a meta line first (no ``mode``): env_info, seed, exp_name, config (the resolved recipe), and
    nlbench's own keys: max_iters, effective_batch, world_size, samples_per_gpu, and resumed_from
    when a resumed run appends to the file (nlbench keeps one file, MMSeg starts a new one);
  - a train line every log interval: mode, epoch, iter, lr, memory (MiB, CUDA only, as mmcv),
    data_time, the loss terms under the names of the 2020 logs (``decode.loss_seg``,
    ``aux.loss_seg``), loss, time; every float rounded to 5 decimals;
  - a val line after each evaluation: mode "val", epoch, iter = the number of validation images,
    lr, and aAcc/mIoU/mAcc as fractions (percent to 2 decimals, divided by 100, as MMSeg 0.x).
``epoch`` is the pass over the training set the iteration fell in, as mmcv's loader counted it.

Two placements of an evaluation (``PATTERNS``, docs/CURVES.md): "mmcv1.3.11" (the default, what
MMSeg 0.x writes with mmcv >= 1.3.11: the train line of the evaluation iteration, then the val line)
and "2020" (what the published NonLocal logs show, written before mmcv 1.3.11: no train line at an
evaluation iteration, the val line after the train line before it). ``as_2020_pattern`` turns a
finished log of the first kind into the second (the smoke reference logs are frozen that way).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any, Collection, Dict, List, Optional

import torch
import yaml

from benchmark import __version__
from benchmark.io.files import append_json_line, atomic_write_text
from benchmark.recipe import Recipe

MMSEG_LOG_NAME = "train.log.json"
DECIMALS = 5
# nlbench's loss terms -> the keys of the published 2020 NonLocal logs.
LOSS_KEYS = (("loss_decode", "decode.loss_seg"), ("loss_aux", "aux.loss_seg"), ("loss", "loss"))
PATTERNS = ("mmcv1.3.11", "2020")


def as_2020_pattern(lines: List[Dict[str, Any]], eval_iterations: Collection[int]) -> List[Dict[str, Any]]:
    """A 0.x log's lines (meta, train, val) as MMSeg wrote them before mmcv 1.3.11: the train line of
    an evaluation iteration (one of ``eval_iterations``) that a val line follows is dropped; val lines
    keep ``iter`` = the number of validation images. Lines already in that pattern are left as they are."""
    out: List[Dict[str, Any]] = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else {}
        is_val_next = "mIoU" in following or "aAcc" in following
        train = line.get("mode") == "train" and "mIoU" not in line and "aAcc" not in line
        if train and is_val_next and line.get("iter") in eval_iterations:
            continue
        out.append(line)
    return out


def _round(value: Any) -> Any:
    return round(value, DECIMALS) if isinstance(value, float) else value


def _env_info(device: str, world_size: int) -> str:
    lines = [f"sys.platform: {sys.platform}", f"Python: {platform.python_version()}",
             f"CUDA available: {torch.cuda.is_available()}"]
    if device.startswith("cuda") and torch.cuda.is_available():
        ids = ",".join(str(i) for i in range(world_size))
        lines.append(f"GPU {ids}: {torch.cuda.get_device_name(0)}")
    lines += [f"PyTorch: {torch.__version__}", f"nlbench: {__version__}"]
    return "\n".join(lines)


def _config_text(recipe: Recipe) -> str:
    """The resolved recipe as YAML, as MMSeg kept its config text (where the file was read from left out)."""
    body = {k: v for k, v in recipe.to_dict().items() if k != "source"}
    return yaml.safe_dump(body, sort_keys=False)


class MMSeg0xLogSink:
    """Writes ``train.log.json`` (rank 0), one O_APPEND write per line."""

    def __init__(self, path: Path, recipe: Recipe, fresh: bool, pattern: str = "mmcv1.3.11"):
        if pattern not in PATTERNS:
            raise ValueError(f"pattern {pattern!r}: expected one of {PATTERNS}")
        self.path, self.recipe, self.pattern = path, recipe, pattern
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write_text(path, "")  # a fresh log; an unwritable work dir is one clear error
        self.train_images: Optional[int] = None
        self.val_images: Optional[int] = None
        self.batch = recipe.data.imgs_per_gpu
        self.last_iteration = 0
        self.last_lr: Optional[float] = None

    def write(self, entry: Dict[str, Any]) -> None:
        event = entry.get("event")
        if event == "start":
            self._meta(entry)
        elif event == "eval":
            self._val(entry)
        elif event is None and "iteration" in entry:
            self._train(entry)

    def close(self) -> None:
        pass

    def _epoch(self, iteration: int) -> int:
        if not self.train_images:
            return 1
        return (max(iteration, 1) - 1) * self.batch // self.train_images + 1

    def _meta(self, entry: Dict[str, Any]) -> None:
        self.train_images, self.val_images = entry.get("train_images"), entry.get("val_images")
        self.batch = int(entry.get("effective_batch") or self.batch)
        world = int(entry.get("world_size") or 1)
        line = {"env_info": _env_info(str(entry.get("device", "")), world), "seed": self.recipe.runtime.seed,
                "exp_name": f"{self.recipe.name}.yaml", "config": _config_text(self.recipe),
                "nlbench_version": __version__, "max_iters": entry.get("max_iters"), "effective_batch": self.batch,
                "world_size": world, "samples_per_gpu": self.recipe.data.imgs_per_gpu,
                "eval_interval": self.recipe.schedule.eval_interval}
        if entry.get("resumed"):
            line["resumed_from"] = entry.get("iteration")
        append_json_line(self.path, line)

    def _train(self, entry: Dict[str, Any]) -> None:
        iteration = int(entry["iteration"])
        self.last_iteration, self.last_lr = iteration, _round(entry.get("lr"))
        sched = self.recipe.schedule
        if self.pattern == "2020" and sched.evaluates_at(iteration):
            return  # mmcv < 1.3.11: the eval hook emptied the log buffer before this line was written
        line: Dict[str, Any] = {"mode": "train", "epoch": self._epoch(iteration), "iter": iteration,
                                "lr": self.last_lr}
        if entry.get("mem_kind") == "cuda_max_allocated" and entry.get("peak_mem_gb") is not None:
            line["memory"] = int(round(entry["peak_mem_gb"] * 1024))
        if "data_time" in entry:
            line["data_time"] = _round(entry["data_time"])
        line.update({theirs: _round(entry[ours]) for ours, theirs in LOSS_KEYS if ours in entry})
        if "time" in entry:
            line["time"] = _round(entry["time"])
        append_json_line(self.path, line)

    def _val(self, entry: Dict[str, Any]) -> None:
        line: Dict[str, Any] = {"mode": "val", "epoch": self._epoch(self.last_iteration),
                                "iter": self.val_images or 0, "lr": self.last_lr}
        for key in ("aAcc", "mIoU", "mAcc"):
            value = entry.get(key)
            line[key] = None if value is None else _round(round(float(value), 2) / 100.0)
        append_json_line(self.path, line)
