"""nlbench against the MMSeg 1.2.2 goldens in tests/fixtures/goldens (scripts/make_goldens.py): the
figures tests/test_goldens.py gates on, computed in the process that runs this file, so that the
test can run it under another CPU instruction set (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``
are read when torch starts).

    python tests/golden_figures.py TMPDIR   -> one line "FIGURES {json}"

Each output goes through the code path a user runs: ``predict`` (the command's function: PNG in,
logits .npy out), evaluation's per-image scores (``image_scores``, what ``evaluate_model`` takes
the argmax of) in whole and slide mode, and the training losses (``model.losses``, eval mode: no
dropout). Every model loads the goldens' MMSeg state dict strictly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "goldens"
WHOLE_RECIPE = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"
SLIDE_RECIPE = "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769"


def summary() -> dict:
    return json.loads((GOLDENS / "goldens.json").read_text())


def thin_overrides(meta: dict, mode: str) -> List[str]:
    """nlbench's --set overrides for the thin model MMSeg built (the same figures as its config overrides)."""
    thin, test = meta["thin"], meta[mode]
    out = [f"model.depth={thin['depth']}", f"model.stem_channels={thin['stem_channels']}",
           f"model.base_channels={thin['base_channels']}", f"model.decode_head.channels={thin['decode_channels']}",
           f"model.auxiliary_head.channels={thin['aux_channels']}", "model.pretrained=null",
           f"data.img_scale={test['img_scale']}"]
    if mode == "slide":
        out += [f"test.crop_size={test['crop_size']}", f"test.stride={test['stride']}"]
    return out


def compare(ours: np.ndarray, theirs: np.ndarray) -> Dict[str, float]:
    """max|d| / max|golden| and the share of pixels whose argmax (over classes) agrees."""
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return {"rel": float(np.abs(ours - theirs).max() / np.abs(theirs).max()),
            "argmax_agree": float((ours.argmax(0) == theirs.argmax(0)).mean())}


def figures(tmp: Path) -> dict:
    import cv2
    import torch

    from benchmark.engine.evaluate import image_scores
    from benchmark.engine.predict import predict
    from benchmark.mmseg_checkpoint import load_weights
    from benchmark.models.segmentor import build_segmentor
    from benchmark.recipe import load_recipe

    meta, arrays = summary(), np.load(GOLDENS / "goldens.npz")
    weights = GOLDENS / "thin_nonlocal.pth"
    image = arrays["image"]
    out: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}

    whole = load_recipe(WHOLE_RECIPE, thin_overrides(meta, "whole"))
    png = tmp / "image.png"
    cv2.imwrite(str(png), image[:, :, ::-1])
    predict(whole, weights, png, tmp / "pred.png", tmp / "logits.npy")
    out["predict_whole"] = compare(np.load(tmp / "logits.npy"), arrays["whole_logits"])

    model = build_segmentor(whole.model)
    load_weights(model, weights)  # strict
    model.eval()
    out["eval_whole"] = compare(image_scores(model, image, whole, torch.device("cpu")).numpy(), arrays["whole_logits"])
    with torch.no_grad():
        losses = model.losses(torch.from_numpy(arrays["loss_x"]), torch.from_numpy(arrays["loss_label"]).long())
    golden = meta["losses"]
    out["loss_decode_rel"] = abs(float(losses["loss_decode"]) / golden["decode.loss_ce"] - 1)
    out["loss_aux_rel"] = abs(float(losses["loss_aux"]) / golden["aux.loss_ce"] - 1)

    slide = load_recipe(SLIDE_RECIPE, thin_overrides(meta, "slide"))
    model = build_segmentor(slide.model)
    load_weights(model, weights)
    model.eval()
    out["eval_slide"] = compare(image_scores(model, image, slide, torch.device("cpu")).numpy(), arrays["slide_logits"])
    return out


if __name__ == "__main__":
    print("FIGURES " + json.dumps(figures(Path(sys.argv[1]))))
