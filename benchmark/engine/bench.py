"""Inf time (fps) and Mem (GB), measured the way the published table measured them (setting
``published``) and nlbench's fast path beside them (setting ``fast``); engine/settings.py defines both.

fps (MMSeg's tools/benchmark.py): batch 1, the first ``bench.total_images`` val images of which the
first ``bench.warmup_images`` are not timed. The test pipeline (keep-ratio resize, normalisation) runs
in the data loader and is not timed; what is timed, between two device synchronizations, is what
MMSeg's ``model(return_loss=False, rescale=True, **data)`` did: moving the input to the device, the
forward in the recipe's test mode (whole image, or sliding windows), resizing the logits back to the
image size, (``published``: a softmax over those full-resolution logits,) the argmax and copying the
prediction to the host. fps = timed images / timed seconds. When the val split is not on disk,
synthetic images of the test resolution stand in (the output says which).

Mem: the peak of ``torch.cuda.max_memory_allocated`` over ``bench.mem_iters`` training iterations
(forward, backward, SGD step) of a fresh model at the recipe's per-GPU batch and crop, in GiB
(bytes / 1024^3) as MMSeg prints it; ``published`` inside DistributedDataParallel (a process group
of world size 1: nccl on CUDA, gloo on CPU) with gradients zeroed in place. With ``train_step``, the
median seconds per training iteration over ``bench.train_step_iters`` iterations after
``bench.train_step_warmup`` untimed ones, and the peak memory over those timed iterations.
On CPU every figure is a CPU figure: CPU fps and the process's peak resident set size, labelled
``fps_device: cpu`` and ``mem_kind: peak_rss``.

One result holds both settings: the top-level ``fps``, ``mem_gb`` (and ``train_step_s``) are the
``published`` ones; ``fast`` holds the fast figures with the fast setting's fields; ``measurement``
describes each setting measured.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import statistics
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from benchmark.data.layouts import build_dataset
from benchmark.data.resize import keep_ratio_size, resize_image
from benchmark.engine.distributed import PeakMemory, device_info, resolve_device, use_runtime
from benchmark.engine.inference import infer, resize_logits, to_input_tensor
from benchmark.engine.settings import (
    PUBLISHED,
    SETTING_NAMES,
    Setting,
    backend_flags,
    memory_format,
    model_config,
    setting,
)
from benchmark.engine.steps import autocast, build_loss_model, make_optimizer, make_scaler, train_step
from benchmark.errors import NLBenchError
from benchmark.io.jobenv import job_environment
from benchmark.mmseg_checkpoint import load_weights
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import Recipe, resolve_data_root

Warn = Callable[[str], None]  # told each warning line
_LOG = logging.getLogger(__name__)

# Aspect ratio (w / h) of a typical image of each dataset, for synthetic stand-ins: Cityscapes is
# 2048x1024; ADE20K and VOC images are mostly 4:3 landscape.
_TYPICAL_ASPECT = {"cityscapes": 2.0, "ade20k": 4 / 3, "voc12aug": 4 / 3}
# Figures of one setting; the published ones are the record's top-level fields, the fast ones its `fast`.
FIGURES = ("fps", "images_timed", "timed_seconds", "infer_mem_gb", "infer_attention_impl", "mem_gb", "mem_kind",
           "mem_iters", "mem_batch", "mem_crop_hw", "mem_isolated", "attention_impl", "train_ddp", "train_step_s",
           "train_step_mem_gb", "train_step_iters", "train_step_warmup")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_image_size(recipe: Recipe) -> Tuple[int, int]:
    """(h, w) of a stand-in image already at the test resolution (the test resize is then a no-op)."""
    short = min(recipe.data.img_scale)
    return keep_ratio_size(short, int(round(short * _TYPICAL_ASPECT[recipe.data.dataset])), recipe.data.img_scale)


def bench_images(recipe: Recipe, data_root: Optional[str], count: int,
                 warn: Warn = _LOG.warning) -> Tuple[str, Iterator[np.ndarray]]:
    """("val", the first ``count`` val images, cycled if the split is shorter) or ("synthetic", ...);
    ``warn`` is told when a val split is there but cannot be read."""
    root = resolve_data_root(data_root if data_root is not None else recipe.data.data_root)
    if root.is_dir():
        try:
            dataset = build_dataset(recipe.data, "val", root)
        except NLBenchError as exc:
            # Said, not silent: the record's image_source alone would hide a broken split.
            warn(f"warning: bench: the val split cannot be read ({exc}); timing random images of the test "
                 "resolution instead")
            dataset = None
        if dataset is not None and len(dataset) > 0:
            return "val", (dataset.read_image(i % len(dataset)) for i in range(count))
    h, w = synthetic_image_size(recipe)
    rng = np.random.default_rng(0)
    return "synthetic", (rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(count))


@torch.inference_mode()
def measure_fps(model: torch.nn.Module, recipe: Recipe, device: torch.device, images: Iterator[np.ndarray],
                warmup: int, chosen: Setting = PUBLISHED) -> Dict[str, Any]:
    """Time input copy + forward + resize back (+ softmax) + argmax per image (see the module
    docstring); model in eval mode, in ``chosen``'s attention, precision and layout."""
    align_corners = bool(getattr(model, "align_corners", False))
    timed, seconds = 0, 0.0
    image_hw = input_hw = None
    for k, image in enumerate(images):
        h, w = image.shape[:2]
        size = keep_ratio_size(h, w, tuple(recipe.data.img_scale))
        x = to_input_tensor(resize_image(image, size), "cpu", chosen.channels_last)  # the data loader's part
        if chosen.pin_memory:
            x = x.pin_memory()
        _sync(device)
        start = time.perf_counter()
        with autocast(chosen.amp, device):
            logits = resize_logits(infer(model, x.to(device, non_blocking=chosen.pin_memory), recipe), (h, w),
                                   align_corners)
            if chosen.softmax_in_timer:
                logits = logits.softmax(dim=1)  # MMSeg's inference did it; the argmax does not need it
            pred = logits.argmax(dim=1).cpu()
        _sync(device)
        elapsed = time.perf_counter() - start
        if k >= warmup:
            timed += 1
            seconds += elapsed
        image_hw, input_hw = (h, w), tuple(x.shape[-2:])
        del logits, pred
    if timed == 0:
        raise NLBenchError(f"no timed images: bench.total_images must exceed bench.warmup_images ({warmup})",
                           recipe.source, "bench.total_images")
    return {"fps": timed / seconds, "images_timed": timed, "timed_seconds": seconds,
            "image_hw": list(image_hw), "input_hw": list(input_hw)}


