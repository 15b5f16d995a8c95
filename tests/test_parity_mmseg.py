"""Parity with the real MMSegmentation 1.2.2 (developer-side; skipped unless NLBENCH_MMSEG_PYTHON is set).

A script run in MMSeg's own interpreter builds MMSeg's NonLocal models from the configs it ships
(BN instead of SyncBN, as on CPU), perturbs every weight and norm statistic deterministically so no
branch is zero, and saves checkpoints plus MMSeg's outputs for small inputs:
  whole   R-50, Cityscapes 512x1024 config, test scale (256, 128): MMSeg's test pipeline (Resize
          keep_ratio), ``test_step`` (whole mode, logits resized to the original image)
  slide   R-50, Cityscapes 769x769 config (align_corners=True), crop 65 / stride 43, scale (257, 129)
  msflip  the whole model under MMSeg 0.x ``--aug-test``: scales int(img_scale * r), each view
          through MMSeg's Resize + RandomFlip + test_step (which flips back and resizes to the
          original), softmax, averaged over the 12 views
  losses  ``model.loss`` in eval mode (deterministic) on a labelled batch with ignored pixels
nlbench then loads each checkpoint strictly and must reproduce those outputs.
See docs/PARITY.md for how to set up the interpreter and the figures measured.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from mmseg_side import MMSEG_PREAMBLE

MMSEG_PYTHON = os.environ.get("NLBENCH_MMSEG_PYTHON")

pytestmark = [
    pytest.mark.parity,
    pytest.mark.slow,
    pytest.mark.skipif(not MMSEG_PYTHON, reason="set NLBENCH_MMSEG_PYTHON to an interpreter with mmsegmentation 1.2.2"),
]

# Runs inside MMSeg's interpreter (after tests/mmseg_side.py's preamble). It only imports and calls
# MMSeg; no MMSeg code is copied here.
MMSEG_SCRIPT = MMSEG_PREAMBLE + r'''
from mmcv.transforms import Compose
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

register_all_modules()
out = sys.argv[1]


def build(config_name, test_cfg, seed):
    cfg = Config.fromfile(os.path.join(CONFIGS, config_name))
    cfg.model.pretrained = None
    cfg.model.test_cfg = test_cfg
    to_bn(cfg.model)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    perturb(model, seed)
    return model.eval()


@torch.no_grad()
def perturb(model, seed):
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    # 1. Every conv weight ~ N(0, 1/fan_in) (non-local projections included), biases nonzero.
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in ** 0.5)
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    # 2. Norm affine parameters away from their init (which zeroes some scales).
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
        bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
    # 3. Norm statistics from one training-mode pass of the final weights, so that eval-mode
    #    activations stay O(1) through all the blocks (otherwise softmaxes saturate).
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass sets the batch statistics exactly
    model.train()
    x = torch.randn((2, 3, 64, 128), generator=gen)
    feats = model.extract_feat(x)
    model.decode_head(feats)
    model.auxiliary_head(feats)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def save(model, name):
    sd = model.state_dict()
    torch.save({"meta": {"source": "mmsegmentation " + mmseg.__version__}, "state_dict": sd},
               os.path.join(out, name + ".pth"))
    return {"keys": len(sd), "elements": int(sum(v.numel() for v in sd.values()))}


@torch.no_grad()
def run(model, rgb, scale, flip):
    steps = [dict(type="LoadImageFromNDArray"), dict(type="Resize", scale=scale, keep_ratio=True)]
    if flip:
        steps.append(dict(type="RandomFlip", prob=1.0, direction="horizontal"))
    steps.append(dict(type="PackSegInputs"))
    data = Compose(steps)(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))  # MMSeg reads BGR
    batch = dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]])
    result = model.test_step(batch)[0]
    return result.seg_logits.data, tuple(data["data_samples"].img_shape)


rng = np.random.RandomState(0)
summary = {}

whole = build("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024.py", dict(mode="whole"), seed=1)
summary["whole"] = save(whole, "whole")
img = rng.randint(0, 256, (50, 100, 3), dtype=np.uint8)
np.save(os.path.join(out, "whole_image.npy"), img)
logits, shape = run(whole, img, (256, 128), False)
np.save(os.path.join(out, "whole_logits.npy"), logits.numpy())
summary["whole"]["resized"] = shape

ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
probs, shapes = 0, []
for r in ratios:
    for flip in (False, True):
        view, shape = run(whole, img, (int(256 * r), int(128 * r)), flip)
        probs = probs + view.softmax(dim=0)
        shapes.append(shape)
np.save(os.path.join(out, "msflip_probs.npy"), (probs / (2 * len(ratios))).numpy())
summary["msflip"] = {"resized": shapes}

slide = build("nonlocal_r50-d8_4xb2-40k_cityscapes-769x769.py",
              dict(mode="slide", crop_size=(65, 65), stride=(43, 43)), seed=2)
summary["slide"] = save(slide, "slide")
img = rng.randint(0, 256, (60, 120, 3), dtype=np.uint8)
np.save(os.path.join(out, "slide_image.npy"), img)
logits, shape = run(slide, img, (257, 129), False)
np.save(os.path.join(out, "slide_logits.npy"), logits.numpy())
summary["slide"]["resized"] = shape

r101_cfg = Config.fromfile(os.path.join(CONFIGS, "nonlocal_r101-d8_4xb2-40k_cityscapes-512x1024.py"))
r101_cfg.model.pretrained = None
to_bn(r101_cfg.model)
r101 = MODELS.build(r101_cfg.model)
summary["r101_shapes"] = {k: list(v.shape) for k, v in r101.state_dict().items()}

gen = torch.Generator().manual_seed(3)
x = torch.randn((2, 3, 64, 128), generator=gen)
label = torch.randint(0, 19, (2, 64, 128), generator=gen)
label[:, :10] = 255
samples = seg_samples(label)
with torch.no_grad():
    losses = whole.loss(x, samples)
torch.save({"x": x, "label": label}, os.path.join(out, "loss_batch.pth"))
summary["losses"] = {k: float(v) for k, v in losses.items() if "loss" in k}

with open(os.path.join(out, "summary.json"), "w") as fh:
    json.dump(summary, fh, indent=1)
'''


@pytest.fixture(scope="module")
def mmseg_outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmseg_parity")
    script = out / "mmseg_side.py"
    script.write_text(MMSEG_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([MMSEG_PYTHON, str(script), str(out)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "summary.json").read_text())


def _model(recipe):
    from benchmark.models.segmentor import build_segmentor

    return build_segmentor(recipe.model).eval()


def _report(name: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    diff = float(np.abs(ours - theirs).max())
    scale = float(np.abs(theirs).max())
    print(f"parity {name}: shape {theirs.shape}, max |nlbench - mmseg| = {diff:.3g} (max |mmseg| = {scale:.3g})")
    return diff


def test_whole_logits_match_mmseg(mmseg_outputs):
    from benchmark.engine.inference import predict_logits
    from benchmark.mmseg_checkpoint import load_weights
    from benchmark.recipe import load_recipe

    out, summary = mmseg_outputs
    recipe = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024", ["data.img_scale=[256, 128]"])
    model = _model(recipe)
    load_weights(model, out / "whole.pth")  # strict
    assert summary["whole"]["keys"] == 370 and summary["whole"]["elements"] == 50_081_730
    ours = predict_logits(model, np.load(out / "whole_image.npy"), recipe).numpy()
    theirs = np.load(out / "whole_logits.npy")
    assert ours.shape == theirs.shape == (19, 50, 100)
    assert _report("whole", ours, theirs) < 1e-3 * max(1.0, float(np.abs(theirs).max()))
    assert (ours.argmax(0) == theirs.argmax(0)).mean() > 0.999


def test_slide_logits_match_mmseg(mmseg_outputs):
    from benchmark.engine.inference import predict_logits
    from benchmark.mmseg_checkpoint import load_weights
    from benchmark.recipe import load_recipe

    out, _ = mmseg_outputs
    recipe = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-769x769",
                         ["data.img_scale=[257, 129]", "test.crop_size=[65, 65]", "test.stride=[43, 43]"])
    assert recipe.model.align_corners and recipe.test.mode == "slide"
    model = _model(recipe)
    load_weights(model, out / "slide.pth")
    ours = predict_logits(model, np.load(out / "slide_image.npy"), recipe).numpy()
    theirs = np.load(out / "slide_logits.npy")
    assert ours.shape == theirs.shape == (19, 60, 120)
    assert _report("slide", ours, theirs) < 1e-3 * max(1.0, float(np.abs(theirs).max()))


def test_ms_flip_probs_match_mmseg(mmseg_outputs):
    from benchmark.engine.inference import predict_ms_flip_probs
    from benchmark.mmseg_checkpoint import load_weights
    from benchmark.recipe import load_recipe

    out, _ = mmseg_outputs
    recipe = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024", ["data.img_scale=[256, 128]"])
    model = _model(recipe)
    load_weights(model, out / "whole.pth")
    ours = predict_ms_flip_probs(model, np.load(out / "whole_image.npy"), recipe).numpy()
    theirs = np.load(out / "msflip_probs.npy")
    assert ours.shape == theirs.shape
    assert _report("ms+flip probs", ours, theirs) < 1e-4


def test_r101_state_dict_matches_mmseg(mmseg_outputs):
    from benchmark.recipe import load_recipe

    _, summary = mmseg_outputs
    r101 = _model(load_recipe("nonlocal_r101-d8_4xb2-40k_cityscapes-512x1024"))
    ours = {k: list(v.shape) for k, v in r101.state_dict().items()}
    theirs = summary["r101_shapes"]
    print(f"parity R-101 state dict: {len(theirs)} keys, {sum(int(np.prod(s)) for s in theirs.values())} elements")
    assert ours == theirs


def test_losses_match_mmseg(mmseg_outputs):
    from benchmark.mmseg_checkpoint import load_weights
    from benchmark.recipe import load_recipe

    out, summary = mmseg_outputs
    recipe = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024")
    model = _model(recipe)
    load_weights(model, out / "whole.pth")
    batch = torch.load(out / "loss_batch.pth", weights_only=True)
    with torch.no_grad():
        ours = model.losses(batch["x"], batch["label"])
    theirs = summary["losses"]
    print(f"parity losses: nlbench decode {float(ours['loss_decode']):.6f} aux {float(ours['loss_aux']):.6f}; "
          f"mmseg {theirs}")
    assert float(ours["loss_decode"]) == pytest.approx(theirs["decode.loss_ce"], rel=1e-4)
    assert float(ours["loss_aux"]) == pytest.approx(theirs["aux.loss_ce"], rel=1e-4)
