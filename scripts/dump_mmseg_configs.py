"""Write tests/fixtures/mmseg_configs.json: the values of MMSegmentation 1.2.2's 16 NonLocal configs that
nlbench's recipes encode, as MMSeg resolves them (mmengine's Config: every _base_ merged), for
tests/test_mmseg_configs.py to compare the recipes with, field by field, without MMSeg installed.

Runs in MMSeg 1.2.2's interpreter (set up as docs/PARITY.md says), from the repository root:

    MMSEG_VENV/bin/python scripts/dump_mmseg_configs.py [--out tests/fixtures/mmseg_configs.json]

Values a config leaves to a class's default (the backbone's stem/base width, a pipeline step's
reduce_zero_label, a loss's avg_non_ignore) are read from that class's signature in the installed
MMSeg, so that they are MMSeg's too. Only MMSeg and mmengine are imported and called.
"""

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from mmseg_side import MMSEG_PREAMBLE  # noqa: E402

MMSEG = {}
exec(MMSEG_PREAMBLE, MMSEG)  # mmcv-lite's missing compiled ops stood in for; CONFIGS

import mmseg  # noqa: E402
from mmengine.config import Config  # noqa: E402

CONFIGS = MMSEG["CONFIGS"]


def default_of(cls, name):
    """The default of ``cls``'s argument ``name``, from the first class in its MRO that names it
    (subclasses often pass ``**kwargs`` on)."""
    for klass in cls.__mro__:
        parameter = inspect.signature(klass.__init__).parameters.get(name)
        if parameter is not None:
            return parameter.default
    raise KeyError(f"{cls.__name__} takes no argument {name!r}")


def step(pipeline, kind):
    """The pipeline step of type ``kind`` (None when absent)."""
    return next((s for s in pipeline if s["type"] == kind), None)


def reduce_zero_label(cfg, in_pipeline):
    """LoadAnnotations' reduce_zero_label, whose None means the dataset's (in MMSeg 1.x; the ADE20K
    dataset's default is True)."""
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules()
    if in_pipeline is not None:
        return in_pipeline
    dataset = cfg.train_dataloader.dataset
    dataset = dataset.get("datasets", [dataset])[0]  # VOC aug: a ConcatDataset of VOC and SBD
    return dataset.get("reduce_zero_label", default_of(DATASETS.get(cfg.dataset_type), "reduce_zero_label"))


def data_values(cfg):
    train = cfg.train_pipeline
    resize, crop, flip = step(train, "RandomResize"), step(train, "RandomCrop"), step(train, "RandomFlip")
    annotations = step(train, "LoadAnnotations")
    test_resize = step(cfg.test_pipeline, "Resize")
    return {
        "dataset_type": cfg.dataset_type, "data_root": cfg.data_root,
        "img_scale": list(resize["scale"]), "test_img_scale": list(test_resize["scale"]),
        "test_keep_ratio": test_resize["keep_ratio"],
        "crop_size": list(crop["crop_size"]), "ratio_range": list(resize["ratio_range"]),
        "cat_max_ratio": crop["cat_max_ratio"], "flip_prob": flip["prob"],
        "reduce_zero_label": reduce_zero_label(cfg, annotations.get("reduce_zero_label")),
        "photometric_distortion": step(train, "PhotoMetricDistortion") is not None,
        "imgs_per_gpu": cfg.train_dataloader.batch_size, "workers_per_gpu": cfg.train_dataloader.num_workers,
        "mean_rgb": list(cfg.data_preprocessor.mean), "std_rgb": list(cfg.data_preprocessor.std),
        "bgr_to_rgb": cfg.data_preprocessor.bgr_to_rgb, "seg_pad_val": cfg.data_preprocessor.seg_pad_val,
    }


def head_values(head):
    from mmseg.models.losses import CrossEntropyLoss

    loss = head.loss_decode
    return {"in_channels": head.in_channels, "channels": head.channels, "dropout": head.dropout_ratio,
            "loss_weight": loss.loss_weight, "loss_type": loss.type, "use_sigmoid": loss.use_sigmoid,
            "avg_non_ignore": loss.get("avg_non_ignore", default_of(CrossEntropyLoss, "avg_non_ignore")),
            "num_classes": head.num_classes, "align_corners": head.align_corners}


def model_values(cfg):
    from mmseg.models.backbones import ResNetV1c

    model, backbone, decode = cfg.model, cfg.model.backbone, cfg.model.decode_head
    aux = model.get("auxiliary_head")
    return {
        "backbone": backbone.type, "depth": backbone.depth,
        "stem_channels": backbone.get("stem_channels", default_of(ResNetV1c, "stem_channels")),
        "base_channels": backbone.get("base_channels", default_of(ResNetV1c, "base_channels")),
        "strides": list(backbone.strides), "dilations": list(backbone.dilations),
        "contract_dilation": backbone.contract_dilation, "norm": backbone.norm_cfg.type,
        "pretrained": model.pretrained,
        "decode_head": {"type": decode.type, **head_values(decode), "reduction": decode.reduction,
                        "use_scale": decode.use_scale, "mode": decode.mode},
        "auxiliary_head": None if aux is None else {"type": aux.type, "num_convs": aux.num_convs,
                                                    "concat_input": aux.concat_input, **head_values(aux)},
    }


def schedule_values(cfg):
    (poly,) = [s for s in cfg.param_scheduler if s["type"] == "PolyLR"]
    optimizer = cfg.optim_wrapper.optimizer
    return {
        "optimizer": optimizer.type, "lr": optimizer.lr, "momentum": optimizer.momentum,
        "weight_decay": optimizer.weight_decay, "max_iters": cfg.train_cfg.max_iters,
        "power": poly.power, "eta_min": poly.eta_min, "poly_begin": poly.begin, "poly_end": poly.end,
        "checkpoint_interval": cfg.default_hooks.checkpoint.interval, "eval_interval": cfg.train_cfg.val_interval,
        "log_interval": cfg.default_hooks.logger.interval, "cudnn_benchmark": cfg.env_cfg.cudnn_benchmark,
    }


def test_values(cfg):
    test = cfg.model.test_cfg
    tta = [[t.get("scale_factor") for t in group] for group in cfg.tta_pipeline[1]["transforms"][:1]]
    return {"mode": test.mode, "crop_size": list(test["crop_size"]) if "crop_size" in test else None,
            "stride": list(test["stride"]) if "stride" in test else None,
            "tta_scale_factors": tta[0] if tta else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "mmseg_configs.json"))
    out = Path(parser.parse_args().out)
    configs = {}
    for name in sorted(f for f in os.listdir(CONFIGS) if f.endswith(".py")):
        cfg = Config.fromfile(os.path.join(CONFIGS, name))
        configs[name[:-3]] = {"data": data_values(cfg), "model": model_values(cfg),
                              "schedule": schedule_values(cfg), "test": test_values(cfg)}
    document = {"mmseg_version": mmseg.__version__, "source": "scripts/dump_mmseg_configs.py",
                "configs": configs}
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"{len(configs)} configs -> {out}")


if __name__ == "__main__":
    main()
