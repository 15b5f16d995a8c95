"""The start of every script that runs inside MMSeg's own interpreter (docs/PARITY.md): shared by
tests/test_parity_mmseg.py and scripts/cpu_vs_mmseg.py. It only imports and calls MMSeg.

mmcv-lite has no compiled ops, and mmseg.models imports a few at load time (none of them used by
ResNetV1c, NLHead, FCNHead or EncoderDecoder): a stand-in module takes their place. ``to_bn`` turns
a config's SyncBN into BN (one CPU process has no process group); ``seg_samples`` wraps labels
as MMSeg's data samples."""

MMSEG_PREAMBLE = r'''
import json, os, sys, types
import numpy as np
import torch

class _OpsStandIn(types.ModuleType):
    """mmcv-lite has no compiled ops; mmseg.models imports some at load time. None is used here."""
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})

sys.modules["mmcv.ops"] = _OpsStandIn("mmcv.ops")

import mmseg
from mmengine.config import Config

CONFIGS = os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", "nonlocal_net")


def to_bn(node):
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for v in node.values():
            to_bn(v)
    elif isinstance(node, list):
        for v in node:
            to_bn(v)


def seg_samples(label):
    """MMSeg data samples, one per (H, W) label map of ``label`` (B, H, W)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for i in range(label.shape[0]):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=label[i:i + 1])
        hw = tuple(label.shape[-2:])
        s.set_metainfo(dict(img_shape=hw, ori_shape=hw, pad_shape=hw))
        samples.append(s)
    return samples

'''
