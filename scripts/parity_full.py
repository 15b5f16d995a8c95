"""nlbench's predict and eval against the live MMSegmentation 1.2.2 at full size, with a sharp attention
(docs/PARITY.md, "Full size"; docs/FIDELITY.md).

    .venv/bin/python scripts/parity_full.py --mmseg-python MMSEG_VENV/bin/python --work DIR [--isa avx2]

R-50-D8, the Cityscapes 512x1024 row, whole-image inference of one random 1024x2048 image. The
checkpoint is made once in DIR by MMSeg's own model (scripts/make_goldens.py's weights: every weight
and norm statistic away from its init, theta/phi scaled up until the non-local attention is sharp).
Then, each a fresh process in the chosen instruction set (``--isa avx2``: ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2``; ``native``: the machine's own): MMSeg's ``init_model`` +
``inference_model`` (its logits at the image size), ``nlbench predict --logits`` and nlbench's
evaluation scores (``image_scores``, what ``nlbench eval`` takes the argmax of). Prints
max|dlogit| / max|logit| and the argmax agreement of each against MMSeg, and each process's peak RSS
(``os.wait4``). ``--extra`` adds nlbench --set overrides (e.g. runtime.channels_last=true).
MMSeg's process peaks near 10 GB: run it alone, with nice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from cpu_vs_mmseg import ROW, run_child  # noqa: E402

ISAS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}

# Runs in MMSeg's interpreter: importing make_goldens runs the MMSeg preamble (tests/mmseg_side.py).
MMSEG_SIDE = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
import make_goldens as mg
import numpy as np
import torch

cfg = mg.Config.fromfile(os.path.join(mg.MMSEG["CONFIGS"], "ROW.py"))
cfg.model.pretrained = None
mg.MMSEG["to_bn"](cfg.model)
if sys.argv[2] == "make":
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    probe = torch.randn((1, 3, 256, 512), generator=torch.Generator().manual_seed(3))
    model, sharp = mg.sharp_model(lambda: MODELS.build(cfg.model), probe)
    torch.save({"meta": {"source": "scripts/parity_full.py", "attention": sharp}, "state_dict": model.state_dict()},
               sys.argv[3])
    print("SHARP " + json.dumps(sharp))
else:
    from mmseg.apis import inference_model, init_model

    model = init_model(cfg, sys.argv[3], device="cpu")
    with torch.no_grad():
        result = inference_model(model, sys.argv[4])
    np.save(sys.argv[5], result.seg_logits.data.numpy())
'''.replace("ROW", ROW)

NLBENCH_EVAL = r'''
import sys
import numpy as np
import torch
from benchmark.mmseg_checkpoint import load_weights
from benchmark.data.layouts import read_image_file
from benchmark.engine.evaluate import image_scores
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe

recipe = load_recipe(sys.argv[1], sys.argv[5:])
model = build_segmentor(recipe.model)
load_weights(model, sys.argv[2])
model.eval()
if recipe.runtime.channels_last:
    model.to(memory_format=torch.channels_last)
np.save(sys.argv[4], image_scores(model, read_image_file(sys.argv[3]), recipe, torch.device("cpu")).numpy())
'''


def prepare(work: Path, mmseg_python: str) -> tuple:
    """The sharp R-50 checkpoint (made by MMSeg) and a random 1024x2048 PNG, made once in ``work``."""
    import cv2

    (work / "mmseg_side.py").write_text(MMSEG_SIDE)
    (work / "nlbench_eval.py").write_text(NLBENCH_EVAL)
    checkpoint, image = work / "r50_sharp.pth", work / "image.png"
    if not checkpoint.exists():
        run_child([mmseg_python, str(work / "mmseg_side.py"), str(REPO / "scripts"), "make", str(checkpoint)], REPO)
    if not image.exists():
        cv2.imwrite(str(image), np.random.RandomState(0).randint(0, 256, (1024, 2048, 3), dtype=np.uint8))
    return checkpoint, image


def compare(ours: Path, theirs: np.ndarray) -> str:
    mine = np.load(ours)
    rel = float(np.abs(mine - theirs).max() / np.abs(theirs).max())
    agree = float((mine.argmax(0) == theirs.argmax(0)).mean())
    return f"max|dlogit|/max|logit| = {rel:.3g}, argmax agreement {100 * agree:.4f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmseg-python", default=os.environ.get("NLBENCH_MMSEG_PYTHON"))
    parser.add_argument("--work", required=True, help="folder for the checkpoint, image and logits (kept)")
    parser.add_argument("--isa", choices=sorted(ISAS), default="native")
    parser.add_argument("--extra", nargs="*", default=[], help="nlbench --set overrides")
    parser.add_argument("--reuse-mmseg", action="store_true",
                        help="compare with MMSeg's logits of an earlier run in this ISA instead of running it again")
    args = parser.parse_args()
    if not args.mmseg_python:
        parser.error("expected --mmseg-python (or NLBENCH_MMSEG_PYTHON): MMSeg 1.2.2's interpreter")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, image = prepare(work, args.mmseg_python)
    os.environ.update(ISAS[args.isa])  # the children's instruction set (read when torch starts)
    tag, sets = args.isa, [a for x in args.extra for a in ("--set", x)]
    runs = {
        "mmseg": [args.mmseg_python, str(work / "mmseg_side.py"), str(REPO / "scripts"), "infer", str(checkpoint),
                  str(image), str(work / f"mmseg_{tag}.npy")],
        "predict": [sys.executable, "-m", "benchmark", "predict", ROW, "--checkpoint", str(checkpoint), "--image",
                    str(image), "--out", str(work / f"predict_{tag}.png"), "--logits", str(work / f"predict_{tag}.npy"),
                    "--device", "cpu", *sets],
        "eval": [sys.executable, str(work / "nlbench_eval.py"), ROW, str(checkpoint), str(image),
                 str(work / f"eval_{tag}.npy"), *args.extra],
    }
    if args.reuse_mmseg and (work / f"mmseg_{tag}.npy").exists():
        del runs["mmseg"]
    measured = {name: run_child(command, REPO) for name, command in runs.items()}
    rss = {name: figures["peak_rss_gb"] for name, figures in measured.items()}
    theirs = np.load(work / f"mmseg_{tag}.npy")
    print(f"isa {args.isa} ({json.dumps(ISAS[args.isa])}), extra {args.extra}, max|logit| {np.abs(theirs).max():.4g}")
    for name in ("predict", "eval"):
        print(f"  {name}: {compare(work / f'{name}_{tag}.npy', theirs)}")
    mmseg_rss = f"MMSeg {rss['mmseg']:.2f} GB, " if "mmseg" in rss else ""
    ratio = f" ({rss['predict'] / rss['mmseg']:.2f}x)" if "mmseg" in rss else ""
    print(f"  peak RSS: {mmseg_rss}nlbench predict {rss['predict']:.2f} GB{ratio}, "
          f"nlbench eval path {rss['eval']:.2f} GB")
    for name, figures in measured.items():
        print(f"  {name} process: {figures['wall_s']:.1f} s wall, {figures['cpu_s']:.1f} s CPU (user + sys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
