"""MMSeg's own ``tools/analyze_logs.py`` (0.x, from a separate MMSeg install) plots nlbench's
``train.log.json`` (developer-side; skipped unless NLBENCH_MMSEG_PYTHON is set, see docs/PARITY.md).

The 0.x tool ships inside the mmsegmentation 0.x package (``mmseg/.mim/tools/analyze_logs.py``); it
imports only matplotlib and seaborn, so an install with ``--no-deps`` plus those two is enough.
``NLBENCH_MMSEG_ANALYZE_LOGS`` may name the script directly. MMSeg 1.x's version of the tool reads
1.x ``scalars.json`` files (``step`` keys), not the 0.x form, and is not used here.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import VOC_ROW as ROW

from benchmark.engine.train import train
from benchmark.recipe import load_recipe

MMSEG_PYTHON = os.environ.get("NLBENCH_MMSEG_PYTHON")
pytestmark = [
    pytest.mark.parity,
    pytest.mark.slow,
    pytest.mark.skipif(not MMSEG_PYTHON, reason="set NLBENCH_MMSEG_PYTHON to an interpreter with mmsegmentation 0.x"),
]

# Runs in the MMSeg interpreter: the tool's own functions, with savefig wrapped to keep what was drawn.
_DRIVER = textwrap.dedent("""
    import importlib.util, json, sys
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    script, log, out_dir = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("analyze_logs", script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    drawn, save = {}, plt.savefig

    def keep_and_save(path, *args, **kwargs):
        drawn[path] = [[list(map(float, line.get_xdata())), list(map(float, line.get_ydata()))]
                       for line in plt.gca().lines]
        save(path, *args, **kwargs)

    plt.savefig = keep_and_save
    for key in ("loss", "mIoU"):
        sys.argv = ["analyze_logs.py", log, "--keys", key, "--out", f"{out_dir}/{key}.png", "--backend", "Agg"]
        args = tool.parse_args()
        tool.plot_curve(tool.load_json_logs(args.json_logs), args)
    print(json.dumps(drawn))
""")


def _analyze_logs_script() -> Path:
    explicit = os.environ.get("NLBENCH_MMSEG_ANALYZE_LOGS")
    if explicit:
        return Path(explicit)
    # find_spec locates the package without importing it (mmseg 0.x would want mmcv-full).
    found = subprocess.run([MMSEG_PYTHON, "-c", "import importlib.util, os; "
                            "print(os.path.dirname(importlib.util.find_spec('mmseg').origin))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    script = Path(found) / ".mim" / "tools" / "analyze_logs.py"
    if not script.is_file():
        pytest.skip(f"no MMSeg 0.x tools/analyze_logs.py at {script} (MMSeg 1.x's reads scalars.json only)")
    return script


def test_mmseg_analyze_logs_plots_nlbench_train_log_json(tmp_path):
    recipe = load_recipe(ROW, ["schedule.max_iters=8", "schedule.eval_interval=4", "schedule.checkpoint_interval=8",
                               "schedule.log_interval=2", "data.synthetic.train=4", "data.synthetic.val=2"],
                         profile="smoke")
    work = tmp_path / "work"
    train(recipe, work, device="cpu", data_root=str(tmp_path / "voc"), log=lambda _m: None)
    log = work / "train.log.json"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    trains = [e for e in lines if e.get("mode") == "train"]
    vals = [e for e in lines if e.get("mode") == "val"]

    out = subprocess.run([MMSEG_PYTHON, "-c", _DRIVER, str(_analyze_logs_script()), str(log), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    drawn = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("loss", "mIoU"):
        assert (tmp_path / f"{key}.png").stat().st_size > 1000

    # Loss against iteration: every point drawn is one of nlbench's train lines. (The tool pairs the
    # i-th loss of an epoch with the i-th 'iter' of that epoch, val lines included, and drops what goes
    # backwards: MMSeg's own logs lose the same points after a val line.)
    [[xs, ys]] = drawn[str(tmp_path / "loss.png")]
    ours = {e["iter"]: e["loss"] for e in trains}
    assert len(xs) >= len(trains) - len(vals) and xs == sorted(xs)
    assert all(ours[int(x)] == pytest.approx(y) for x, y in zip(xs, ys))
    # mIoU per epoch: the val lines' fractions, as MMSeg 0.x wrote them.
    [[epochs, mious]] = drawn[str(tmp_path / "mIoU.png")]
    assert epochs == [float(e["epoch"]) for e in vals]
    assert mious == pytest.approx([e["mIoU"] for e in vals])