def time_calls(step: Callable[[], Any], count: int, device: torch.device) -> List[float]:
    """Seconds of each of ``count`` calls of ``step``, each ended by a device synchronisation."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


@contextlib.contextmanager
def single_rank_group(device: torch.device) -> Iterator[None]:
    """A torch.distributed group of this process alone, for DistributedDataParallel at world size 1
    (nccl on CUDA, gloo on CPU), destroyed afterwards; an existing group of one process is used."""
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise NLBenchError(f"bench measures one device, in one process; this one is in a group of "
                               f"{dist.get_world_size()} (run bench outside torchrun)")
        yield
        return
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1,
                            **({"device_id": device} if cuda else {}))
    try:
        yield
    finally:
        dist.destroy_process_group()


def measure_train_memory(recipe: Recipe, device: torch.device, iters: int, seed: int = 0,
                         chosen: Setting = PUBLISHED, step_iters: Tuple[int, int] = (0, 0)) -> Dict[str, Any]:
    """Peak memory over ``iters`` training iterations at the per-GPU batch and crop (random data),
    in ``chosen``'s setting (DDP at world size 1 when it says so). ``step_iters`` = (warm-up, timed):
    also the median seconds of the timed iterations and the peak memory over them."""
    torch.manual_seed(seed)
    model = build_segmentor(model_config(recipe, chosen))
    fmt = memory_format(chosen)
    model.to(device=device, memory_format=fmt).train()
    optimizer = make_optimizer(model, recipe.schedule)
    scaler = make_scaler(chosen.amp, device)
    n, (ch, cw) = recipe.data.imgs_per_gpu, recipe.data.crop_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, ch, cw, generator=gen).to(device, memory_format=fmt)
    labels = torch.randint(0, recipe.model.num_classes, (n, ch, cw), generator=gen).to(device)
    warmup, timed = step_iters
    mem = PeakMemory(device)
    with single_rank_group(device) if chosen.ddp else contextlib.nullcontext(), warnings.catch_warnings():
        # DDP warns when a 1x1 conv's weight gradient comes back in another (equally valid) stride
        # order than its bucket view; it costs one copy per step and changes no number.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        losses = build_loss_model(model, device, ddp=chosen.ddp, compile=chosen.compile)
        step = functools.partial(train_step, losses, images, labels, optimizer, scaler, chosen.amp, device,
                                 set_to_none=chosen.grad_set_to_none)

        isolated = mem.reset()
        time_calls(step, iters, device)  # Mem: from a fresh model, as published (iters 0: --skip-mem with --train-step)
        out = {"mem_gb": mem.peak_gb() if iters else None, "mem_kind": mem.kind if iters else None,
               "mem_iters": iters, "mem_batch": n, "mem_crop_hw": [ch, cw], "mem_isolated": isolated,
               **_what_ran(model, losses)}
        if timed:  # then the steady state: the iterations after the warm-up ones (autotuning, compilation)
            time_calls(step, max(0, warmup - iters), device)
            mem.reset()
            out.update({"train_step_s": statistics.median(time_calls(step, timed, device)),
                        "train_step_mem_gb": mem.peak_gb(), "train_step_iters": timed, "train_step_warmup": warmup})
        del losses, step  # the process group goes next: nothing may hold the DDP reducer then
    return out


def _what_ran(model: torch.nn.Module, losses: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """Facts read off the objects that were measured: the non-local block's implementation and,
    for training, whether the loss model was inside DDP and in which process group."""
    facts: Dict[str, Any] = {"attention_impl": model.decode_head.nl_block.impl}
    if losses is not None:
        ddp = isinstance(getattr(losses, "_orig_mod", losses), torch.nn.parallel.DistributedDataParallel)
        facts["train_ddp"] = {"backend": dist.get_backend(), "world_size": dist.get_world_size()} if ddp else None
    return facts


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_setting(recipe: Recipe, chosen: Setting, device: torch.device, checkpoint: Optional[str] = None,  # noqa: PLR0913
                    data_root: Optional[str] = None, skip_mem: bool = False,
                    train_step: bool = False, warn: Warn = _LOG.warning) -> Dict[str, Any]:
    """fps, inference peak, Mem (unless ``skip_mem``) and, with ``train_step``, the training step,
    all in ``chosen``'s setting (its backend flags set for the duration)."""
    cfg = recipe.bench
    with backend_flags(chosen):
        torch.manual_seed(recipe.runtime.seed)
        model = build_segmentor(model_config(recipe, chosen))
        if checkpoint is not None:
            load_weights(model, checkpoint)
        model.to(device, memory_format=memory_format(chosen)).eval()
        runnable = torch.compile(model) if chosen.compile else model
        source, images = bench_images(recipe, data_root, cfg.total_images, warn)
        mem = PeakMemory(device)
        mem.reset()
        figures: Dict[str, Any] = {"image_source": source}
        figures.update(measure_fps(runnable, recipe, device, images, cfg.warmup_images, chosen))
        figures["infer_mem_gb"] = mem.peak_gb()
        figures["infer_attention_impl"] = _what_ran(model)["attention_impl"]
        del model, runnable
        _empty_cache(device)
        if skip_mem and not train_step:
            figures.update({"mem_gb": None, "mem_kind": None})
        else:
            step_iters = (cfg.train_step_warmup, cfg.train_step_iters) if train_step else (0, 0)
            figures.update(measure_train_memory(recipe, device, 0 if skip_mem else cfg.mem_iters,
                                                recipe.runtime.seed, chosen, step_iters))
            _empty_cache(device)
    return figures


