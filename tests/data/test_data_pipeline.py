"""The training pipeline's MMSeg semantics and the loader's deterministic, resumable order."""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
import pytest
import torch

from benchmark.data.layouts import build_dataset
from benchmark.data.loader import sample_index, train_batches, val_samples
from benchmark.data.resize import keep_ratio_size
from benchmark.data.synthetic import write_synthetic
from benchmark.data.transforms import (
    MEAN_RGB,
    STD_RGB,
    TrainPipeline,
    photometric_distortion,
    random_crop,
    random_flip,
    random_resize,
    resize_for_test,
)
from benchmark.recipe import load_recipe


class CountingRng:
    """A real generator that counts ``integers`` calls (random_crop draws two per crop box)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def integers(self, *args, **kwargs):
        self.calls += 1
        return self.rng.integers(*args, **kwargs)


def crop_draws(label: np.ndarray, crop, cat_max_ratio=0.75, seed=0) -> int:
    rng = CountingRng(seed)
    img = np.zeros(label.shape + (3,), np.uint8)
    random_crop(img, label, crop, cat_max_ratio, rng)
    assert rng.calls % 2 == 0
    return rng.calls // 2


# ----------------------------------------------------------------------------- random crop


def test_crop_is_redrawn_up_to_ten_times_while_one_class_dominates():
    # Crop = whole image, so every draw sees the same pixels and the draw count shows the decision.
    balanced = np.zeros((8, 8), np.uint8)
    balanced[:, 4:] = 1
    assert crop_draws(balanced, (8, 8)) == 1  # 50/50: accepted at once
    dominated = np.zeros((8, 8), np.uint8)
    dominated[:, 6:] = 1  # 75% class 0: not < 0.75, re-drawn 10 times, the 11th draw kept
    assert crop_draws(dominated, (8, 8)) == 11
    assert crop_draws(dominated, (8, 8), cat_max_ratio=1.0) == 1  # cat_max_ratio 1 disables the check


def test_crop_single_class_is_always_redrawn_and_ignore_is_excluded():
    # MMSeg's `len(cnt) > 1`: a crop of one class, or of ignored pixels only, is always re-drawn.
    assert crop_draws(np.full((8, 8), 3, np.uint8), (8, 8)) == 11
    assert crop_draws(np.full((8, 8), 255, np.uint8), (8, 8)) == 11
    half_ignored = np.full((8, 8), 255, np.uint8)
    half_ignored[:, :4] = 2  # one class once 255 is left out
    assert crop_draws(half_ignored, (8, 8)) == 11
    # A crop where counting the ignore index would change the decision:
    label = np.full((10, 10), 255, np.uint8)
    label[:6] = 0  # 60 pixels
    label[6:8] = 1  # 20 pixels; 255: 20 pixels. Counted: 60% (< 75%); excluded: 75% (not < 75%).
    assert crop_draws(label, (10, 10)) == 11


def test_crop_redraws_prefer_mixed_crops():
    label = np.zeros((64, 64), np.uint8)
    label[40:, 40:] = 1
    img = np.zeros((64, 64, 3), np.uint8)

    def mixed_fraction(ratio: float) -> float:
        ok = 0
        for seed in range(60):
            _, crop = random_crop(img, label, (24, 24), ratio, np.random.default_rng(seed))
            _, counts = np.unique(crop, return_counts=True)
            ok += len(counts) > 1 and counts.max() / counts.sum() < 0.75
        return ok / 60

    # One crop in about eight is acceptable here; eleven draws find one about 80% of the time.
    assert mixed_fraction(0.75) > 0.6 > 0.35 > mixed_fraction(1.0)


def test_crop_of_a_smaller_image_keeps_its_size():
    img = np.zeros((10, 30, 3), np.uint8)
    label = np.tile(np.arange(30, dtype=np.uint8) % 3, (10, 1))
    out_img, out_label = random_crop(img, label, (16, 20), 0.75, np.random.default_rng(0))
    assert out_img.shape == (10, 20, 3) and out_label.shape == (10, 20)


# ----------------------------------------------------------------------------- resize, flip, pad


def test_random_resize_keeps_ratio_within_the_ratio_range():
    img = np.zeros((100, 200, 3), np.uint8)
    label = np.zeros((100, 200), np.uint8)
    sizes = set()
    for seed in range(30):
        out, out_label = random_resize(img, label, (2048, 512), (0.5, 2.0), np.random.default_rng(seed))
        h, w = out.shape[:2]
        assert out_label.shape == (h, w)
        assert abs(w / h - 2.0) < 0.02
        assert 256 - 1 <= h <= 1024 + 1  # short edge bound 512 x [0.5, 2]
        sizes.add((h, w))
    assert len(sizes) > 20


def test_resize_for_test_keeps_ratio_and_upscales_small_images():
    assert resize_for_test(np.zeros((128, 256, 3), np.uint8), (2048, 1024)).shape == (1024, 2048, 3)
    out = resize_for_test(np.zeros((100, 300, 3), np.uint8), (2048, 512))
    assert out.shape == (512, 1536, 3)  # factor min(2048/300, 512/100) = 5.12
    out = resize_for_test(np.zeros((375, 500, 3), np.uint8), (2048, 512))
    assert out.shape[:2] == keep_ratio_size(375, 500, (2048, 512)) == (512, 683)
    assert abs(out.shape[1] / out.shape[0] - 500 / 375) < 0.01


def test_flip_moves_image_and_label_together():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    label = np.arange(24, dtype=np.uint8).reshape(4, 6)
    f_img, f_label = random_flip(img, label, 1.0, np.random.default_rng(0))
    assert np.array_equal(f_img, img[:, ::-1]) and np.array_equal(f_label, label[:, ::-1])
    s_img, s_label = random_flip(img, label, 0.0, np.random.default_rng(0))
    assert s_img is img and s_label is label
    flips = sum(random_flip(img, label, 0.5, np.random.default_rng(s))[1][0, 0] != 0 for s in range(200))
    assert 70 < flips < 130


def _window_of(out: np.ndarray, src: np.ndarray) -> bool:
    h, w = out.shape
    return any(np.array_equal(out, src[y:y + h, x:x + w])
               for y in range(src.shape[0] - h + 1) for x in range(src.shape[1] - w + 1))


def test_pipeline_keeps_image_and_label_aligned_through_crop_and_flip():
    # The image's red channel encodes the label, so any misalignment shows.
    rng = np.random.default_rng(1)
    label = rng.integers(0, 5, size=(40, 60)).astype(np.uint8)
    img = np.stack([label * 40, np.zeros_like(label), np.zeros_like(label)], -1).astype(np.uint8)
    # ratio 1 and img_scale = the image size: no resize, so crops are exact windows.
    pipe = TrainPipeline(img_scale=(60, 40), crop_size=(24, 30), ratio_range=(1.0, 1.0), photometric=False)
    flipped = 0
    for seed in range(20):
        out_img, out_label = pipe.augment(img, label, np.random.default_rng(seed))
        assert np.array_equal(out_img[:, :, 0], out_label * 40)
        is_flipped = _window_of(out_label, label[:, ::-1])
        assert is_flipped != _window_of(out_label, label)
        flipped += is_flipped
    assert 0 < flipped < 20


def test_pad_values_and_output_types():
    img = np.full((20, 30, 3), 200, np.uint8)
    label = np.ones((20, 30), np.uint8)
    pipe = TrainPipeline(img_scale=(30, 20), crop_size=(32, 40), ratio_range=(1.0, 1.0), photometric=False)
    image_t, label_t = pipe(img, label, np.random.default_rng(0))
    assert image_t.dtype == torch.float32 and image_t.shape == (3, 32, 40)
    assert label_t.dtype == torch.int64 and label_t.shape == (32, 40)
    assert (image_t[:, 20:, :] == 0).all() and (image_t[:, :, 30:] == 0).all()
    assert (label_t[20:, :] == 255).all() and (label_t[:, 30:] == 255).all()
    assert (label_t[:20, :30] == 1).all()
    expected = (200 - np.array(MEAN_RGB)) / np.array(STD_RGB)
    assert np.allclose(image_t[:, :20, :30].mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


# MMSeg's img_norm_cfg in every NonLocal config: ImageNet's mean and std on 0-255 pixels, to_rgb=True
# (normalised in RGB order). Written here, not imported from the code under test.
MMSEG_MEAN_RGB = (123.675, 116.28, 103.53)
MMSEG_STD_RGB = (58.395, 57.12, 57.375)


def test_train_and_test_inputs_are_normalised_with_mmsegs_rgb_mean_and_std():
    from benchmark.engine.inference import to_input_tensor

    assert MEAN_RGB == MMSEG_MEAN_RGB and STD_RGB == MMSEG_STD_RGB
    rgb = (200, 100, 50)  # three different channels: a swapped order (BGR) would show
    img = np.empty((20, 30, 3), np.uint8)
    img[...] = rgb
    expected = [(v - m) / s for v, m, s in zip(rgb, MMSEG_MEAN_RGB, MMSEG_STD_RGB)]
    pipe = TrainPipeline(img_scale=(30, 20), crop_size=(20, 30), ratio_range=(1.0, 1.0), photometric=False)
    train_input, _ = pipe(img, np.ones((20, 30), np.uint8), np.random.default_rng(0))
    test_input = to_input_tensor(img, "cpu")[0]
    for name, x in (("train", train_input), ("test", test_input)):
        assert x.shape == (3, 20, 30), name
        np.testing.assert_allclose(x.numpy().reshape(3, -1), np.repeat(np.array(expected)[:, None], 600, 1),
                                   rtol=0, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- photometric distortion


def mmseg_photometric_on_bgr(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MMSeg's PhotoMetricDistortion as written, on a BGR image, drawing from ``rng`` in its order."""
    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.integers(2):
        img = convert(img, beta=rng.uniform(-32, 32))
    mode = rng.integers(2)
    if mode == 1 and rng.integers(2):
        img = convert(img, alpha=rng.uniform(0.5, 1.5))
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.integers(-18, 18)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0 and rng.integers(2):
        img = convert(img, alpha=rng.uniform(0.5, 1.5))
    return img


