"""Small building blocks shared by the heads and the non-local block.

``ConvBlock`` mirrors the parameter layout of mmcv's ``ConvModule`` (conv -> norm -> activation,
submodules named ``conv`` and ``bn``) so state-dict keys read ``...convs.0.conv.weight`` and
``...convs.0.bn.running_mean`` exactly as in MMSegmentation's checkpoints.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


class ConvBlock(nn.Module):
    """Conv2d, then an optional norm layer, then an optional ReLU.

    As in ConvModule, the convolution has a bias exactly when there is no norm layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        norm_layer: Optional[NormLayer] = None,
        relu: bool = False,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=norm_layer is None)
        self.bn = norm_layer(out_channels) if norm_layer is not None else None
        self.activate = nn.ReLU(inplace=True) if relu else None

    def init_weights(self) -> None:
        """ConvModule's own init: Kaiming conv, norm scale 1 and shift 0."""
        kaiming_init_(self.conv)
        if self.bn is not None:
            constant_norm_init_(self.bn, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = norm_fresh(self.bn, x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def norm_fresh(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for an ``x`` that nothing else holds (a convolution's fresh output).

    When no gradient is recorded, an eval-mode BatchNorm on a float32 CPU tensor writes its result
    into ``x`` itself, with the very kernel ``norm(x)`` runs (the same bits): one activation-sized
    buffer fewer per norm, 256 MB at stage 4 of a 1024x2048 input. Anywhere else it is ``norm(x)``."""
    if (type(norm) is nn.BatchNorm2d and not norm.training and norm.running_mean is not None
            and not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        empty = x.new_empty(0)
        torch.ops.aten.native_batch_norm.out(x, norm.weight, norm.bias, norm.running_mean, norm.running_var,
                                             False, 0.0, norm.eps, out=x, save_mean=empty, save_invstd=empty.clone())
        return x
    return norm(x)


def kaiming_init_(conv: nn.Conv2d) -> None:
    """mmcv's default conv init: Kaiming normal, fan_out, ReLU gain; bias 0."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def normal_init_(conv: nn.Conv2d, std: float) -> None:
    """mmcv's normal_init: N(0, std) weights; bias 0."""
    nn.init.normal_(conv.weight, mean=0.0, std=std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def constant_norm_init_(norm: nn.Module, value: float) -> None:
    """Norm-layer scale ``value``, shift 0 (mmcv's constant_init on a norm layer)."""
    nn.init.constant_(norm.weight, value)
    nn.init.zeros_(norm.bias)
