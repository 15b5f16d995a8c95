"""Test pipeline and test modes: what the model is shown (sizes, flips, normalisation), whole vs
slide, MMSeg's window grid and averaging, and the 0.x ms+flip order of resize/softmax/flip."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch
from conftest import CITY_ROW as CITY
from torch import nn

from benchmark.data.resize import keep_ratio_size, resize_image
from benchmark.engine.inference import (
    MEAN,
    STD,
    ms_flip_scales,
    predict_logits,
    predict_ms_flip_probs,
    slide_inference,
    slide_windows,
    whole_inference,
)
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe

CITY_769 = "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769"
# The test scales whose resize arithmetic the tests below work out by hand (smoke-size scales, pinned
# so that a change of the smoke profile's sizes does not change the arithmetic checked).
CITY_SCALE = "data.img_scale=[128,64]"
CITY_769_SLIDE = ["data.img_scale=[129,65]", "test.crop_size=[49,49]", "test.stride=[33,33]"]


class Recorder(nn.Module):
    """Wraps a model and remembers every input it was called with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.align_corners = model.align_corners
        self.inputs: List[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.model(x)


class Pointwise(nn.Module):
    """A per-pixel model made of a real 1x1 conv: its output at a pixel depends on that pixel only,
    so window averages of it are exactly computable."""

    def __init__(self, num_classes: int = 5, align_corners: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.num_classes = num_classes
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class WindowMean(nn.Module):
    """Every pixel of a window gets the window's mean input: depends on where the window lies."""

    num_classes = 1
    align_corners = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])


@pytest.fixture(scope="module")
def smoke_model():
    torch.manual_seed(0)
    return build_segmentor(load_recipe(CITY, profile="smoke").model).eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_window_grid_is_mmsegs():
    # Published Cityscapes 769 rows: 1025x2049, crop 769, stride 513 -> 2 x 4 = 8 windows.
    windows = slide_windows(1025, 2049, (769, 769), (513, 513))
    assert len(windows) == 8
    assert windows[0] == (0, 769, 0, 769) and windows[-1] == (256, 1025, 1280, 2049)
    # Hand-worked small case: rows start 0, 4 (clamped to end at 10); columns 0, 4, 8 -> 7..13.
    assert slide_windows(10, 13, (6, 6), (4, 4)) == [
        (0, 6, 0, 6), (0, 6, 4, 10), (0, 6, 7, 13),
        (4, 10, 0, 6), (4, 10, 4, 10), (4, 10, 7, 13),
    ]
    # A window larger than the image is cut to the image.
    assert slide_windows(5, 7, (9, 9), (4, 4)) == [(0, 5, 0, 7)]


def test_slide_with_one_covering_window_equals_whole(smoke_model):
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        whole = whole_inference(smoke_model, x)
        slide = slide_inference(smoke_model, x, (64, 64), (32, 32), 19)
    assert torch.equal(slide, whole)


def test_overlapping_windows_cover_every_pixel_and_average():
    x = torch.randn(1, 3, 10, 13)
    # Pointwise model: each window predicts the same value at a pixel, so sum / count == whole.
    model = Recorder(Pointwise())
    with torch.no_grad():
        slide = slide_inference(model, x, (6, 6), (4, 4), 5)
        whole = model.model(x)
    torch.testing.assert_close(slide, whole, atol=1e-6, rtol=1e-6)
    assert [tuple(t.shape[-2:]) for t in model.inputs] == [(6, 6)] * 6
    # Window-mean model: a pixel's value is the average of the means of the windows covering it.
    hand_windows = [(0, 6, 0, 6), (0, 6, 4, 10), (0, 6, 7, 13), (4, 10, 0, 6), (4, 10, 4, 10), (4, 10, 7, 13)]
    total = torch.zeros(10, 13)
    count = torch.zeros(10, 13)
    for y1, y2, x1, x2 in hand_windows:
        total[y1:y2, x1:x2] += x[0, 0, y1:y2, x1:x2].mean()
        count[y1:y2, x1:x2] += 1
    assert int(count.min()) >= 1 and int(count.max()) == 4  # pixels in both overlaps: 4 windows
    with torch.no_grad():
        got = slide_inference(WindowMean(), x, (6, 6), (4, 4), 1)
    torch.testing.assert_close(got[0, 0], total / count, atol=1e-6, rtol=1e-6)


