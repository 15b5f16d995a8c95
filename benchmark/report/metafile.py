"""`nlbench tables --metafile FILE`: the reproduced results in MMSegmentation 1.x's metafile.yaml layout
(its model index), so that tools reading MMSeg's model index read nlbench's results.

The layout follows MMSeg 1.x's ``configs/<algorithm>/metafile.yaml``: one ``Collections`` entry for the
method and one ``Models`` entry per row nlbench trained (recipe and profile; results on MMSeg's released
checkpoints are not reproductions and are left out):

    Name, In Collection, Config, Weights, Training log,
    Results: {Task, Dataset, Metrics: {mIoU, mIoU(ms+flip)}},
    Metadata: {Training Data, Batch Size, Architecture, Training Resources, Memory (GB),
               inference time (ms/im): [{value, hardware, backend, batch size, mode, resolution}]}

``inference time (ms/im)`` is written as MMSeg 0.x's metafiles wrote it: 1000 / fps, with the hardware,
backend, batch size, precision mode and resolution (the training crop, as 0.x wrote it) it was measured
with. Values describe what ran: a smoke row names its small trunk (``R-18-D8``) and the batch and
devices of its run, and its Name carries the profile so it never passes for the published row. Figures
that were not measured are left out, as MMSeg leaves out those it did not publish; Weights and Training
log are null when the run's work dir holds no checkpoint or log. Paths are relative to the repository
root, as MMSeg's Config paths are (absolute when they lie outside it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd
import yaml

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.io.layout import ResultsLayout
from benchmark.recipe import REPO_ROOT, Recipe, load_recipe, resolve_recipe_path
from benchmark.report.collect import TRAINED, of_source
from benchmark.report.references import device_class
from benchmark.run.records import Kind, Record, RowKey
from benchmark.run.schema import Provenance

COLLECTION = "NonLocalNet"
PAPER = {"Title": "Non-local Neural Networks", "URL": "https://arxiv.org/abs/1711.07971"}
TASK = "Semantic Segmentation"
MODES = {"float32": "FP32", "bfloat16": "BF16", "float16": "FP16"}


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when it lies below it (as MMSeg names configs), else absolute."""
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _round(value: Any, digits: int = 2) -> Optional[float]:
    if value is None or value != value:
        return None
    return round(float(value), digits)


def _inference_time(fps: Optional[float], bench: Optional[Record], recipe: Recipe) -> Optional[List[Dict[str, Any]]]:
    if not fps:
        return None
    prov = bench.provenance if bench is not None else Provenance()
    h, w = recipe.data.crop_size
    return [{
        "value": round(1000.0 / fps, 2),
        "hardware": device_class(prov.device_name) or "unknown",
        "backend": "PyTorch",
        "batch size": 1,
        "mode": MODES.get(str(prov.dtype), str(prov.dtype or "FP32").upper()),
        "resolution": f"({h},{w})",
    }]


def _metadata(row: pd.Series, published: pd.Series, recipe: Recipe, kinds: Dict[Kind, Record]) -> Dict[str, Any]:
    train = kinds.get(Kind.TRAIN) or next(iter(kinds.values()), None)
    prov = train.provenance if train is not None else Provenance()
    world = int(prov.world_size or 1)
    device = device_class(prov.device_name) or "unknown device"
    meta: Dict[str, Any] = {
        "Training Data": published["dataset"],
        "Batch Size": world * recipe.data.imgs_per_gpu,
        "Architecture": [f"R-{recipe.model.depth}-D8", COLLECTION],
        "Training Resources": f"{world}x {device}",
        "Memory (GB)": _round(row["mem_gb_mean"]),
        "inference time (ms/im)": _inference_time(_round(row["fps_mean"], 6), kinds.get(Kind.BENCH), recipe),
    }
    return {k: v for k, v in meta.items() if v is not None}


def _work_dir(layout: ResultsLayout, row: pd.Series, kinds: Dict[Kind, Record], seed: int) -> Path:
    """The seed's work dir of the resolved recipe its records were made with (seed<k>-<hash12>); the
    old seed<k> when that one is not there (work dirs made before the hash was part of the path)."""
    recipe_hash = next((r.provenance.recipe_hash for r in kinds.values() if r.provenance.recipe_hash), None)
    work = layout.work_dir(row["profile"], row["recipe"], seed, recipe_hash=recipe_hash)
    return work if work.is_dir() else layout.work_dir(row["profile"], row["recipe"], seed)


def model_entry(row: pd.Series, published: pd.Series, kinds: Dict[Kind, Record], results_dir: Path,
                seed: int) -> Dict[str, Any]:
    """One ``Models`` entry: a summary row (collect), its published row and one seed's newest records."""
    recipe = load_recipe(row["recipe"], profile=row["profile"])
    work = _work_dir(ResultsLayout.of(results_dir), row, kinds, seed)
    metrics = {"mIoU": _round(row["miou_mean"]), "mIoU(ms+flip)": _round(row["miou_ms_flip_mean"])}
    weights, log = work / "latest.pth", work / "train.log.jsonl"
    entry = {
        "Name": row["recipe"] if row["profile"] == "full" else f"{row['recipe']}_{row['profile']}",
        "In Collection": COLLECTION,
        "Results": {"Task": TASK, "Dataset": published["dataset"],
                    "Metrics": {k: v for k, v in metrics.items() if v is not None}},
        "Config": _relative(resolve_recipe_path(row["recipe"]), REPO_ROOT),
        "Metadata": _metadata(row, published, recipe, kinds),
        "Weights": _relative(weights, REPO_ROOT) if weights.is_file() else None,
        "Training log": _relative(log, REPO_ROOT) if log.is_file() else None,
        "Paper": dict(PAPER),
        "Framework": "PyTorch",
    }
    return entry


def metafile(summary: pd.DataFrame, published: pd.DataFrame, by_seed: Dict[RowKey, Dict[Kind, Record]],
             results_dir: Path) -> Dict[str, Any]:
    """The whole document: one collection, one model per summary row in the published order."""
    models = []
    order = {name: i for i, name in enumerate(published.index)}
    trained = of_source(summary, TRAINED)  # results on MMSeg's released checkpoints are not reproductions
    rows = sorted(trained.iterrows(), key=lambda item: (item[1]["profile"] != "full", item[1]["profile"],
                                                        order.get(item[1]["recipe"], len(order))))
    for _, row in rows:
        if row["recipe"] not in published.index:
            continue
        key = (row["recipe"], row["profile"], TRAINED)
        seed = min((s for (r, p, source, s) in by_seed if (r, p, source) == key), default=0)
        models.append(model_entry(row, published.loc[row["recipe"]], by_seed.get((*key, seed), {}), results_dir,
                                  seed))
    datasets = list(dict.fromkeys(m["Results"]["Dataset"] for m in models))
    collection = {"Name": COLLECTION, "License": "Apache License 2.0", "Metadata": {"Training Data": datasets},
                  "Paper": dict(PAPER), "README": "README.md", "Frameworks": ["PyTorch"]}
    return {"Collections": [collection], "Models": models}


def write_metafile(path: os.PathLike, document: Dict[str, Any]) -> Path:
    target = Path(path)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)
    try:
        atomic_write_text(target, text)
    except OSError as exc:
        raise NLBenchError(f"cannot write the metafile: {exc.strerror or exc}", target) from None
    return target