def bench(recipe: Recipe, checkpoint: Optional[str] = None, device: str = "auto",  # noqa: PLR0913
          data_root: Optional[str] = None, skip_mem: bool = False, settings: Sequence[str] = SETTING_NAMES,
          train_step: bool = False, warn: Warn = _LOG.warning) -> Dict[str, Any]:
    """fps and Mem of ``recipe``'s model in each of ``settings`` (published, fast), in one result: the
    published figures at the top level, the fast ones under ``fast``; one process, this rank's device.
    ``warn`` is told what the measurement fell back on (the command passes its stderr line; without
    one, this module's logger, which Python writes to stderr)."""
    started = time.perf_counter()
    dev = resolve_device(device, job_environment().local_rank)
    use_runtime(recipe.runtime, dev)  # TF32 here holds outside the settings' measurements, which set their own
    cfg = recipe.bench
    result: Dict[str, Any] = {
        "recipe": recipe.name, "profile": recipe.profile, "fps_device": dev.type, "test_mode": recipe.test.mode,
        "warmup_images": cfg.warmup_images, "total_images": cfg.total_images, "batch_size": 1,
        "checkpoint": str(checkpoint) if checkpoint else None, "settings": list(settings),
    }
    measured: Dict[str, Tuple[Setting, Dict[str, Any]]] = {}
    for name in settings:
        chosen = setting(name, recipe, dev)
        measured[name] = (chosen, measure_setting(recipe, chosen, dev, checkpoint, data_root, skip_mem, train_step,
                                                  warn))
    first = next(iter(measured.values()))[1]
    result.update({k: first[k] for k in ("image_source", "image_hw", "input_hw")})
    if "published" in measured:
        result["cudnn_benchmark"] = PUBLISHED.cudnn_benchmark
        result.update({k: v for k, v in measured["published"][1].items() if k in FIGURES})
    else:
        result.update({"fps": None, "mem_gb": None, "mem_kind": None})
    if "fast" in measured:
        chosen, figures = measured["fast"]
        result["fast"] = {**chosen.describe(), **{k: v for k, v in figures.items() if k in FIGURES}}
    result["measurement"] = {name: chosen.describe() for name, (chosen, _) in measured.items()}
    result.update(device_info(dev))  # dtype float32: the published setting's (the fast one's is in `fast`)
    result["wall_time_s"] = time.perf_counter() - started  # the stage's cost, for the run record
    return result


