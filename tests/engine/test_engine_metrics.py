"""MMSeg IoUMetric semantics, checked on cases small enough to count by hand."""

import json
import math

import numpy as np
import pytest
import torch

from benchmark.engine.metrics import SegMetric, areas_to_metrics, format_metrics, intersect_and_union
from benchmark.io.files import json_safe


def test_areas_of_one_image_with_ignored_pixels():
    # 3 classes; the 255 pixel is left out entirely, whatever was predicted there.
    label = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.int64)
    areas = intersect_and_union(pred, label, num_classes=3)
    # intersect: class0 1 px, class1 2 px, class2 0
    # pred area (ignored pixel excluded): class0 1, class1 4, class2 0
    # label area: class0 2, class1 2, class2 1
    assert areas.tolist() == [
        [1, 2, 0],  # intersect
        [2, 4, 1],  # union = pred + label - intersect
        [1, 4, 0],  # pred
        [2, 2, 1],  # label
    ]


def test_metrics_of_one_image_by_hand():
    label = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.int64)
    m = SegMetric(["a", "b", "c"])
    m.update(pred, label)
    out = m.compute()
    assert out["aAcc"] == pytest.approx(100 * 3 / 5)
    assert out["per_class"]["a"]["IoU"] == pytest.approx(50.0)
    assert out["per_class"]["b"]["IoU"] == pytest.approx(50.0)
    assert out["per_class"]["c"]["IoU"] == pytest.approx(0.0)  # present, never predicted: counts as 0
    assert out["mIoU"] == pytest.approx((50 + 50 + 0) / 3)
    assert out["mAcc"] == pytest.approx((50 + 100 + 0) / 3)


def test_absent_classes_left_out_of_the_means_exactly_as_mmseg():
    # 4 classes. class 2: predicted but never in the ground truth -> IoU 0 (kept), Acc NaN (dropped).
    # class 3: neither in ground truth nor predicted -> IoU NaN and Acc NaN (dropped from both).
    label = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 2, 1, 1]], dtype=np.int64)
    out = areas_to_metrics(intersect_and_union(pred, label, 4), ["a", "b", "c", "d"])
    pc = out["per_class"]
    assert pc["a"]["IoU"] == pytest.approx(50.0) and pc["a"]["Acc"] == pytest.approx(50.0)
    assert pc["b"]["IoU"] == pytest.approx(100.0) and pc["b"]["Acc"] == pytest.approx(100.0)
    assert pc["c"]["IoU"] == 0.0 and math.isnan(pc["c"]["Acc"])
    assert math.isnan(pc["d"]["IoU"]) and math.isnan(pc["d"]["Acc"])
    assert out["mIoU"] == pytest.approx((50 + 100 + 0) / 3)
    assert out["mAcc"] == pytest.approx((50 + 100) / 2)
    assert out["aAcc"] == pytest.approx(75.0)


def test_areas_are_summed_over_images_not_averaged_per_image():
    # Image 1 is large and good for class 0; image 2 small and bad. A per-image mean would give
    # (100 + 0) / 2 = 50 for class 0; summing areas gives 8 / 10 = 80.
    m = SegMetric(["a", "b"])
    m.update(torch.zeros(2, 4, dtype=torch.long), np.zeros((2, 4), np.uint8))  # 8/8 right
    m.update(torch.ones(1, 2, dtype=torch.long), np.zeros((1, 2), np.uint8))  # 0/2 right
    out = m.compute()
    assert m.num_images == 2
    assert out["per_class"]["a"]["IoU"] == pytest.approx(80.0)
    assert out["per_class"]["a"]["Acc"] == pytest.approx(80.0)
    assert out["per_class"]["b"]["IoU"] == 0.0  # predicted twice, never present
    assert math.isnan(out["per_class"]["b"]["Acc"])
    assert out["aAcc"] == pytest.approx(80.0)
    assert out["mIoU"] == pytest.approx(40.0)
    assert out["mAcc"] == pytest.approx(80.0)


