"""ResNetV1c as MMSegmentation builds it for the "-D8" models (output stride 8).

ResNetV1c = ResNet with a deep stem (three 3x3 convs instead of one 7x7) and "pytorch" style blocks
(the stride sits on the 3x3 conv). The D8 variant keeps stages 3 and 4 at stride 1 and dilates them
by 2 and 4; with ``contract_dilation`` the first block of a dilated stage uses half the dilation.
Module names (stem.0..8, layerN.i.convK/bnK, downsample.0/1) match MMSeg's checkpoint keys.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from benchmark.models.layers import NormLayer, constant_norm_init_, kaiming_init_, norm_fresh


def _shortcut(downsample: Optional[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The residual branch: ``x`` itself, or ``downsample`` = (1x1 conv, norm) of it."""
    if downsample is None:
        return x
    return norm_fresh(downsample[1], downsample[0](x))


def residual(main: Callable[[torch.Tensor], torch.Tensor], downsample: Optional[nn.Module], relu: nn.Module,
             x: torch.Tensor) -> torch.Tensor:
    """``relu(main(x) + shortcut(x))``.

    Recording gradients (training), the shortcut is built first, as it always was: autograd then sums
    the two gradients of ``x`` in the same order, and training stays bit-identical. Without (eval,
    predict) the shortcut is added in place after the main branch, whose buffers are freed by then:
    one activation-sized buffer fewer. The same forward arithmetic either way."""
    if torch.is_grad_enabled():
        identity = _shortcut(downsample, x)
        return relu(main(x) + identity)
    out = main(x)
    out += _shortcut(downsample, x)
    return relu(out)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). As in MMSeg, only the first conv is dilated."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int,
                 downsample: Optional[nn.Module], norm_layer: NormLayer):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def main(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(norm_fresh(self.bn1, self.conv1(x)))
        return norm_fresh(self.bn2, self.conv2(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual(self.main, self.downsample, self.relu, x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, dilated) -> 1x1 x4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int,
                 downsample: Optional[nn.Module], norm_layer: NormLayer):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def main(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(norm_fresh(self.bn1, self.conv1(x)))
        out = self.relu(norm_fresh(self.bn2, self.conv2(out)))
        return norm_fresh(self.bn3, self.conv3(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual(self.main, self.downsample, self.relu, x)


Block = Union[Type[BasicBlock], Type[Bottleneck]]

# depth -> (block, blocks per stage)
ARCH: Dict[int, Tuple[Block, Tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _make_stage(block: Block, inplanes: int, planes: int, num_blocks: int, stride: int, dilation: int,
                contract_dilation: bool, norm_layer: NormLayer) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            norm_layer(planes * block.expansion),
        )
    first_dilation = dilation // 2 if (contract_dilation and dilation > 1) else dilation
    blocks = [block(inplanes, planes, stride, first_dilation, downsample, norm_layer)]
    for _ in range(1, num_blocks):
        blocks.append(block(planes * block.expansion, planes, 1, dilation, None, norm_layer))
    return nn.Sequential(*blocks)


class ResNetV1c(nn.Module):
    """Deep-stem ResNet returning the outputs of its four stages (strides 4, 8, 8, 8 by default)."""

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        stem_channels: int = 64,
        base_channels: int = 64,
        strides: Sequence[int] = (1, 2, 1, 1),
        dilations: Sequence[int] = (1, 1, 2, 4),
        contract_dilation: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
        zero_init_residual: bool = True,
    ):
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"ResNetV1c depth must be one of {sorted(ARCH)}, got {depth}")
        block, stage_blocks = ARCH[depth]
        self.depth = depth
        self.zero_init_residual = zero_init_residual
        half = stem_channels // 2
        # Indices 0..8 are MMSeg's key names: conv, bn, relu three times.
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, stride=1, padding=1, bias=False), norm_layer(stem_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_channels
        channels: List[int] = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            stage = _make_stage(block, inplanes, planes, num_blocks, strides[i], dilations[i],
                                contract_dilation, norm_layer)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes * block.expansion
            channels.append(inplanes)
        self.out_channels: Tuple[int, ...] = tuple(channels)
        self.init_weights()

    def init_weights(self) -> None:
        """MMSeg's from-scratch init: Kaiming (fan_out) convs, norm scale 1 / shift 0, and with
        ``zero_init_residual`` (MMSeg's default) the last norm of every block at scale 0, shift 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init_(m)
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                constant_norm_init_(m, 1.0)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    constant_norm_init_(m.last_norm, 0.0)

    def forward(self, x: torch.Tensor, keep: Optional[Sequence[int]] = None) -> Tuple[Optional[torch.Tensor], ...]:
        """The four stage outputs; with ``keep``, only those stages' (the others are None), so that an
        output no head reads is freed as soon as the next stage has consumed it (at a 1024x2048 input
        stages 1-3 hold 320 MB in fp32 while stage 4 and the decode head run)."""
        x = self.maxpool(self.stem(x))
        outs: List[Optional[torch.Tensor]] = []
        for i in range(len(self.out_channels)):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x if keep is None or i in keep else None)
        return tuple(outs)
