"""`nlbench bench-data`: how many training images per second the data pipeline delivers.

Measures exactly what training consumes (``train_batches``: decode, random resize, crop, flip,
photometric distortion, normalize, pad, collate) for one rank, with each requested worker count.
The first batch is not timed (worker start-up and the first file reads). To keep up, a node needs
(GPUs x images per GPU x iterations/s) images/s, e.g. 4 x 2 x 3 = 24/s for Cityscapes.
"""

from __future__ import annotations

import math
import time

from benchmark.data.layouts import SegDataset
from benchmark.data.loader import train_batches
from benchmark.data.transforms import TrainPipeline


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

