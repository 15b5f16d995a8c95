"""EncoderDecoder: backbone -> decode head (stage 4) [+ auxiliary head (stage 3) for training].

``model(img)`` returns the decode head's logits resized (bilinear, the model's align_corners) to the
size of ``img``, which is what MMSeg's ``encode_decode`` returns; test-time resizing, sliding windows
and augmentation live in ``benchmark.engine.inference``.

``model.losses(img, label)`` follows MMSeg's ``loss_by_feat``: each head's logits are resized
(bilinear, align_corners) to the label's size, then cross-entropy with ignore_index=255 and MMSeg's
default reduction (``avg_non_ignore=False``: per-pixel losses, ignored pixels counting as 0, averaged
over *all* pixels), times the head's loss weight.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.heads import FCNHead, NLHead
from benchmark.models.layers import NormLayer
from benchmark.models.resnet import ResNetV1c
from benchmark.recipe import IGNORE_INDEX


def mmseg_cross_entropy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """MMSeg's CrossEntropyLoss with avg_non_ignore=False: sum over labelled pixels / all pixels."""
    per_pixel = F.cross_entropy(logits, label, reduction="none", ignore_index=ignore_index)
    return per_pixel.mean()


class EncoderDecoder(nn.Module):
    def __init__(
        self,
        backbone: ResNetV1c,
        decode_head: nn.Module,
        auxiliary_head: Optional[nn.Module] = None,
        align_corners: bool = False,
        decode_loss_weight: float = 1.0,
        aux_loss_weight: float = 0.4,
        decode_in_index: int = 3,
        aux_in_index: int = 2,
    ):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.align_corners = align_corners
        self.decode_loss_weight = decode_loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.decode_in_index = decode_in_index
        self.aux_in_index = aux_in_index
        self.num_classes: int = decode_head.num_classes

    def resize(self, logits: torch.Tensor, size) -> torch.Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=self.align_corners)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(img, keep=(self.decode_in_index,))
        logits = self.decode_head(feats[self.decode_in_index])
        return self.resize(logits, img.shape[-2:])

    def losses(self, img: torch.Tensor, label: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Training losses for a batch: ``img`` (B,3,H,W) float, ``label`` (B,H,W) integer."""
        label = label.long()
        feats = self.backbone(img)
        decode = self.resize(self.decode_head(feats[self.decode_in_index]), label.shape[-2:])
        out = {"loss_decode": self.decode_loss_weight * mmseg_cross_entropy(decode, label)}
        if self.auxiliary_head is not None:
            aux = self.resize(self.auxiliary_head(feats[self.aux_in_index]), label.shape[-2:])
            out["loss_aux"] = self.aux_loss_weight * mmseg_cross_entropy(aux, label)
        else:
            out["loss_aux"] = torch.zeros((), device=decode.device, dtype=out["loss_decode"].dtype)
        out["loss"] = out["loss_decode"] + out["loss_aux"]
        return out


def build_segmentor(model_cfg, norm_layer: NormLayer = nn.BatchNorm2d) -> EncoderDecoder:
    """The NonLocal segmentor of a recipe's ``model`` section (a ``benchmark.recipe.ModelConfig``),
    initialised as MMSeg initialises it from scratch (see each module's ``init_weights``).

    ``norm_layer`` is BatchNorm2d; distributed training converts it with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` (state-dict keys are unchanged).
    """
    backbone = ResNetV1c(model_cfg.depth, stem_channels=model_cfg.stem_channels,
                         base_channels=model_cfg.base_channels, norm_layer=norm_layer)
    stage3, stage4 = backbone.out_channels[2], backbone.out_channels[3]
    nl = model_cfg.non_local
    decode_head = NLHead(
        in_channels=stage4,
        channels=model_cfg.decode_head.channels,
        num_classes=model_cfg.num_classes,
        reduction=nl.reduction,
        use_scale=nl.use_scale,
        mode=nl.mode,
        impl=nl.impl,
        dropout=model_cfg.decode_head.dropout,
        norm_layer=norm_layer,
    )
    auxiliary_head = None
    aux_weight = 0.0
    if model_cfg.auxiliary_head is not None:
        auxiliary_head = FCNHead(
            in_channels=stage3,
            channels=model_cfg.auxiliary_head.channels,
            num_classes=model_cfg.num_classes,
            num_convs=1,
            concat_input=False,
            dropout=model_cfg.auxiliary_head.dropout,
            norm_layer=norm_layer,
        )
        aux_weight = model_cfg.auxiliary_head.loss_weight
    return EncoderDecoder(
        backbone,
        decode_head,
        auxiliary_head,
        align_corners=model_cfg.align_corners,
        decode_loss_weight=model_cfg.decode_head.loss_weight,
        aux_loss_weight=aux_weight,
    )