def _setting_lines(label: str, figures: Dict[str, Any], unit: str) -> List[str]:
    lines = [f"{label}: Inf time {figures['fps']:.3g} fps ({unit} fps; {1000 / figures['fps']:.0f} ms per image); "
             f"inference peak {figures['infer_mem_gb']:.2f} GB"]
    if figures.get("mem_gb") is not None:
        what = "max_memory_allocated" if figures["mem_kind"] == "cuda_max_allocated" else "CPU peak RSS of the process"
        lines.append(f"{label}: Mem {figures['mem_gb']:.2f} GB ({what}) over {figures['mem_iters']} training "
                     f"iteration(s), batch {figures['mem_batch']} at {figures['mem_crop_hw'][0]}x"
                     f"{figures['mem_crop_hw'][1]}")
    if figures.get("train_step_s") is not None:
        lines.append(f"{label}: training step {figures['train_step_s']:.3g} s/iter (median of "
                     f"{figures['train_step_iters']} after {figures['train_step_warmup']} warm-up), peak "
                     f"{figures['train_step_mem_gb']:.2f} GB")
    return lines


def describe_setting(described: Dict[str, Any]) -> str:
    """One line naming what a setting ran: attention, dtype, TF32, cudnn benchmark, layout, compile, ..."""
    return (f"{described['attention']} attention, {described['dtype']}, TF32 {'on' if described['tf32'] else 'off'}, "
            f"cudnn benchmark {'on' if described['cudnn_benchmark'] else 'off'}, "
            f"{'channels_last' if described['channels_last'] else 'NCHW'}, "
            f"compile {'on' if described['compile'] else 'off'}, Mem {'in DDP' if described['ddp'] else 'without DDP'}"
            f", grads {'set to None' if described['grad_set_to_none'] else 'zeroed in place'}, softmax "
            f"{'timed' if described['softmax_in_timer'] else 'skipped'}")


def format_bench(result: Dict[str, Any]) -> str:
    unit = "GPU" if result["fps_device"] == "cuda" else "CPU"
    lines = [
        f"{result['recipe']} [{result['profile']}] on {result['device_name']} ({result['device']}), "
        f"torch {result['torch_version']}, CUDA {result['cuda_version']}, cuDNN {result['cudnn_version']}",
        f"images: {result['image_source']} ({'val split' if result['image_source'] == 'val' else 'random pixels'}) "
        f"{result['image_hw'][0]}x{result['image_hw'][1]}, inferred at {result['input_hw'][0]}x{result['input_hw'][1]} "
        f"({result['test_mode']}), batch 1, {result['warmup_images']} warm-up + "
        f"{result.get('images_timed', result.get('fast', {}).get('images_timed'))} timed",
    ]
    for name, described in result["measurement"].items():
        lines.append(f"setting {name}: {describe_setting(described)}")
    if result.get("fps") is not None:
        lines += _setting_lines("published", result, unit)
    if result.get("fast") is not None:
        fast = result["fast"]
        lines += _setting_lines("fast", fast, unit)
        if result.get("fps") is not None:
            lines.append(f"fast / published: fps x{fast['fps'] / result['fps']:.2f}" + (
                f", Mem x{fast['mem_gb'] / result['mem_gb']:.2f}" if fast.get("mem_gb") and result.get("mem_gb")
                else "") + (f", training step x{result['train_step_s'] / fast['train_step_s']:.2f} faster"
                            if fast.get("train_step_s") and result.get("train_step_s") else ""))
    return "\n".join(lines)