def test_photometric_distortion_equals_mmseg_on_the_bgr_image():
    rgb = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    differs_if_channels_confused = 0
    for seed in range(40):
        ours = photometric_distortion(rgb, np.random.default_rng(seed))
        mmseg = mmseg_photometric_on_bgr(rgb[:, :, ::-1].copy(), np.random.default_rng(seed))[:, :, ::-1]
        assert np.array_equal(ours, mmseg), seed
        confused = mmseg_photometric_on_bgr(rgb.copy(), np.random.default_rng(seed))  # RGB fed as BGR
        differs_if_channels_confused += not np.array_equal(ours, confused)
    assert differs_if_channels_confused > 0  # the test can tell the two apart


def test_photometric_distortion_never_touches_labels():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 4, size=(30, 40)).astype(np.uint8)
    img = rng.integers(0, 256, size=(30, 40, 3)).astype(np.uint8)
    on = TrainPipeline(img_scale=(80, 60), crop_size=(24, 24))
    off = TrainPipeline(img_scale=(80, 60), crop_size=(24, 24), photometric=False)
    changed = 0
    for seed in range(10):
        img_on, label_on = on.augment(img, label, np.random.default_rng(seed))
        img_off, label_off = off.augment(img, label, np.random.default_rng(seed))
        assert np.array_equal(label_on, label_off)
        changed += not np.array_equal(img_on, img_off)
    assert changed > 5


