"""The optimisation parts that training and the Mem benchmark share: the recipe's optimizer,
autocast and gradient scaler, the model's losses as a module (DDP, torch.compile), and one training
step.

One step is: forward under autocast, zero the gradients, backward (through the scaler for fp16),
optimizer step. MMSeg's optimizer hook zeroes gradients before backward as well, so the order of
operations, and therefore every number, is the same as in a run of MMSeg.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from benchmark.recipe import ScheduleConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], Dict[str, torch.Tensor]]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: Optional[str], device: torch.device):
    """Autocast for ``runtime.amp`` (bf16 or fp16), or nothing for fp32."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


class LossModel(nn.Module):
    """Puts ``model.losses`` behind ``forward`` so DistributedDataParallel's hooks (and
    torch.compile) see the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.losses(images, labels)


def build_loss_model(model: nn.Module, device: torch.device, ddp: bool, compile: bool = False) -> nn.Module:
    """``model``'s losses as a module: inside DistributedDataParallel when ``ddp`` (a process group
    must exist), then compiled when ``compile`` (``runtime.compile``). Checkpoints keep reading
    ``model`` itself, so its state-dict keys never change."""
    wrapped: nn.Module = LossModel(model)
    if ddp:
        wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def make_optimizer(model: nn.Module, schedule: ScheduleConfig) -> torch.optim.SGD:
    """SGD over all parameters with the schedule's base lr, momentum and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                           weight_decay=schedule.weight_decay)


def make_scaler(amp: Optional[str], device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def train_step(loss_fn: LossFn, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: Optional[torch.amp.GradScaler], amp: Optional[str], device: torch.device,
               set_to_none: bool = True) -> Dict[str, torch.Tensor]:
    """One optimisation step; returns the loss terms (still on the device, not synchronised).

    ``set_to_none=False`` zeroes gradients in place, as mmcv's optimizer hook did (the gradients then
    stay allocated between iterations, which the published Mem figures include)."""
    with autocast(amp, device):
        losses = loss_fn(images, labels)
    optimizer.zero_grad(set_to_none=set_to_none)
    if scaler is not None:
        scaler.scale(losses["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        losses["loss"].backward()
        optimizer.step()
    return losses
