"""`nlbench bench-data`: how many training images per second the data pipeline delivers.

Measures exactly what training consumes (``train_batches``: decode, random resize, crop, flip,
photometric distortion, normalize, pad, collate) for one rank, with each requested worker count.
The first batch is not timed (worker start-up and the first file reads). To keep up, a node needs
(GPUs x images per GPU x iterations/s) images/s, e.g. 4 x 2 x 3 = 24/s for Cityscapes.
"""

from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence

from benchmark.data.layouts import SegDataset, build_dataset
from benchmark.data.loader import train_batches
from benchmark.data.transforms import TrainPipeline
from benchmark.engine.open_data import data_root as resolve_root
from benchmark.errors import NLBenchError
from benchmark.recipe import load_recipe


def measure(dataset: SegDataset, pipeline: TrainPipeline, imgs_per_gpu: int, num_workers: int,
            images: int, seed: int = 0) -> float:
    """Training images per second over at least ``images`` images, after one untimed batch."""
    iterations = max(1, math.ceil(images / imgs_per_gpu))
    batches = train_batches(dataset, pipeline, imgs_per_gpu, seed, num_workers=num_workers)
    try:
        next(batches)
        start = time.perf_counter()
        for _ in range(iterations):
            next(batches)
        elapsed = time.perf_counter() - start
    finally:
        batches.close()  # shuts the worker processes down
    return iterations * imgs_per_gpu / elapsed


def bench_data_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full",
                       data_root: Optional[str] = None, workers: Optional[List[int]] = None, images: int = 64) -> int:
    """`nlbench bench-data`: training-pipeline images/s for each loader worker count."""
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