def test_test_pipeline_resizes_normalises_and_returns_original_size(smoke_model):
    recipe = load_recipe(CITY, [CITY_SCALE], profile="smoke")  # img_scale (128, 64)
    image = _image(37, 61)
    model = Recorder(smoke_model)
    logits = predict_logits(model, image, recipe)
    assert logits.shape == (19, 37, 61) and logits.dtype == torch.float32
    # factor = min(128 / 61, 64 / 37) = 1.7297..., new size int(37 f + .5) x int(61 f + .5) = 64 x 106
    assert len(model.inputs) == 1 and tuple(model.inputs[0].shape) == (1, 3, 64, 106)
    resized = resize_image(image, (64, 106)).astype(np.float32)
    expected = (resized - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    np.testing.assert_allclose(model.inputs[0][0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    # The logits are the model's, resized back with the model's align_corners.
    with torch.no_grad():
        direct = torch.nn.functional.interpolate(smoke_model(model.inputs[0]), size=(37, 61), mode="bilinear",
                                                 align_corners=False)[0]
    torch.testing.assert_close(logits, direct)


def test_slide_recipe_runs_windows_on_the_resized_image(smoke_model):
    recipe = load_recipe(CITY_769, CITY_769_SLIDE, profile="smoke")  # img_scale (129, 65), crop 49, stride 33
    model = Recorder(smoke_model)
    model.align_corners = True
    logits = predict_logits(model, _image(64, 128), recipe)
    assert logits.shape == (19, 64, 128)
    # 64x128 fits (129, 65) with factor min(129/128, 65/64) = 1.0078 -> 65 x 129: 2 x 4 windows of 49.
    assert [tuple(t.shape[-2:]) for t in model.inputs] == [(49, 49)] * 8


def test_ms_flip_views_follow_mmseg_0x(smoke_model):
    recipe = load_recipe(CITY, [CITY_SCALE], profile="smoke")
    image = _image(37, 61)
    model = Recorder(smoke_model)
    probs = predict_ms_flip_probs(model, image, recipe)
    assert probs.shape == (19, 37, 61)
    torch.testing.assert_close(probs.sum(0), torch.ones(37, 61))
    # Ratios scale the test scale (128, 64), truncated, then the keep-ratio resize of the image.
    scales = ms_flip_scales((128, 64), (0.5, 0.75, 1.0, 1.25, 1.5, 1.75))
    assert scales[0] == (64, 32) and scales[-1] == (224, 112)
    sizes = [keep_ratio_size(37, 61, s) for s in scales]
    assert sizes[0] == (32, 53)  # min(64/61, 32/37) = 0.8649 -> int(32.5), int(53.26)
    seen = [tuple(t.shape[-2:]) for t in model.inputs]
    assert seen == [s for s in sizes for _ in (0, 1)]
    for plain, flipped in zip(model.inputs[0::2], model.inputs[1::2]):
        assert torch.equal(flipped, plain.flip(-1))


def test_ms_flip_flips_back_before_averaging():
    # With one ratio and a per-pixel model, the flipped view flipped back is the plain view, so the
    # average must equal the softmax of the plain logits; forgetting the flip-back breaks this.
    recipe = load_recipe(CITY, ["test.ms_flip_ratios=[1.0]"], profile="smoke")
    model = Pointwise(num_classes=19)
    image = _image(30, 50)
    probs = predict_ms_flip_probs(model, image, recipe)
    expected = predict_logits(model, image, recipe).softmax(dim=0)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(expected, expected.flip(-1), atol=1e-3)  # the image is not symmetric


def test_inference_runs_in_inference_mode(smoke_model):
    logits = predict_logits(smoke_model, _image(20, 30), load_recipe(CITY, profile="smoke"))
    assert logits.is_inference() and not logits.requires_grad


def test_rejects_non_rgb_uint8():
    recipe = load_recipe(CITY, profile="smoke")
    with pytest.raises(ValueError, match="uint8 RGB"):
        predict_logits(Pointwise(), np.zeros((8, 8), dtype=np.uint8), recipe)
    with pytest.raises(ValueError, match="uint8 RGB"):
        predict_logits(Pointwise(), np.zeros((8, 8, 3), dtype=np.float32), recipe)


class AutocastSpy(Pointwise):
    """Pointwise, remembering for every call the CPU autocast dtype it ran under (None: fp32)."""

    def __init__(self):
        super().__init__()
        self.seen: List[object] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return super().forward(x)


def _run_both_paths(model: nn.Module, recipe) -> None:
    image = _image(20, 30)
    predict_logits(model, image, recipe)
    predict_ms_flip_probs(model, image, recipe.model_copy(
        update={"test": recipe.test.model_copy(update={"ms_flip_ratios": (1.0,)})}))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_amp_does_not_reach_inference(amp):
    """runtime.amp is the training's alone: predict, eval and the periodic evaluations (single scale
    and ms+flip) run fp32, as MMSeg 1.x evaluates (mmengine's ValLoop/TestLoop fp16 off)."""
    spy = AutocastSpy()
    _run_both_paths(spy, load_recipe(CITY, [f"runtime.amp={amp}"], profile="smoke"))
    assert len(spy.seen) == 3 and set(spy.seen) == {None}


def test_training_amp_leaves_inference_logits_bit_identical(smoke_model):
    image = _image(20, 30)
    fp32 = predict_logits(smoke_model, image, load_recipe(CITY, profile="smoke"))
    trained_bf16 = predict_logits(smoke_model, image, load_recipe(CITY, ["runtime.amp=bf16"], profile="smoke"))
    inferred_bf16 = predict_logits(smoke_model, image, load_recipe(CITY, ["test.amp=bf16"], profile="smoke"))
    assert trained_bf16.dtype == torch.float32 and torch.equal(trained_bf16, fp32)
    assert inferred_bf16.dtype == torch.float32 and not torch.equal(inferred_bf16, fp32)  # it did autocast


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_test_amp_names_the_inference_autocast(amp):
    spy = AutocastSpy()
    _run_both_paths(spy, load_recipe(CITY, [f"test.amp={amp}"], profile="smoke"))
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert len(spy.seen) == 3 and set(spy.seen) == {want}


def test_fast_setting_still_autocasts_inference():
    """`--fast` (settings.fast_recipe) sets test.amp: the recipe's runtime.amp when it names one, else
    bf16 where the device computes it natively; the training's runtime.amp is left as it was."""
    from benchmark.engine.settings import fast_recipe, native_bf16

    cpu = torch.device("cpu")
    plain = fast_recipe(load_recipe(CITY, profile="smoke"), cpu)
    assert plain.test.amp == ("bf16" if native_bf16(cpu) else None) and plain.runtime.amp is None
    fp16 = fast_recipe(load_recipe(CITY, ["runtime.amp=fp16"], profile="smoke"), cpu)
    assert (fp16.test.amp, fp16.runtime.amp) == ("fp16", "fp16")
    own = fast_recipe(load_recipe(CITY, ["runtime.amp=fp16", "test.amp=bf16"], profile="smoke"), cpu)
    assert own.test.amp == "bf16"
    spy = AutocastSpy()
    _run_both_paths(spy, fp16)
    assert set(spy.seen) == {torch.float16}


@pytest.mark.parametrize("overrides, dtype", [(["runtime.amp=bf16"], "float32"), (["test.amp=bf16"], "bfloat16")])
def test_eval_result_records_the_inference_dtype(overrides, dtype, monkeypatch, tmp_path):
    """The eval record's provenance dtype is the inference's (test.amp), not the training's."""
    from benchmark.engine import evaluate

    monkeypatch.setattr(evaluate, "open_split", lambda *a, **k: None)  # no data or weights needed here
    monkeypatch.setattr(evaluate, "load_weights", lambda *a, **k: None)
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: {})
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"")
    out = evaluate.evaluate(load_recipe(CITY, overrides, profile="smoke"), str(checkpoint), device="cpu",
                            progress=False)
    assert out["dtype"] == dtype


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc allocator setting")
def test_allocator_setting_applies_on_glibc():
    from benchmark.engine.inference import keep_freed_memory_for_reuse

    assert keep_freed_memory_for_reuse() is True
