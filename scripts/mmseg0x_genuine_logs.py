"""Genuine MMSeg 0.x training logs for tests/curves/test_curves_genuine.py (tests/fixtures/mmseg0x/).

Runs MMSeg 0.30.0's own training loop (mmseg.apis.train_segmentor, mmcv 1.7.2's IterBasedRunner and
TextLoggerHook) on the CPU: a thin ResNet-18 + NLHead on a synthetic Cityscapes set in the real layout
(``nlbench synth cityscapes DATA_ROOT`` or any smoke run's data root), a train line every 10
iterations, an evaluation every 40. Its interpreter needs mmsegmentation 0.30.0, mmcv 1.7.2 (installed
from source without compiled ops: ``pip install --no-build-isolation --no-deps mmcv==1.7.2`` after
``setuptools<80`` and ``wheel``), addict, yapf, terminaltables, prettytable, opencv-python-headless and
this project's torch; never nlbench's own environment. Stand-ins replace torchvision (mmcv's checkpoint
module imports it) and mmcv.ops (no compiled ops); the model uses BN.

    python scripts/mmseg0x_genuine_logs.py WORK_DIR 120 DATA_ROOT                       # run1
    python scripts/mmseg0x_genuine_logs.py WORK_DIR2 120 DATA_ROOT WORK_DIR/iter_80.pth  # run2 (resumed)

About 5 minutes for 120 iterations on one core.
"""

import sys
import time
import types

work, max_iters, data_root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
resume = sys.argv[4] if len(sys.argv) > 4 else None
tv = types.ModuleType("torchvision")
tv.__version__ = "0.18.0"
tv.models = types.ModuleType("torchvision.models")
sys.modules["torchvision"] = tv
sys.modules["torchvision.models"] = tv.models
ops = types.ModuleType("mmcv.ops")


class SyncBatchNorm:  # placeholder: the config uses BN
    pass


def _ops_getattr(name):
    if name.startswith("_"):
        raise AttributeError(name)
    return type(name, (), {})


ops.SyncBatchNorm = SyncBatchNorm
ops.__getattr__ = _ops_getattr
sys.modules["mmcv.ops"] = ops
import mmcv  # noqa: E402
import torch  # noqa: E402
from mmcv import Config  # noqa: E402
from mmseg.apis import train_segmentor  # noqa: E402
from mmseg.datasets import build_dataset  # noqa: E402
from mmseg.models import build_segmentor  # noqa: E402
from mmseg.utils import collect_env  # noqa: E402

norm = dict(type="BN", requires_grad=True)
cfg = Config(
    dict(
        norm_cfg=norm,
        model=dict(
            type="EncoderDecoder",
            pretrained=None,
            backbone=dict(
                type="ResNetV1c",
                depth=18,
                stem_channels=16,
                base_channels=16,
                num_stages=4,
                out_indices=(0, 1, 2, 3),
                dilations=(1, 1, 2, 4),
                strides=(1, 2, 1, 1),
                norm_cfg=norm,
                norm_eval=False,
                style="pytorch",
                contract_dilation=True,
            ),
            decode_head=dict(
                type="NLHead",
                in_channels=128,
                in_index=3,
                channels=32,
                dropout_ratio=0.1,
                reduction=2,
                use_scale=True,
                mode="embedded_gaussian",
                num_classes=19,
                norm_cfg=norm,
                align_corners=False,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            ),
            auxiliary_head=dict(
                type="FCNHead",
                in_channels=64,
                in_index=2,
                channels=16,
                num_convs=1,
                concat_input=False,
                dropout_ratio=0.1,
                num_classes=19,
                norm_cfg=norm,
                align_corners=False,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
            ),
            train_cfg=dict(),
            test_cfg=dict(mode="whole"),
        ),
        dataset_type="CityscapesDataset",
        data_root=data_root,
        data=dict(
            samples_per_gpu=2,
            workers_per_gpu=0,
            persistent_workers=False,
            train=dict(
                type="CityscapesDataset",
                data_root=data_root,
                img_dir="leftImg8bit/train",
                ann_dir="gtFine/train",
                pipeline=[
                    dict(type="LoadImageFromFile"),
                    dict(type="LoadAnnotations"),
                    dict(type="Resize", img_scale=(128, 64), ratio_range=(0.5, 2.0)),
                    dict(type="RandomCrop", crop_size=(32, 64), cat_max_ratio=0.75),
                    dict(type="RandomFlip", prob=0.5),
                    dict(type="PhotoMetricDistortion"),
                    dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
                    dict(type="Pad", size=(32, 64), pad_val=0, seg_pad_val=255),
                    dict(type="DefaultFormatBundle"),
                    dict(type="Collect", keys=["img", "gt_semantic_seg"]),
                ],
            ),
            val=dict(
                type="CityscapesDataset",
                data_root=data_root,
                img_dir="leftImg8bit/val",
                ann_dir="gtFine/val",
                pipeline=[
                    dict(type="LoadImageFromFile"),
                    dict(
                        type="MultiScaleFlipAug",
                        img_scale=(128, 64),
                        flip=False,
                        transforms=[
                            dict(type="Resize", keep_ratio=True),
                            dict(type="RandomFlip"),
                            dict(
                                type="Normalize",
                                mean=[123.675, 116.28, 103.53],
                                std=[58.395, 57.12, 57.375],
                                to_rgb=True,
                            ),
                            dict(type="ImageToTensor", keys=["img"]),
                            dict(type="Collect", keys=["img"]),
                        ],
                    ),
                ],
            ),
        ),
        log_config=dict(interval=10, hooks=[dict(type="TextLoggerHook", by_epoch=False)]),
        dist_params=dict(backend="gloo"),
        log_level="INFO",
        load_from=None,
        resume_from=resume,
        workflow=[("train", 1)],
        cudnn_benchmark=False,
        optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005),
        optimizer_config=dict(),
        lr_config=dict(policy="poly", power=0.9, min_lr=1e-4, by_epoch=False),
        runner=dict(type="IterBasedRunner", max_iters=max_iters),
        checkpoint_config=dict(by_epoch=False, interval=40),
        evaluation=dict(interval=40, metric="mIoU", pre_eval=True),
    )
)
cfg.work_dir = work
cfg.gpu_ids = [0]
cfg.device = "cpu"
cfg.seed = 0
if resume:
    _load = torch.load
    torch.load = lambda *a, **k: _load(*a, **{**k, "map_location": "cpu", "weights_only": False})
    from mmcv.runner import IterBasedRunner

    _resume = IterBasedRunner.resume
    IterBasedRunner.resume = lambda self, checkpoint, resume_optimizer=True, map_location="default": _resume(
        self, checkpoint, resume_optimizer, "cpu"
    )
model = build_segmentor(cfg.model)
model.init_weights()
datasets = [build_dataset(cfg.data.train)]
model.CLASSES = datasets[0].CLASSES
model.PALETTE = datasets[0].PALETTE
env = "\n".join(f"{k}: {v}" for k, v in collect_env().items())
meta = dict(env_info=env, seed=0, exp_name="genuine_nl_r18.py", config=cfg.pretty_text)
mmcv.mkdir_or_exist(work)
train_segmentor(
    model, datasets, cfg, distributed=False, validate=True, timestamp=time.strftime("%Y%m%d_%H%M%S"), meta=meta
)