def test_label_values_outside_the_classes_count_for_no_class():
    # As torch.histc(min=0, max=C-1) in MMSeg: an out-of-range label is in no class's areas.
    areas = intersect_and_union(np.array([[0, 0]]), np.array([[0, 7]], dtype=np.uint8), 2)
    assert areas.tolist() == [[1, 0], [2, 0], [2, 0], [1, 0]]


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        intersect_and_union(np.zeros((2, 2)), np.zeros((2, 3), np.uint8), 2)


def test_display_rounds_to_two_decimals_and_json_has_no_nan():
    out = areas_to_metrics(intersect_and_union(np.array([[0, 0, 1]]), np.array([[0, 1, 1]], np.uint8), 3),
                           ["x", "y", "z"])
    text = format_metrics(out)
    assert "mIoU: 50.00" in text and "nan" in text  # class z is absent
    assert out["mIoU"] == pytest.approx(50.0)
    safe = json_safe(out)
    json.dumps(safe, allow_nan=False)
    assert safe["per_class"]["z"] == {"IoU": None, "Acc": None}


def _confusion(preds, labels, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(label, prediction) pixel counts over all images, computed here with numpy: pixels labelled
    ``ignore_index`` left out; a prediction outside the classes lands in an extra last column (the
    pixel still counts for its label's class, but for no predicted class)."""
    width = num_classes + 1
    total = np.zeros((num_classes, width), np.int64)
    for pred, label in zip(preds, labels):
        keep = label.ravel() != ignore_index
        columns = np.minimum(pred.ravel()[keep], num_classes)
        pairs = label.ravel()[keep].astype(np.int64) * width + columns
        total += np.bincount(pairs, minlength=num_classes * width).reshape(num_classes, width)
    return total


@pytest.mark.parametrize("seed", range(20))
def test_random_images_score_what_a_confusion_matrix_gives(seed):
    """Random label maps with ignored pixels (255), random predictions (some outside the classes),
    classes that occur rarely or never: the metrics equal those of a confusion matrix summed over the
    images, taken MMSeg's way (IoU = tp / (row + column - tp), Acc = tp / row; NaN-ignoring means)."""
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 25))
    names = [f"c{i}" for i in range(num_classes)]
    preds, labels = [], []
    for _ in range(int(rng.integers(1, 5))):
        shape = tuple(int(s) for s in rng.integers(1, 40, size=2))
        used = rng.choice(num_classes, size=int(rng.integers(1, num_classes + 1)), replace=False)  # some absent
        label = rng.choice(used, size=shape).astype(np.uint8)
        label[rng.random(shape) < rng.random() * 0.5] = 255
        pred = rng.integers(0, num_classes + 2, size=shape)  # a few beyond the classes count for none
        preds.append(pred)
        labels.append(label)
    metric = SegMetric(names)
    for pred, label in zip(preds, labels):
        metric.update(pred, label)
    out = metric.compute()

    cm = _confusion(preds, labels, num_classes).astype(float)
    tp, row, col = np.diag(cm[:, :num_classes]), cm.sum(1), cm[:, :num_classes].sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = tp / (row + col - tp), tp / row
    if row.sum() == 0:
        assert math.isnan(out["aAcc"])
    else:
        assert out["aAcc"] == pytest.approx(100 * tp.sum() / row.sum(), rel=1e-12)
    for i, name in enumerate(names):
        for key, want in (("IoU", iou[i]), ("Acc", acc[i])):
            got = out["per_class"][name][key]
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(100 * want, rel=1e-12), (name, key)
    for key, values in (("mIoU", iou), ("mAcc", acc)):
        present = values[~np.isnan(values)]
        want = 100 * present.mean() if present.size else math.nan
        assert (math.isnan(out[key]) and math.isnan(want)) or out[key] == pytest.approx(want, rel=1e-12), key
