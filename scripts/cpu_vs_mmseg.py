"""nlbench against MMSegmentation 1.2.2 on this CPU, side by side in one run (docs/BENCHMARKS.md,
"CPU: nlbench against MMSeg").

    .venv/bin/python scripts/cpu_vs_mmseg.py --mmseg-python MMSEG_VENV/bin/python [--rounds 3]

(MMSEG_VENV: MMSeg 1.2.2's interpreter, set up as docs/PARITY.md says; NLBENCH_MMSEG_PYTHON too.)

Two measurements, each a fresh process per tool, the tools alternating (round 1 nlbench first,
round 2 MMSeg first, ...), repeated ``--rounds`` times; the table shows medians:

  predict  R-50-D8 Cityscapes 512x1024 row, random weights (one checkpoint file both load), one
           random 1024x2048 PNG, whole-image inference. nlbench: ``nlbench predict``; MMSeg:
           ``init_model`` + ``inference_model`` + writing the colour PNG. The whole process is
           measured: wall, user + sys CPU seconds and peak RSS (``os.wait4``).
  train    one fp32 training iteration of the same row at batch 2, 256x512 crops (random images
           and labels): forward with both losses, backward, SGD step. nlbench: its training step
           (benchmark/engine/steps.py) at world size 1; MMSeg: ``model.loss``, ``parse_losses``
           and ``OptimWrapper.update_params``, what its ``train_step`` runs after the data
           preprocessor. Median seconds (wall and process CPU) of ``--steps`` iterations after 2
           untimed ones.

Set up the MMSeg interpreter as docs/PARITY.md says. ``--json FILE`` also writes every run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmark.io.files import atomic_write_text

ROW = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"
REPO = Path(__file__).resolve().parents[1]

# Runs in MMSeg's interpreter, after the preamble that the parity test uses too (tests/mmseg_side.py).
MMSEG_COMMON = r'''
import statistics, time

cfg = Config.fromfile(os.path.join(CONFIGS, "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024.py"))
cfg.model.pretrained = None
to_bn(cfg.model)
'''

MMSEG_PREDICT = MMSEG_COMMON + r'''
import cv2
from mmseg.apis import inference_model, init_model

checkpoint, image, out = sys.argv[1:4]
model = init_model(cfg, checkpoint, device="cpu")
result = inference_model(model, image)
pred = result.pred_sem_seg.data[0].numpy()
palette = np.array(model.dataset_meta["palette"], dtype=np.uint8)
cv2.imwrite(out, palette[pred][:, :, ::-1])
'''

MMSEG_TRAIN = MMSEG_COMMON + r'''
from mmengine.optim import OptimWrapper
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

register_all_modules()
steps = int(sys.argv[1])
torch.manual_seed(0)
model = MODELS.build(cfg.model)
model.init_weights()
model.train()
optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005))
gen = torch.Generator().manual_seed(0)
x = torch.randn((2, 3, 256, 512), generator=gen)
label = torch.randint(0, 19, (2, 256, 512), generator=gen)
samples = seg_samples(label)

def step():
    loss, _ = model.parse_losses(model.loss(x, samples))
    optim.update_params(loss)
'''

NLBENCH_TRAIN = r'''
import sys
import torch
from benchmark.engine.steps import build_loss_model, make_optimizer, train_step
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe

steps = int(sys.argv[1])
recipe = load_recipe("ROW", ["data.crop_size=[256,512]", "data.imgs_per_gpu=2"])
torch.manual_seed(0)
model = build_segmentor(recipe.model).train()
losses = build_loss_model(model, torch.device("cpu"), ddp=False)
optimizer = make_optimizer(model, recipe.schedule)
gen = torch.Generator().manual_seed(0)
x = torch.randn((2, 3, 256, 512), generator=gen)
label = torch.randint(0, 19, (2, 256, 512), generator=gen)

def step():
    train_step(losses, x, label, optimizer, None, None, torch.device("cpu"))
'''.replace("ROW", ROW)

TIMED_STEPS = r'''
import json, statistics, time
for _ in range(2):
    step()
wall, cpu = [], []
for _ in range(steps):
    w, c = time.perf_counter(), time.process_time()
    step()
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
print("STEP " + json.dumps({"step_s": statistics.median(wall), "step_cpu_s": statistics.median(cpu)}))
'''


def run_child(command, cwd: Path) -> dict:
    """Run ``command``: its wall seconds, user and sys CPU seconds and peak RSS (GiB, from the
    child's own rusage: os.wait4) and the STEP figures it prints."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(REPO)})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, command[:4]))} failed ({proc.returncode}):\n{stderr[-3000:]}")
    figures = {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
               "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 1024**2}
    for line in stdout.splitlines():
        if line.startswith("STEP "):
            figures.update(json.loads(line[5:]))
    return figures


def prepare(folder: Path) -> tuple:
    """A random-weight R-50 checkpoint (MMSeg's layout) and a random 1024x2048 PNG."""
    import cv2
    import torch

    sys.path.insert(0, str(REPO))
    from benchmark.mmseg_checkpoint import save_checkpoint
    from benchmark.models.segmentor import build_segmentor
    from benchmark.recipe import load_recipe

    torch.manual_seed(0)
    checkpoint = save_checkpoint(folder / "r50.pth", build_segmentor(load_recipe(ROW).model).state_dict(),
                                 meta={"source": "scripts/cpu_vs_mmseg.py: random weights"})
    image = folder / "image.png"
    cv2.imwrite(str(image), np.random.RandomState(0).randint(0, 256, (1024, 2048, 3), dtype=np.uint8))
    return checkpoint, image


def commands(folder: Path, mmseg_python: str, checkpoint: Path, image: Path, steps: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from mmseg_side import MMSEG_PREAMBLE

    for name, text in (("mmseg_predict.py", MMSEG_PREAMBLE + MMSEG_PREDICT),
                       ("mmseg_train.py", MMSEG_PREAMBLE + MMSEG_TRAIN + TIMED_STEPS),
                       ("nlbench_train.py", NLBENCH_TRAIN + TIMED_STEPS)):
        (folder / name).write_text(text)
    py = sys.executable
    return {
        ("predict", "nlbench"): [py, "-m", "benchmark", "predict", ROW, "--checkpoint", str(checkpoint), "--image",
                                 str(image), "--out", str(folder / "nlbench.png"), "--device", "cpu"],
        ("predict", "mmseg"): [mmseg_python, str(folder / "mmseg_predict.py"), str(checkpoint), str(image),
                               str(folder / "mmseg.png")],
        ("train", "nlbench"): [py, str(folder / "nlbench_train.py"), str(steps)],
        ("train", "mmseg"): [mmseg_python, str(folder / "mmseg_train.py"), str(steps)],
    }


def summary(runs: list) -> str:
    """Medians per (part, tool) and nlbench's ratios to MMSeg."""
    keys = {"predict": ("wall_s", "cpu_s", "peak_rss_gb"), "train": ("step_s", "step_cpu_s", "peak_rss_gb")}
    lines = []
    for part, figures in keys.items():
        med = {tool: {k: statistics.median(r[k] for r in runs if r["part"] == part and r["tool"] == tool)
                      for k in figures} for tool in ("mmseg", "nlbench") if any(r["part"] == part for r in runs)}
        if not med:
            continue
        lines.append(f"{part}: " + " | ".join(figures) + f"  (median of {sum(r['part'] == part for r in runs) // 2})")
        for tool, values in med.items():
            lines.append(f"  {tool:8s} " + "  ".join(f"{values[k]:8.3f}" for k in figures))
        n, m = med["nlbench"], med["mmseg"]
        lines.append(f"  nlbench: {m[figures[0]] / n[figures[0]]:.2f}x MMSeg's speed (wall), "
                     f"{m[figures[1]] / n[figures[1]]:.2f}x by CPU time, {n['peak_rss_gb'] / m['peak_rss_gb']:.2f}x "
                     "its peak RSS")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmseg-python", default=os.environ.get("NLBENCH_MMSEG_PYTHON"),
                        help="MMSeg 1.2.2's interpreter (docs/PARITY.md; default $NLBENCH_MMSEG_PYTHON)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed training iterations per run")
    parser.add_argument("--parts", default="predict,train", help="predict, train or both (comma-separated)")
    parser.add_argument("--json", help="also write every run's figures to this file")
    args = parser.parse_args()
    if not args.mmseg_python:
        parser.error("expected --mmseg-python (or NLBENCH_MMSEG_PYTHON): MMSeg 1.2.2's interpreter, docs/PARITY.md")
    parts = [p for p in args.parts.split(",") if p]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint, image = prepare(folder)
        todo = commands(folder, args.mmseg_python, checkpoint, image, args.steps)
        for round_ in range(args.rounds):
            tools = ("nlbench", "mmseg") if round_ % 2 == 0 else ("mmseg", "nlbench")
            for part in parts:
                for tool in tools:
                    figures = run_child(todo[(part, tool)], REPO)
                    runs.append({"round": round_ + 1, "part": part, "tool": tool, **figures,
                                 "load_avg_1min": os.getloadavg()[0]})
                    print(json.dumps(runs[-1]), flush=True)
    print(summary(runs))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
