"""ms+flip as the published mIoU(ms+flip) was made (MMSeg 0.x --aug-test).

A recording model stands in front of a real (tiny) segmentor: it notes the size of every input and
whether it was the horizontally flipped image. The test then rebuilds the expected result by hand:
the recipe's six ratios scale the test scale, each view's softmax probabilities are flipped back and
resized to the image, and the twelve maps are averaged.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CITY_ROW as ROW
from torch import nn

from benchmark.data.resize import keep_ratio_size, resize_image
from benchmark.engine.distributed import DistInfo
from benchmark.engine.evaluate import evaluate_model
from benchmark.engine.inference import predict_logits, predict_ms_flip_probs, to_input_tensor
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe


class Recording(nn.Module):
    """Forwards to ``inner`` and records (h, w, flipped) of each input it is given."""

    def __init__(self, inner: nn.Module, image: np.ndarray, recipe):
        super().__init__()
        self.inner = inner
        self.align_corners = inner.align_corners
        self.num_classes = inner.num_classes
        self.image, self.recipe = image, recipe
        self.seen = []

    def forward(self, x):
        h, w = x.shape[-2:]
        plain = to_input_tensor(resize_image(self.image, (h, w)), x.device)
        if torch.equal(x, plain):
            flipped = False
        elif torch.equal(x, plain.flip(-1)):
            flipped = True
        else:
            raise AssertionError(f"input {h}x{w} is neither the resized image nor its mirror")
        self.seen.append((int(h), int(w), flipped))
        return self.inner(x)


@pytest.fixture(scope="module")
def setup():
    recipe = load_recipe(ROW, ["data.img_scale=[96, 48]"], profile="smoke")
    torch.manual_seed(0)
    model = build_segmentor(recipe.model).eval()
    # Perturb BN so the (otherwise zero-initialised) branches contribute and the output is far from
    # symmetric: a flip that is not undone would show.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.1, 0.1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(30, 52, 3), dtype=np.uint8)
    image[:, :20] = (250, 10, 10)  # a left/right asymmetric scene
    return recipe, model, image


def _by_hand(model: nn.Module, image: np.ndarray, sizes, undo_flip: bool = True) -> torch.Tensor:
    """The mean softmax map of the image at each (h, w) in ``sizes`` and its mirror, each resized back
    to the image (bilinear, align_corners False) and, with ``undo_flip``, the mirror's map flipped back."""
    h, w = image.shape[:2]
    total = torch.zeros(model.num_classes, h, w)
    with torch.no_grad():
        for sh, sw in sizes:
            x = to_input_tensor(resize_image(image, (sh, sw)), "cpu")
            for flip in (False, True):
                logits = model(x.flip(-1) if flip else x)
                p = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
                total += (p.flip(-1) if flip and undo_flip else p)[0]
    return total / (2 * len(sizes))


def test_ms_flip_views_and_average(setup):
    recipe, model, image = setup
    rec = Recording(model, image, recipe)
    probs = predict_ms_flip_probs(rec, image, recipe, "cpu")
    h, w = image.shape[:2]

    ratios = recipe.test.ms_flip_ratios
    assert ratios == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    # MMSeg 0.x: the ratio scales the test scale (int-truncated), then the keep-ratio resize.
    sizes = [keep_ratio_size(h, w, (int(96 * r), int(48 * r))) for r in ratios]
    expected_views = [(sh, sw, flip) for sh, sw in sizes for flip in (False, True)]
    assert sorted(rec.seen) == sorted(expected_views)
    assert len(rec.seen) == 12 and len(set(sizes)) == 6  # six different scales, each twice

    expected = _by_hand(model, image, sizes)
    assert probs.shape == (recipe.model.num_classes, h, w)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(probs.sum(0), torch.ones(h, w), atol=1e-5)
    # Not undoing the flip would give a different map: the check above has teeth.
    wrong = _by_hand(model, image, sizes, undo_flip=False)
    assert not torch.allclose(probs, wrong, atol=1e-4)


def test_evaluate_model_with_ms_flip_scores_the_averaged_probabilities(setup, tmp_path):
    """evaluate_model(ms_flip=True) scores argmax of exactly that map against the original label."""
    recipe, model, image = setup

    class OneImage:
        def __len__(self):
            return 1

        def read_image(self, i):
            return image

        def read_label(self, i):
            return self.label

    ds = OneImage()
    # The label is the argmax of the twelve views' mean built by hand, not of the code under test.
    h, w = image.shape[:2]
    sizes = [keep_ratio_size(h, w, (int(96 * r), int(48 * r))) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    ds.label = _by_hand(model, image, sizes).argmax(0).numpy().astype(np.uint8)
    # Single-scale, the model disagrees with that label on part of the image, so an evaluation that
    # ignored ms+flip could not score 100.
    single = predict_logits(model, image, recipe).argmax(0).numpy()
    assert (single != ds.label).mean() > 0.01
    info = DistInfo(0, 1, 0, torch.device("cpu"), None)
    out = evaluate_model(model, ds, recipe, info, ms_flip=True, progress=False)
    assert out["aAcc"] == pytest.approx(100.0) and out["num_images"] == 1
    plain = evaluate_model(model, ds, recipe, info, ms_flip=False, progress=False)
    assert plain["aAcc"] == pytest.approx(100.0 * (single == ds.label).mean())
