"""The 16 recipes against MMSegmentation 1.2.2's own NonLocal configs, field by field, without MMSeg:
tests/fixtures/mmseg_configs.json holds each config's values as mmengine resolves them (written by
scripts/dump_mmseg_configs.py in MMSeg's interpreter; docs/PARITY.md, "The configs as data").

A mismatch names the recipe, the recipe field and the config's value. Where nlbench follows the
MMSeg 0.x config that made the published row and 1.x differs, the data's ``exceptions`` section says
so, with the reason; such a field must then differ (an exception that no longer applies fails too).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from benchmark.data.transforms import MEAN_RGB, STD_RGB
from benchmark.recipe import list_recipe_paths, load_recipe

DATA = json.loads((Path(__file__).parent / "fixtures" / "mmseg_configs.json").read_text())
CONFIGS: Dict[str, dict] = DATA["configs"]
EXCEPTIONS: Dict[str, Dict[str, str]] = DATA.get("exceptions", {})
DATASET_TYPES = {"cityscapes": "CityscapesDataset", "ade20k": "ADE20KDataset", "voc12aug": "PascalVOCDataset"}
# nlbench's readers apply reduce_zero_label to ADE20K alone (benchmark/data/layouts.py).
REDUCES_ZERO_LABEL = {"ade20k"}


def _model_pairs(recipe, mm: dict) -> List[Tuple[str, Any, Any]]:
    model, dec, aux = recipe.model, mm["decode_head"], mm["auxiliary_head"]
    pairs = [("model.depth", model.depth, mm["depth"]),
             ("model.stem_channels", model.stem_channels, mm["stem_channels"]),
             ("model.base_channels", model.base_channels, mm["base_channels"]),
             ("model.pretrained", model.pretrained, mm["pretrained"]),
             ("model.num_classes", model.num_classes, dec["num_classes"]),
             ("model.align_corners", model.align_corners, dec["align_corners"]),
             ("model.decode_head.channels", model.decode_head.channels, dec["channels"]),
             ("model.decode_head.dropout", model.decode_head.dropout, dec["dropout"]),
             ("model.decode_head.loss_weight", model.decode_head.loss_weight, dec["loss_weight"]),
             ("model.non_local.reduction", model.non_local.reduction, dec["reduction"]),
             ("model.non_local.use_scale", model.non_local.use_scale, dec["use_scale"]),
             ("model.non_local.mode", model.non_local.mode, dec["mode"]),
             ("model.auxiliary_head", model.auxiliary_head is not None, aux is not None)]
    if aux is not None and model.auxiliary_head is not None:
        pairs += [("model.auxiliary_head.channels", model.auxiliary_head.channels, aux["channels"]),
                  ("model.auxiliary_head.dropout", model.auxiliary_head.dropout, aux["dropout"]),
                  ("model.auxiliary_head.loss_weight", model.auxiliary_head.loss_weight, aux["loss_weight"]),
                  ("model.num_classes (auxiliary head)", model.num_classes, aux["num_classes"]),
                  ("model.align_corners (auxiliary head)", model.align_corners, aux["align_corners"])]
    return pairs


def _data_pairs(recipe, mm: dict) -> List[Tuple[str, Any, Any]]:
    data = recipe.data
    return [("data.dataset", DATASET_TYPES[data.dataset], mm["dataset_type"]),
            ("data.data_root", data.data_root.rstrip("/"), mm["data_root"].rstrip("/")),
            ("data.img_scale", list(data.img_scale), mm["img_scale"]),
            ("data.img_scale (test resize)", list(data.img_scale), mm["test_img_scale"]),
            ("data.crop_size", list(data.crop_size), mm["crop_size"]),
            ("data.ratio_range", list(data.ratio_range), mm["ratio_range"]),
            ("data.cat_max_ratio", data.cat_max_ratio, mm["cat_max_ratio"]),
            ("data.flip_prob", data.flip_prob, mm["flip_prob"]),
            ("reduce_zero_label (data.dataset's reader)", data.dataset in REDUCES_ZERO_LABEL, mm["reduce_zero_label"]),
            ("data.imgs_per_gpu", data.imgs_per_gpu, mm["imgs_per_gpu"]),
            ("data.workers_per_gpu", data.workers_per_gpu, mm["workers_per_gpu"]),
            ("normalisation mean (RGB)", list(MEAN_RGB), mm["mean_rgb"]),
            ("normalisation std (RGB)", list(STD_RGB), mm["std_rgb"])]


def _schedule_pairs(recipe, mm: dict, name: str) -> List[Tuple[str, Any, Any]]:
    sched, test = recipe.schedule, recipe.test
    gpus, batch = map(int, re.search(r"_(\d+)xb(\d+)-", name).groups())  # MMSeg 1.x names: 4xb2 = 4 GPUs x 2
    return [("schedule.lr", sched.lr, mm["lr"]), ("schedule.momentum", sched.momentum, mm["momentum"]),
            ("schedule.weight_decay", sched.weight_decay, mm["weight_decay"]),
            ("schedule.max_iters", sched.max_iters, mm["max_iters"]),
            ("schedule.max_iters (poly end)", sched.max_iters, mm["poly_end"]),
            ("schedule.power", sched.power, mm["power"]), ("schedule.min_lr", sched.min_lr, mm["eta_min"]),
            ("schedule.checkpoint_interval", sched.checkpoint_interval, mm["checkpoint_interval"]),
            ("schedule.eval_interval", sched.eval_interval, mm["eval_interval"]),
            ("schedule.log_interval", sched.log_interval, mm["log_interval"]),
            ("runtime.cudnn_benchmark", recipe.runtime.cudnn_benchmark, mm["cudnn_benchmark"]),
            ("runtime.gpus (the name's NxbM)", recipe.runtime.gpus, gpus),
            ("data.imgs_per_gpu (the name's NxbM)", recipe.data.imgs_per_gpu, batch),
            ("test.mode", test.mode, CONFIGS[name]["test"]["mode"]),
            ("test.crop_size", list(test.crop_size) if test.crop_size else None, CONFIGS[name]["test"]["crop_size"]),
            ("test.stride", list(test.stride) if test.stride else None, CONFIGS[name]["test"]["stride"]),
            ("test.ms_flip_ratios", list(test.ms_flip_ratios), CONFIGS[name]["test"]["tta_scale_factors"])]


def field_pairs(name: str) -> List[Tuple[str, Any, Any]]:
    """(recipe field, recipe value, MMSeg config value) for every field the recipes encode."""
    recipe, mm = load_recipe(name), CONFIGS[name]
    return _data_pairs(recipe, mm["data"]) + _model_pairs(recipe, mm["model"]) + _schedule_pairs(
        recipe, mm["schedule"], name)


def test_every_recipe_has_its_config():
    assert DATA["mmseg_version"] == "1.2.2"
    assert sorted(p.stem for p in list_recipe_paths()) == sorted(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_recipe_matches_mmseg_config(name):
    allowed = EXCEPTIONS.get(name, {})
    wrong, stale = [], []
    for field, ours, theirs in field_pairs(name):
        same = ours == pytest.approx(theirs) if isinstance(theirs, float) else ours == theirs
        if field in allowed:
            if same:
                stale.append(f"{field}: listed as an exception ({allowed[field]}) but now equal ({ours!r})")
        elif not same:
            wrong.append(f"{field}: recipe {ours!r}, MMSeg 1.2.2 config {theirs!r}")
    assert not wrong and not stale, f"{name}:\n  " + "\n  ".join(wrong + stale)
