"""Deterministic, resumable training batches and sharded validation samples.

Order. MMEngine's InfiniteSampler concatenates epochs into one endless stream, each epoch a fresh
shuffle, and rank r of W takes stream positions r, r + W, r + 2W, ... in consecutive groups of
``imgs_per_gpu``. We keep that structure but make every position computable on its own: slot s of
iteration t on rank r reads stream position ``p = (t * imgs_per_gpu + s) * W + r``, which is
sample ``permutation(seed, p // N)[p % N]`` with the epoch's permutation drawn from
``default_rng([seed, epoch])``.

Augmentation. Each sample's random draws come from ``default_rng([seed, t, r, s])``.

So a batch is a pure function of (seed, iteration, rank, world size): a run restarted at iteration
k sees exactly the batches an uninterrupted run sees from k on, whatever the worker count.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.data.layouts import SegDataset
from benchmark.errors import NLBenchError

Batch = Tuple[int, torch.Tensor, torch.Tensor]
Pipeline = Callable[[np.ndarray, np.ndarray, np.random.Generator], Tuple[torch.Tensor, torch.Tensor]]


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def sample_index(seed: int, iteration: int, slot: int, rank: int, world_size: int, imgs_per_gpu: int,
                 n: int, _cache: Optional[dict] = None) -> int:
    """Dataset index read by ``slot`` of ``iteration`` on ``rank`` (see the module docstring)."""
    position = (iteration * imgs_per_gpu + slot) * world_size + rank
    epoch, offset = divmod(position, n)
    if _cache is None:
        return int(epoch_permutation(seed, epoch, n)[offset])
    perm = _cache.get(epoch)
    if perm is None:
        if len(_cache) >= 4:  # a worker only ever needs the current epoch and the next
            _cache.clear()
        perm = _cache[epoch] = epoch_permutation(seed, epoch, n)
    return int(perm[offset])


def augment_rng(seed: int, iteration: int, rank: int, slot: int) -> np.random.Generator:
    return np.random.default_rng([seed, iteration, rank, slot])


class _TrainSamples(Dataset):
    """Map-style view: key k is slot ``k % imgs_per_gpu`` of iteration ``k // imgs_per_gpu``."""

    def __init__(self, dataset: SegDataset, pipeline: Pipeline, imgs_per_gpu: int, seed: int, rank: int,
                 world_size: int):
        self.dataset = dataset
        self.pipeline = pipeline
        self.imgs_per_gpu = imgs_per_gpu
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._perms: dict = {}

    def __getitem__(self, key: int) -> Tuple[int, torch.Tensor, torch.Tensor]:
        iteration, slot = divmod(key, self.imgs_per_gpu)
        index = sample_index(self.seed, iteration, slot, self.rank, self.world_size, self.imgs_per_gpu,
                             len(self.dataset), self._perms)
        try:
            image, label = self.dataset.read_sample(index)
        except NLBenchError as exc:
            # Carried to the main process as data: raised in a worker, torch would wrap it in a
            # multi-line "Caught NLBenchError in DataLoader worker" message that hides the file.
            return iteration, None, str(exc)
        img_t, label_t = self.pipeline(image, label, augment_rng(self.seed, iteration, self.rank, slot))
        return iteration, img_t, label_t


def _collate(items):
    iterations = {it for it, _, _ in items}
    assert len(iterations) == 1, "a batch must not straddle iterations"
    errors = [y for _, x, y in items if x is None]
    if errors:
        return iterations.pop(), None, errors[0]
    return iterations.pop(), torch.stack([x for _, x, _ in items]), torch.stack([y for _, _, y in items])


def train_batches(dataset: SegDataset, pipeline: Pipeline, imgs_per_gpu: int, seed: int, rank: int = 0,
                  world_size: int = 1, start_iter: int = 0, num_workers: int = 0,
                  pin_memory: bool = False, prefetch_factor: int = 4) -> Iterator[Batch]:
    """Endless ``(iteration, images [N,3,H,W] float32, labels [N,H,W] int64)`` from ``start_iter`` on.

    Batches depend only on (seed, iteration, rank, world_size, dataset, pipeline), never on
    ``num_workers`` or on where the run started. With workers, each keeps ``prefetch_factor``
    batches ready and the workers persist for the whole run; ``pin_memory`` (for a CUDA device) puts
    batches in page-locked memory so that their copies to the device can be asynchronous."""
    if imgs_per_gpu <= 0:
        raise ValueError("imgs_per_gpu must be positive")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    samples = _TrainSamples(dataset, pipeline, imgs_per_gpu, seed, rank, world_size)
    if num_workers > 0:
        # Workers are forked. A child forked while OpenCV's thread pool exists deadlocks when it uses
        # or resizes that pool, so OpenCV runs single-threaded in this process from here on, as
        # MMEngine does for every training run (opencv_num_threads=0). The workers give the parallelism;
        # torch's worker loop already limits each worker to one torch thread.
        cv2.setNumThreads(0)
    keys = itertools.count(start_iter * imgs_per_gpu)
    loader = DataLoader(samples, batch_size=imgs_per_gpu, sampler=keys, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                        prefetch_factor=prefetch_factor if num_workers > 0 else None)
    for iteration, images, labels in loader:
        if images is None:
            raise NLBenchError(labels)  # the reader's message, naming the file
        yield int(iteration), images, labels


def val_samples(dataset: SegDataset, rank: int = 0,
                world_size: int = 1) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image uint8 RGB HxWx3, label uint8 HxW)`` in dataset order; with ``world_size`` > 1,
    rank r gets samples r, r + W, ... (each sample exactly once over all ranks)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    for i in range(rank, len(dataset), world_size):
        image, label = dataset.read_sample(i)
        yield dataset.name(i), image, label
