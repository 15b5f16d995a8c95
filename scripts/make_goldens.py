"""Write tests/fixtures/goldens/: outputs of the real MMSegmentation 1.2.2 that `make test` compares
nlbench with, without MMSeg installed (tests/test_goldens.py; docs/PARITY.md, "Goldens").

Runs in MMSeg 1.2.2's interpreter (set up as docs/PARITY.md says), from the repository root:

    MMSEG_VENV/bin/python scripts/make_goldens.py [--out tests/fixtures/goldens]

It builds a thin NonLocal model from MMSeg's own Cityscapes config through config overrides
(``THIN``: a ResNetV1c-18 trunk of base width 8, thin heads; the non-local block as configured:
reduction 2, scaled embedded Gaussian), sets every weight and norm statistic deterministically away
from its init, scales the non-local theta/phi projections up until the attention is sharp (the
largest softmax weight about 0.99, as in a trained model; small random weights would make it nearly
uniform and hide layout and kernel differences), and saves, all made by MMSeg's own code:

  thin_nonlocal.pth  {"meta", "state_dict"}: the weights under MMSeg's names
  goldens.npz        whole-mode logits of a 60x120 image (test scale (128, 64): a real resize),
                     slide-mode logits (the 769x769 config: align_corners=True; crop 33, stride 21),
                     ``model.loss`` in eval mode on a labelled 2x64x128 batch with ignored (255) pixels
  goldens.json       the overrides, the sizes, the losses, the attention's sharpness, the versions

Only MMSeg is imported and called here; no MMSeg code is copied.
"""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from mmseg_side import MMSEG_PREAMBLE  # noqa: E402

MMSEG = {}  # CONFIGS, to_bn, seg_samples; the preamble also puts mmcv's ops stand-in in place first
exec(MMSEG_PREAMBLE, MMSEG)

import mmseg  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

# The thin model, as overrides of MMSeg's config (tests/test_goldens.py builds nlbench's from the same
# figures): stage outputs 8, 16, 32, 64 channels; NLHead 64 -> 24 (C' = 12: sqrt(12) is not a power
# of two, so a product with 1/sqrt(C') would round unlike mmcv's division); FCNHead 32 -> 8.
THIN = {"depth": 18, "stem_channels": 16, "base_channels": 8, "decode_channels": 24, "aux_channels": 8}
WHOLE_CONFIG = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024.py"
SLIDE_CONFIG = "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769.py"
WHOLE_SCALE = (128, 64)  # (w, h) keep-ratio bound of the test resize
SLIDE_SCALE = (129, 65)
SLIDE_CROP, SLIDE_STRIDE = (33, 33), (21, 21)
TARGET_ROW_MAX = 0.9  # mean over queries of the largest attention weight, at least