# ----------------------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = write_synthetic("cityscapes", tmp_path_factory.mktemp("city") / "cityscapes", 6, 3, (48, 64), seed=1)
    cfg = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024", profile="smoke").data
    return build_dataset(cfg, "train", root), build_dataset(cfg, "val", root), TrainPipeline.from_config(cfg)


def take(n, **kwargs):
    it = train_batches(**kwargs)
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def same(a, b) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                                    for x, y in zip(a, b))


def test_same_seed_same_batches_and_shapes(city):
    train, _, pipe = city
    kw = dict(dataset=train, pipeline=pipe, imgs_per_gpu=2, seed=7)
    a, b = take(4, **kw), take(4, **kw)
    assert same(a, b)
    assert [it for it, _, _ in a] == [0, 1, 2, 3]
    _, images, labels = a[0]
    assert images.shape == (2, 3, 32, 64) and images.dtype == torch.float32
    assert labels.shape == (2, 32, 64) and labels.dtype == torch.int64
    assert not same(a, take(4, **{**kw, "seed": 8}))


def test_restart_at_iteration_k_gives_the_same_batches_with_any_worker_count(city):
    train, _, pipe = city
    kw = dict(dataset=train, pipeline=pipe, imgs_per_gpu=2, seed=3, rank=1, world_size=2)
    full = take(7, **kw)  # crosses epochs: 6 images, 2 ranks x 2 per iteration
    resumed = take(3, start_iter=4, num_workers=2, **kw)
    assert [it for it, _, _ in resumed] == [4, 5, 6]
    assert same(full[4:], resumed)


def test_order_is_mmengines_infinite_sampler_sharded_by_rank():
    n, per_gpu, world = 7, 2, 3
    by_epoch = defaultdict(list)
    for it in range(12):
        for slot in range(per_gpu):
            for rank in range(world):
                p = (it * per_gpu + slot) * world + rank
                by_epoch[p // n].append(sample_index(5, it, slot, rank, world, per_gpu, n))
    full_epochs = [by_epoch[e] for e in sorted(by_epoch) if len(by_epoch[e]) == n]
    assert len(full_epochs) >= 8
    assert all(sorted(e) == list(range(n)) for e in full_epochs)  # each epoch visits every sample once
    assert len({tuple(e) for e in full_epochs}) > 1  # and reshuffles


def test_val_samples_shard_without_overlap(city):
    _, val, _ = city
    names = [name for name, _, _ in val_samples(val)]
    shards = [[name for name, _, _ in val_samples(val, rank=r, world_size=2)] for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(names) and not set(shards[0]) & set(shards[1])
    name, image, label = next(val_samples(val))
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3) and label.shape == (48, 64)


@pytest.mark.gpu
def test_batches_for_a_cuda_device_come_pinned_from_persistent_workers(city):
    train, _, pipe = city
    kw = dict(dataset=train, pipeline=pipe, imgs_per_gpu=2, seed=3)
    pinned = take(3, num_workers=2, pin_memory=True, **kw)  # what train() asks for on a CUDA device
    assert all(images.is_pinned() and labels.is_pinned() for _, images, labels in pinned)
    assert same(take(3, **kw), pinned)  # the same batches: pinning only changes where they lie
