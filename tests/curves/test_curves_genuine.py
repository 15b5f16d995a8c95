"""The reader on genuine MMSeg 0.x training logs (tests/fixtures/mmseg0x/), written by MMSeg 0.30.0's own
training loop on mmcv 1.7.2 (CPU, a thin ResNet-18 + NLHead on 64x128 synthetic Cityscapes images,
120 iterations, a train line every 10, an evaluation every 40), the way docs/CURVES.md describes:

  run1.log.json   the run from iteration 1 (mmcv >= 1.3.11: the train line of 40, then its val line)
  run2.log.json   the same run resumed from iter_80.pth in a new work dir: it trains 80 again (one
                  iteration, the file's first train line) and evaluates it again

Only local paths were edited in the files: the data root, work dir and resume_from in the meta line's
config text now read data/synthetic/cityscapes and work_dirs/genuine_nl_r18(_resumed). The 2020
pattern of the published logs is the same log without the train lines of the evaluation iterations
(mmcv < 1.3.11 never wrote them), made here by deleting those lines, and, as some versions did, with
"mode": "train" on the val lines.
"""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES

from benchmark.curves.reader import read_curve

DATA = FIXTURES / "mmseg0x"
EVALS = [40, 80, 120]


def _lines(name: str):
    return (DATA / name).read_text().splitlines()


def _as_2020(lines, val_mode: str = "val"):
    """Delete the train line of each evaluation iteration (the line a val line follows)."""
    out = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if '"mode": "train"' in line and '"aAcc"' in following:
            continue
        out.append(line.replace('"mode": "val"', f'"mode": "{val_mode}"') if '"aAcc"' in line else line)
    return out


def test_genuine_log_evaluations_at_40_80_120():
    curve = read_curve(DATA / "run1.log.json")
    assert curve.format == "mmseg0x" and curve.max_iters == 120 and curve.warnings == ()
    assert [p.iteration for p in curve.train] == list(range(10, 121, 10))
    assert [e.iteration for e in curve.evals] == EVALS
    vals = [json.loads(line) for line in _lines("run1.log.json") if '"aAcc"' in line]
    assert [v["iter"] for v in vals] == [2, 2, 2]  # the number of validation images
    assert [e.mIoU for e in curve.evals] == pytest.approx([100 * v["mIoU"] for v in vals], abs=1e-5)
    assert "evaluation = dict(interval=40" in json.loads(_lines("run1.log.json")[0])["config"]


@pytest.mark.parametrize("val_mode", ["val", "train"])
@pytest.mark.parametrize("meta", ["with its config text", "without a meta line"])
def test_genuine_log_in_the_2020_pattern(tmp_path, val_mode, meta):
    lines = _as_2020(_lines("run1.log.json"), val_mode)
    if meta == "without a meta line":
        lines = lines[1:]
    path = tmp_path / "run1.log.json"
    path.write_text("\n".join(lines) + "\n")
    trains = [json.loads(line)["iter"] for line in lines if '"aAcc"' not in line and '"iter"' in line]
    assert trains == [10, 20, 30, 50, 60, 70, 90, 100, 110]
    # The interval from the config text; without it the skipped train line tells; the schedule, when given.
    assert [e.iteration for e in read_curve(path).evals] == EVALS
    assert [e.iteration for e in read_curve(path, eval_interval=40, max_iters=120).evals] == EVALS


@pytest.mark.parametrize("pattern", ["mmcv1.3.11", "2020"])
def test_genuine_resumed_pair_merges(tmp_path, pattern):
    second = _lines("run2.log.json")
    first_train = json.loads(next(line for line in second if '"mode": "train"' in line))
    assert first_train["iter"] == 80  # the checkpoint's iteration trained again
    files = []
    for name in ("run1.log.json", "run2.log.json"):
        lines = _lines(name) if pattern == "mmcv1.3.11" else _as_2020(_lines(name))
        files.append(tmp_path / name)
        files[-1].write_text("\n".join(lines) + "\n")
    if pattern == "2020":  # the resumed file opens with the re-evaluation of 80: no train line before it
        assert '"aAcc"' in files[1].read_text().splitlines()[1]
    curve = read_curve(list(reversed(files)))
    assert [e.iteration for e in curve.evals] == EVALS and curve.warnings == ()
    assert curve.sources == tuple(str(f) for f in files)
    resumed = read_curve(files[1])
    assert [e.iteration for e in resumed.evals] == [80, 120]
