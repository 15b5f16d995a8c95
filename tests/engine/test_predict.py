"""`nlbench predict` end to end on a small image with a random ResNet-18 smoke checkpoint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import ADE_ROW as ADE
from conftest import CITY_ROW as CITY

from benchmark.cli import main as cli_main
from benchmark.data.classes import PALETTES
from benchmark.engine.inference import predict_logits
from benchmark.mmseg_checkpoint import save_checkpoint
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe

CITY_769 = "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769"


def _perturbed(recipe):
    """A random model whose predictions vary over the image (MMSeg's init gives near-flat logits)."""
    torch.manual_seed(0)
    model = build_segmentor(recipe.model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
        model.decode_head.conv_seg.weight.normal_(0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    recipe = load_recipe(CITY, profile="smoke")
    model = _perturbed(recipe)
    ckpt = save_checkpoint(root / "r18.pth", model.state_dict(), meta={"note": "random smoke weights"})
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (45, 70, 3), dtype=np.uint8)
    png = root / "img.png"
    cv2.imwrite(str(png), rgb[:, :, ::-1])
    return root, recipe, model, ckpt, rgb, png


def _predict(args, capsys):
    code = cli_main(["predict", *args, "--device", "cpu"])
    return code, capsys.readouterr()


def test_predict_writes_palette_png_and_logits(setup, capsys):
    root, recipe, model, ckpt, rgb, png = setup
    out, logits_path = root / "out" / "pred.png", root / "out" / "logits.npy"
    code, io = _predict([CITY, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(png),
                         "--out", str(out), "--logits", str(logits_path)], capsys)
    assert code == 0, io.err
    assert str(out) in io.out
    logits = np.load(logits_path)
    assert logits.shape == (19, 45, 70) and logits.dtype == np.float32
    # Same numbers as the library call on the RGB image.
    expected = predict_logits(model, rgb, recipe).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    pred_rgb = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert pred_rgb.shape == (45, 70, 3)
    palette = np.array(PALETTES["cityscapes"], dtype=np.uint8)
    np.testing.assert_array_equal(pred_rgb, palette[logits.argmax(0)])
    assert len(np.unique(logits.argmax(0))) > 1  # the check above is not about a flat image
    assert sorted(p.name for p in out.parent.iterdir()) == ["logits.npy", "pred.png"]  # no temp files


def test_predict_reads_jpeg_and_grey_images(setup, capsys):
    root, recipe, model, ckpt, rgb, _ = setup
    jpg = root / "img.jpg"
    cv2.imwrite(str(jpg), rgb[:, :, ::-1])
    grey = root / "grey.png"
    cv2.imwrite(str(grey), rgb[:, :, 0])
    for image, name in [(jpg, CITY_769), (grey, CITY)]:
        out = root / f"{image.stem}-{name[-7:]}.png"
        code, io = _predict([name, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(image),
                             "--out", str(out)], capsys)
        assert code == 0, io.err
        assert cv2.imread(str(out)).shape == (45, 70, 3)


def test_predict_slide_mode_is_used_for_the_769_recipe(setup, capsys):
    root, _, _, ckpt, _, png = setup
    code, io = _predict([CITY_769, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(png),
                         "--out", str(root / "slide.png")], capsys)
    assert code == 0 and "slide inference" in io.out


def test_predict_uses_the_dataset_palette(tmp_path, capsys):
    recipe = load_recipe(ADE, profile="smoke")
    model = _perturbed(recipe)
    ckpt = save_checkpoint(tmp_path / "ade.pth", model.state_dict())
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.random.RandomState(1).randint(0, 256, (24, 40, 3), dtype=np.uint8))
    code, io = _predict([ADE, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(img),
                         "--out", str(tmp_path / "p.png"), "--logits", str(tmp_path / "l.npy")], capsys)
    assert code == 0, io.err
    logits = np.load(tmp_path / "l.npy")
    assert logits.shape[0] == 150
    pred = cv2.imread(str(tmp_path / "p.png"))[:, :, ::-1]
    np.testing.assert_array_equal(pred, np.array(PALETTES["ade20k"], dtype=np.uint8)[logits.argmax(0)])


@pytest.mark.parametrize("content,needle", [(b"not an image at all", "cannot decode image"),
                                            (b"", "cannot decode image"),
                                            (None, "image file not found")])
def test_bad_image_is_one_clear_error(setup, tmp_path, capsys, content, needle):
    _, _, _, ckpt, _, _ = setup
    image = tmp_path / "broken.png"
    if content is not None:
        image.write_bytes(content)
    code, io = _predict([CITY, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(image),
                         "--out", str(tmp_path / "p.png")], capsys)
    assert code == 2 and needle in io.err and str(image) in io.err
    assert io.err.count("\n") == 1 and "Traceback" not in io.err


def test_checkpoint_of_another_model_is_refused(setup, tmp_path, capsys):
    _, _, _, ckpt, _, png = setup
    code, io = _predict([ADE, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(png),
                         "--out", str(tmp_path / "p.png")], capsys)
    assert code == 2 and "shape mismatch" in io.err and "decode_head.conv_seg.weight" in io.err


def test_unknown_device_is_a_clear_error(setup, tmp_path, capsys):
    _, _, _, ckpt, _, png = setup
    code = cli_main(["predict", CITY, "--profile", "smoke", "--checkpoint", str(ckpt), "--image", str(png),
                     "--out", str(tmp_path / "p.png"), "--device", "tpu7"])
    assert code == 2 and "--device" in capsys.readouterr().err


def test_released_checkpoint_goes_through_the_launcher_download(setup, tmp_path, capsys):
    # A recipe without a release row: the download module's own clear error comes back, no traceback.
    _, _, _, _, _, png = setup
    code, io = _predict([CITY, "--profile", "smoke", "--set", "release=null", "--checkpoint", "released",
                         "--image", str(png), "--out", str(tmp_path / "p.png")], capsys)
    assert code == 2 and "release" in io.err and "Traceback" not in io.err


@pytest.mark.parametrize("channels_last", [False, True])
def test_predict_and_eval_run_the_layout_mmseg_runs_unless_asked(tmp_path, monkeypatch, channels_last):
    """The goldens cannot tell a channels_last input from MMSeg's NCHW on every CPU (tests/test_goldens.py:
    MKL's rounding on some machines is as large as the layout's), so the layout is checked where it
    shows: the first convolution's output, whose memory format is the one the convolution ran in
    (NCHW, as MMSeg, unless runtime.channels_last), in predict and in evaluation."""
    import benchmark.engine.predict as predict_module
    from benchmark.engine.evaluate import image_scores

    seen = []

    def record_layout(module, args, out):
        seen.append((out.is_contiguous(), out.is_contiguous(memory_format=torch.channels_last)))

    def build_and_watch(model_cfg, *args, **kwargs):
        model = build_segmentor(model_cfg, *args, **kwargs)
        model.backbone.stem[0].register_forward_hook(record_layout)
        return model

    recipe = load_recipe(CITY, profile="smoke", overrides=[f"runtime.channels_last={str(channels_last).lower()}"])
    model = _perturbed(recipe)
    ckpt = save_checkpoint(tmp_path / "m.pth", model.state_dict())
    image = (np.random.default_rng(0).random((40, 72, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    monkeypatch.setattr(predict_module, "build_segmentor", build_and_watch)
    predict_module.predict(recipe, ckpt, tmp_path / "in.png", tmp_path / "out.png")
    watched = build_and_watch(recipe.model)
    watched.load_state_dict(model.state_dict())
    watched.eval()
    if channels_last:
        watched.to(memory_format=torch.channels_last)
    image_scores(watched, image, recipe, torch.device("cpu"))
    assert seen == [(not channels_last, channels_last)] * 2, seen
