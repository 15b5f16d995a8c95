"""Inf time (fps) and Mem (GB), measured the way the published table measured them.

fps (MMSeg's tools/benchmark.py): batch 1, fp32 unless the recipe's runtime.amp says otherwise,
cudnn benchmark off, the first ``bench.total_images`` val images of which the first
``bench.warmup_images`` are not timed. The test pipeline (keep-ratio resize, normalisation) runs in
the data loader and is not timed; what is timed, between two device synchronizations, is what MMSeg's
``model(return_loss=False, rescale=True, **data)`` did: moving the input to the device, the forward
in the recipe's test mode (whole image, or sliding windows), resizing the logits back to the image
size, the argmax and copying the prediction to the host. fps = timed images / timed seconds.
When the val split is not on disk, synthetic images of the test resolution stand in (the output
says which).

Mem: the peak of ``torch.cuda.max_memory_allocated`` over ``bench.mem_iters`` training iterations
(forward, backward, SGD step) at the recipe's per-GPU batch and crop, cudnn benchmark off, in GiB
(bytes / 1024^3) as MMSeg prints it. On CPU both figures are CPU figures: CPU fps and the process's
peak resident set size, labelled ``fps_device: cpu`` and ``mem_kind: peak_rss``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmark.checkpoint import load_weights, resolve_checkpoint
from benchmark.data.datasets import build_dataset
from benchmark.engine.distributed import PeakMemory, device_info, resolve_device
from benchmark.engine.steps import autocast, make_optimizer, make_scaler, train_step
from benchmark.errors import NLBenchError
from benchmark.io.files import write_json
from benchmark.io.jobenv import job_environment
from benchmark.recipe import Recipe, load_recipe

# Aspect ratio (w / h) of a typical image of each dataset, for synthetic stand-ins: Cityscapes is
# 2048x1024; ADE20K and VOC images are mostly 4:3 landscape.
_TYPICAL_ASPECT = {"cityscapes": 2.0, "ade20k": 4 / 3, "voc12aug": 4 / 3}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_image_size(recipe: Recipe) -> Tuple[int, int]:
    """(h, w) of a stand-in image already at the test resolution (the test resize is then a no-op)."""
    from benchmark.data.resize import keep_ratio_size

    short = min(recipe.data.img_scale)
    return keep_ratio_size(short, int(round(short * _TYPICAL_ASPECT[recipe.data.dataset])), recipe.data.img_scale)


def bench_images(recipe: Recipe, data_root: Optional[str], count: int) -> Tuple[str, Iterator[np.ndarray]]:
    """("val", the first ``count`` val images, cycled if the split is shorter) or ("synthetic", ...)."""
    root = Path(data_root if data_root is not None else recipe.data.data_root)
    if root.is_dir():
        try:
            dataset = build_dataset(recipe.data, "val", root)
        except NLBenchError:
            dataset = None
        if dataset is not None and len(dataset) > 0:
            return "val", (dataset.read_image(i % len(dataset)) for i in range(count))
    h, w = synthetic_image_size(recipe)
    rng = np.random.default_rng(0)
    return "synthetic", (rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(count))


@torch.inference_mode()
def measure_fps(model: torch.nn.Module, recipe: Recipe, device: torch.device, images: Iterator[np.ndarray],
                warmup: int) -> Dict[str, Any]:
    """Time forward + resize back + argmax per image (see the module docstring); model in eval mode."""
    from benchmark.data.resize import keep_ratio_size, resize_image
    from benchmark.engine.inference import infer, resize_logits, to_input_tensor

    align_corners = bool(getattr(model, "align_corners", False))
    timed, seconds = 0, 0.0
    image_hw = input_hw = None
    for k, image in enumerate(images):
        h, w = image.shape[:2]
        size = keep_ratio_size(h, w, tuple(recipe.data.img_scale))
        x = to_input_tensor(resize_image(image, size), "cpu", recipe.runtime.channels_last)  # the data loader's part
        _sync(device)
        start = time.perf_counter()
        with autocast(recipe.runtime.amp, device):
            logits = infer(model, x.to(device, non_blocking=False), recipe)
            pred = resize_logits(logits, (h, w), align_corners).argmax(dim=1).cpu()
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


def measure_train_memory(recipe: Recipe, device: torch.device, iters: int, seed: int = 0) -> Dict[str, Any]:
    """Peak memory over ``iters`` training iterations at the per-GPU batch and crop (random data)."""
    from benchmark.models.segmentor import build_segmentor

    torch.manual_seed(seed)
    model = build_segmentor(recipe.model)
    fmt = torch.channels_last if recipe.runtime.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt).train()
    optimizer = make_optimizer(model, recipe.schedule)
    scaler = make_scaler(recipe.runtime.amp, device)
    n, (ch, cw) = recipe.data.imgs_per_gpu, recipe.data.crop_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, ch, cw, generator=gen).to(device, memory_format=fmt)
    labels = torch.randint(0, recipe.model.num_classes, (n, ch, cw), generator=gen).to(device)
    mem = PeakMemory(device)
    isolated = mem.reset()
    for _ in range(iters):
        train_step(model.losses, images, labels, optimizer, scaler, recipe.runtime.amp, device)
    _sync(device)
    peak = mem.peak_gb()
    del model, optimizer, images, labels
    return {"mem_gb": peak, "mem_kind": mem.kind, "mem_iters": iters, "mem_batch": n, "mem_crop_hw": [ch, cw],
            "mem_isolated": isolated}


def bench(recipe: Recipe, checkpoint: Optional[str] = None, device: str = "auto", data_root: Optional[str] = None,
          skip_mem: bool = False) -> Dict[str, Any]:
    """fps (and Mem unless ``skip_mem``) of ``recipe``'s model; one process, this rank's device."""
    from benchmark.models.segmentor import build_segmentor

    started = time.perf_counter()
    dev = resolve_device(device, job_environment().local_rank)
    cfg = recipe.bench
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # as published, for both figures
    try:
        torch.manual_seed(recipe.runtime.seed)
        model = build_segmentor(recipe.model)
        if checkpoint is not None:
            load_weights(model, checkpoint)
        model.to(dev, memory_format=torch.channels_last if recipe.runtime.channels_last else torch.contiguous_format)
        model.eval()
        source, images = bench_images(recipe, data_root, cfg.total_images)
        mem = PeakMemory(dev)
        mem.reset()
        result: Dict[str, Any] = {
            "recipe": recipe.name,
            "profile": recipe.profile,
            "fps_device": dev.type,
            "image_source": source,
            "test_mode": recipe.test.mode,
            "warmup_images": cfg.warmup_images,
            "total_images": cfg.total_images,
            "batch_size": 1,
            "cudnn_benchmark": False,
            "checkpoint": str(checkpoint) if checkpoint else None,
        }
        result.update(measure_fps(model, recipe, dev, images, cfg.warmup_images))
        result["infer_mem_gb"] = mem.peak_gb()
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if skip_mem:
            result.update({"mem_gb": None, "mem_kind": None})
        else:
            result.update(measure_train_memory(recipe, dev, cfg.mem_iters, recipe.runtime.seed))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
    result.update(device_info(dev, amp=recipe.runtime.amp))
    result["wall_time_s"] = time.perf_counter() - started  # the stage's cost, for the run record
    return result


def format_bench(result: Dict[str, Any]) -> str:
    unit = "GPU" if result["fps_device"] == "cuda" else "CPU"
    lines = [
        f"{result['recipe']} [{result['profile']}] on {result['device_name']} ({result['device']}), {result['dtype']}, "
        f"torch {result['torch_version']}, CUDA {result['cuda_version']}, cuDNN {result['cudnn_version']}",
        f"images: {result['image_source']} ({'val split' if result['image_source'] == 'val' else 'random pixels'}) "
        f"{result['image_hw'][0]}x{result['image_hw'][1]}, inferred at {result['input_hw'][0]}x{result['input_hw'][1]} "
        f"({result['test_mode']}), batch 1, {result['warmup_images']} warm-up + {result['images_timed']} timed, "
        f"cudnn benchmark off",
        f"Inf time: {result['fps']:.3g} fps ({unit} fps; {1000 / result['fps']:.0f} ms per image); "
        f"inference peak {result['infer_mem_gb']:.2f} GB",
    ]
    if result.get("mem_gb") is not None:
        what = "max_memory_allocated" if result["mem_kind"] == "cuda_max_allocated" else "CPU peak RSS of the process"
        lines.append(f"Mem: {result['mem_gb']:.2f} GB ({what}) over {result['mem_iters']} training iteration(s), "
                     f"batch {result['mem_batch']} at {result['mem_crop_hw'][0]}x{result['mem_crop_hw'][1]}")
    return "\n".join(lines)


def bench_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full", checkpoint: Optional[str] = None,
                  data_root: Optional[str] = None, json_out: Optional[str] = None, device: str = "auto",
                  skip_mem: bool = False) -> int:
    """`nlbench bench`: print the figures; ``json_out`` (--json) also writes them to that file."""
    resolved = load_recipe(recipe, overrides, profile)
    path = str(resolve_checkpoint(resolved, checkpoint)) if checkpoint else None
    result = bench(resolved, checkpoint=path, device=device, data_root=data_root, skip_mem=skip_mem)
    print(format_bench(result))
    if json_out:
        write_json(json_out, result)
        print(f"wrote {json_out}")
    return 0


def bench_data_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full",
                       data_root: Optional[str] = None, workers: Optional[List[int]] = None, images: int = 64) -> int:
    """`nlbench bench-data`: training-pipeline images/s for each loader worker count."""
    from benchmark.data.throughput import measure
    from benchmark.data.transforms import TrainPipeline
    from benchmark.engine.datasets import data_root as resolve_root

    resolved = load_recipe(recipe, overrides, profile)
    data = resolved.data
    counts: List[int] = workers or [0, data.workers_per_gpu]
    if any(n < 0 for n in counts):
        raise NLBenchError(f"--workers must be >= 0, got {counts}")
    if images <= 0:
        raise NLBenchError(f"--images must be positive, got {images}")
    root = resolve_root(data, data_root)
    dataset = build_dataset(data, "train", root)
    pipeline = TrainPipeline.from_config(data)
    print(f"bench-data: {resolved.name} [{resolved.profile}] {data.dataset} train, {len(dataset)} images at {root}; "
          f"crop {data.crop_size[0]}x{data.crop_size[1]}, {data.imgs_per_gpu} images per batch")
    for n in dict.fromkeys(counts):  # unique, in the order given
        rate = measure(dataset, pipeline, data.imgs_per_gpu, n, images, resolved.runtime.seed)
        print(f"  workers={n:<3d} {rate:9.1f} images/s")
    print(f"(the published run consumed {resolved.effective_batch} images per iteration over "
          f"{resolved.runtime.gpus} GPUs; multiply by iterations/s to compare)")
    return 0