def build(config_name, test_cfg):
    from mmseg.registry import MODELS

    cfg = Config.fromfile(os.path.join(MMSEG["CONFIGS"], config_name))
    cfg.model.pretrained = None
    cfg.model.test_cfg = test_cfg
    backbone, decode, aux = cfg.model.backbone, cfg.model.decode_head, cfg.model.auxiliary_head
    backbone.update(depth=THIN["depth"], stem_channels=THIN["stem_channels"], base_channels=THIN["base_channels"])
    widest = THIN["base_channels"] * 8  # BasicBlock: no expansion
    decode.update(in_channels=widest, channels=THIN["decode_channels"])
    aux.update(in_channels=widest // 2, channels=THIN["aux_channels"])
    MMSEG["to_bn"](cfg.model)
    return MODELS.build(cfg.model)


@torch.no_grad()
def set_weights(model, gen, sharpen):
    """Conv weights ~ N(0, 1/fan_in) (theta/phi times ``sharpen``), biases and norm affines away
    from their init, then norm statistics from one training-mode pass, so eval-mode activations are O(1)."""
    nl = model.decode_head.nl_block
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            gain = sharpen if m in (nl.theta.conv, nl.phi.conv) else 1.0
            m.weight.copy_(gain * torch.randn(m.weight.shape, generator=gen) / m.weight[0].numel() ** 0.5)
            if m.bias is not None:
                m.bias.copy_(0.1 * gain * torch.randn(m.bias.shape, generator=gen))
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
        bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass sets the batch statistics exactly
    model.train()
    feats = model.extract_feat(torch.randn((4, 3, 64, 128), generator=gen))
    model.decode_head(feats)
    model.auxiliary_head(feats)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


@torch.no_grad()
def sharpness(model, x):
    """(largest attention weight, mean over queries of each query's largest) of the non-local block on ``x``."""
    nl = model.decode_head.nl_block
    seen = {}
    handle = nl.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    model.decode_head(model.extract_feat(x))
    handle.remove()
    theta = nl.theta(seen["x"]).flatten(2).transpose(1, 2)
    phi = nl.phi(seen["x"]).flatten(2)
    weights = (theta @ phi / nl.inter_channels ** 0.5).softmax(dim=-1)
    row_max = weights.max(dim=-1).values
    return float(row_max.max()), float(row_max.mean())


def thin_model(config_name, test_cfg, probe):
    return sharp_model(lambda: build(config_name, test_cfg), probe)


def sharp_model(make, probe):
    """``make()``'s model with weights from ``set_weights`` at the smallest theta/phi gain (doubling
    from 1) whose attention is sharp on ``probe``; also used by scripts/parity_full.py."""
    gain = 1.0
    while True:
        torch.manual_seed(0)
        model = make()
        set_weights(model, torch.Generator().manual_seed(1), gain)
        top, mean = sharpness(model, probe)
        if mean >= TARGET_ROW_MAX or gain >= 256:
            return model, {"theta_phi_gain": gain, "max_weight": top, "mean_row_max": mean}
        gain *= 2


@torch.no_grad()
def test_logits(model, rgb, scale):
    from mmcv.transforms import Compose

    steps = [dict(type="LoadImageFromNDArray"), dict(type="Resize", scale=scale, keep_ratio=True),
             dict(type="PackSegInputs")]
    data = Compose(steps)(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))  # MMSeg reads BGR
    batch = dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]])
    return model.test_step(batch)[0].seg_logits.data.numpy(), list(data["data_samples"].img_shape)


def main():
    import json

    from mmseg.utils import register_all_modules

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "goldens"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    register_all_modules()
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (60, 120, 3), dtype=np.uint8)
    gen = torch.Generator().manual_seed(3)
    loss_x = torch.randn((2, 3, 64, 128), generator=gen)
    loss_label = torch.randint(0, 19, (2, 64, 128), generator=gen).to(torch.uint8)
    loss_label[:, :10] = 255
    loss_label[1, :, -7:] = 255

    whole, sharp = thin_model(WHOLE_CONFIG, dict(mode="whole"), loss_x)
    whole_logits, whole_resized = test_logits(whole, image, WHOLE_SCALE)
    slide = build(SLIDE_CONFIG, dict(mode="slide", crop_size=SLIDE_CROP, stride=SLIDE_STRIDE))
    slide.load_state_dict(whole.state_dict(), strict=True)
    slide.eval()
    slide_logits, slide_resized = test_logits(slide, image, SLIDE_SCALE)
    with torch.no_grad():
        losses = whole.loss(loss_x, MMSEG["seg_samples"](loss_label.long()))
    state = whole.state_dict()
    torch.save({"meta": {"source": f"mmsegmentation {mmseg.__version__}, scripts/make_goldens.py"},
                "state_dict": state}, out / "thin_nonlocal.pth")
    np.savez_compressed(out / "goldens.npz", image=image, whole_logits=whole_logits, slide_logits=slide_logits,
                        loss_x=loss_x.numpy(), loss_label=loss_label.numpy())
    summary = {
        "mmseg_version": mmseg.__version__, "torch_version": torch.__version__,
        "configs": {"whole": WHOLE_CONFIG, "slide": SLIDE_CONFIG}, "thin": THIN,
        "whole": {"img_scale": list(WHOLE_SCALE), "resized_hw": whole_resized},
        "slide": {"img_scale": list(SLIDE_SCALE), "crop_size": list(SLIDE_CROP), "stride": list(SLIDE_STRIDE),
                  "resized_hw": slide_resized},
        "attention": sharp,
        "losses": {k: float(v) for k, v in losses.items() if "loss" in k},
        "state_dict": {"keys": len(state), "elements": int(sum(v.numel() for v in state.values()))},
    }
    (out / "goldens.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
