"""The two named ways nlbench measures Mem and fps.

``published``: what the published table measured (docs/FIDELITY.md, "How the published Mem and fps
were measured"): mmcv's explicit attention (the full N x N matrix), fp32 with TF32 off for matmuls
and cuDNN (a V100 has none), cudnn benchmark off, contiguous (NCHW) tensors, no compilation; Mem
inside a DistributedDataParallel-wrapped model (its gradient buckets count) with gradients zeroed in
place; the fps timer covers the softmax over the full-resolution logits.

``fast``: nlbench's fast path: SDPA attention (flash / memory-efficient kernels), bf16 autocast where
the device computes bf16 natively (the recipe's ``runtime.amp`` when it names one), channels_last,
TF32 allowed, cudnn benchmark on, ``torch.compile`` when ``runtime.compile`` asks for it; Mem in one
process without DDP (as nlbench trains on one GPU) with gradients set to None; no softmax before
the argmax (it does not change the argmax).

Each result names the setting it was measured with, field by field (``Setting.describe``).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from benchmark.errors import NLBenchError
from benchmark.recipe import ModelConfig, Recipe

SETTING_NAMES = ("published", "fast")
DTYPE_NAMES = {None: "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Setting:
    name: str
    attention: str  # model.non_local.impl: "explicit" or "sdpa"
    amp: Optional[str]  # None (fp32), "bf16" or "fp16"
    tf32: bool  # TF32 allowed for matmuls and cuDNN convolutions (CUDA only)
    cudnn_benchmark: bool
    channels_last: bool
    compile: bool  # torch.compile of the model (inference) and of the loss model (training)
    ddp: bool  # Mem measured inside DistributedDataParallel (world size 1)
    grad_set_to_none: bool  # False: gradients zeroed in place, as mmcv's optimizer hook did
    softmax_in_timer: bool  # the fps timer includes a softmax over the full-resolution logits
    pin_memory: bool  # inputs in page-locked host memory, copied to a CUDA device asynchronously

    def describe(self) -> Dict[str, Any]:
        """The setting as JSON: every field, plus ``dtype`` (float32 / bfloat16 / float16)."""
        return {"setting": self.name, **{k: v for k, v in asdict(self).items() if k != "name"},
                "dtype": DTYPE_NAMES[self.amp]}


PUBLISHED = Setting("published", attention="explicit", amp=None, tf32=False, cudnn_benchmark=False,
                    channels_last=False, compile=False, ddp=True, grad_set_to_none=False, softmax_in_timer=True,
                    pin_memory=False)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (autocast to bf16 elsewhere is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_setting(recipe: Recipe, device: torch.device) -> Setting:
    """nlbench's fast path on ``device`` (see the module docstring)."""
    amp = recipe.runtime.amp or ("bf16" if native_bf16(device) else None)
    return Setting("fast", attention="sdpa", amp=amp, tf32=True, cudnn_benchmark=True, channels_last=True,
                   compile=recipe.runtime.compile, ddp=False, grad_set_to_none=True, softmax_in_timer=False,
                   pin_memory=device.type == "cuda")


def fast_recipe(recipe: Recipe, device: torch.device) -> Recipe:
    """``recipe`` with the ``fast`` setting's inference choices (``predict --fast``, ``eval --fast``):
    SDPA attention, channels_last, TF32 allowed, cudnn benchmark, and ``test.amp`` (the inference
    autocast) set to the recipe's own ``test.amp`` or else the setting's (bf16 where native). Not
    MMSeg's arithmetic: the defaults are (docs/FIDELITY.md)."""
    chosen = fast_setting(recipe, device)
    runtime = recipe.runtime.model_copy(update={"channels_last": chosen.channels_last, "tf32": chosen.tf32,
                                                "cudnn_benchmark": chosen.cudnn_benchmark})
    test = recipe.test.model_copy(update={"amp": recipe.test.amp or chosen.amp})
    return recipe.model_copy(update={"model": model_config(recipe, chosen), "runtime": runtime, "test": test})


def setting(name: str, recipe: Recipe, device: torch.device) -> Setting:
    return PUBLISHED if name == "published" else fast_setting(recipe, device)


def parse_settings(text: str) -> Tuple[str, ...]:
    """``"published,fast"`` -> ("published", "fast"); unknown or no names are a clear error."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    bad = [n for n in names if n not in SETTING_NAMES]
    if bad or not names:
        raise NLBenchError(f"expected a comma-separated list of {', '.join(SETTING_NAMES)}, got {text!r}",
                           key="--settings")
    return names


def model_config(recipe: Recipe, chosen: Setting) -> ModelConfig:
    """The recipe's model with the setting's attention implementation."""
    non_local = recipe.model.non_local.model_copy(update={"impl": chosen.attention})
    return recipe.model.model_copy(update={"non_local": non_local})


def memory_format(chosen: Setting) -> torch.memory_format:
    return torch.channels_last if chosen.channels_last else torch.contiguous_format


@contextlib.contextmanager
def backend_flags(chosen: Setting) -> Iterator[None]:
    """cudnn benchmark and TF32 (matmul and cuDNN) as the setting says, restored afterwards."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark = chosen.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = chosen.tf32
    torch.backends.cudnn.allow_tf32 = chosen.tf32
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved
