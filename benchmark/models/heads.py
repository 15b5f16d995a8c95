"""Decode heads with MMSegmentation's structure and parameter names.

FCNHead: ``num_convs`` 3x3 ConvBlocks (``convs.i``), optionally concatenated with the head input and
fused by ``conv_cat``, then Dropout2d and the 1x1 classifier ``conv_seg``.
NLHead: an FCNHead with two convs and a NonLocal2d (``nl_block``) between them.
Both return logits at the resolution of their input feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.models.layers import ConvBlock, NormLayer, normal_init_
from benchmark.models.nonlocal_block import Impl, Mode, NonLocal2d


class FCNHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        num_convs: int = 2,
        concat_input: bool = True,
        kernel_size: int = 3,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__()
        if num_convs < 1:
            raise ValueError("FCNHead needs at least one conv")
        pad = kernel_size // 2
        convs = [ConvBlock(in_channels, channels, kernel_size, pad, norm_layer, relu=True)]
        convs += [ConvBlock(channels, channels, kernel_size, pad, norm_layer, relu=True) for _ in range(num_convs - 1)]
        self.convs = nn.Sequential(*convs)
        self.concat_input = concat_input
        if concat_input:
            self.conv_cat = ConvBlock(in_channels + channels, channels, kernel_size, pad, norm_layer, relu=True)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.num_classes = num_classes
        FCNHead.init_weights(self)

    def init_weights(self) -> None:
        """ConvModule's Kaiming init for the convs; N(0, 0.01) for conv_seg (BaseDecodeHead)."""
        for m in self.modules():
            if isinstance(m, ConvBlock):
                m.init_weights()
        normal_init_(self.conv_seg, std=0.01)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.classify(out)


class NLHead(FCNHead):
    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        reduction: int = 2,
        use_scale: bool = True,
        mode: Mode = "embedded_gaussian",
        impl: Impl = "sdpa",
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ):
        super().__init__(in_channels, channels, num_classes, num_convs=2, concat_input=True,
                         dropout=dropout, norm_layer=norm_layer)
        # Built after the FCN parts (as in MMSeg), so FCNHead.init_weights did not touch it and its
        # own init (zero-scale output norm) stands.
        self.nl_block = NonLocal2d(channels, reduction, use_scale, mode, impl, norm_layer)

    def init_weights(self) -> None:
        super().init_weights()
        self.nl_block.init_weights()

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs[1](self.nl_block(self.convs[0](x)))
