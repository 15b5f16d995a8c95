"""TensorBoard event files of a real training run, read back with tensorboard's own EventAccumulator;
resuming a run after a crash and after it finished; training without the tensorboard package."""

import json
import sys

import pytest
from conftest import VOC_ROW as ROW

from benchmark.commands.train import train_command
from benchmark.engine import tensorboard_sink
from benchmark.engine.mmseg_log import MMSeg0xLogSink
from benchmark.engine.train import log_sinks, train
from benchmark.engine.train_log import JsonLinesSink
from benchmark.recipe import load_recipe

SETS = ["schedule.max_iters=4", "schedule.log_interval=1", "schedule.eval_interval=2",
        "schedule.checkpoint_interval=2"]
TRAIN_TAGS = {f"train/{k}" for k in ("loss", "loss_decode", "loss_aux", "lr", "peak_mem_gb", "time", "data_time")}
VAL_TAGS = {"val/aAcc", "val/mIoU", "val/mAcc"}


def _scalars(work):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(work))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class _Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.tensorboard
def test_training_writes_tensorboard_scalars_and_resumes_without_duplicates(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    recipe = load_recipe(ROW, SETS, profile="smoke")
    work, data = tmp_path / "work", str(tmp_path / "voc")
    lines = []

    def crash_after_three(done, model):
        if done == 4:  # iterations 1-3 are logged, the newest checkpoint is iteration 2
            raise _Crash()

    with pytest.raises(_Crash):
        train(recipe, work, device="cpu", data_root=data, log=lines.append, step_callback=crash_after_three)
    assert any("published run used 4 GPUs x 4 = 16 images per iteration" in line for line in lines), lines
    assert [s for s, _ in _scalars(work)["train/loss"]] == [1, 2, 3]

    summary = train(recipe, work, resume=True, device="cpu", data_root=data, log=lines.append)
    scalars = _scalars(work)
    assert set(scalars) == TRAIN_TAGS | VAL_TAGS
    # Iterations 3 and 4 ran again after the resume from iteration 2: each step is there once.
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["val/mIoU"]] == [2, 4]
    # The values are those of train.log.jsonl (its newest line per iteration).
    logged = {}
    for line in (work / "train.log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            logged[entry["iteration"]] = entry
    for step, value in scalars["train/lr"]:
        assert value == pytest.approx(logged[step]["lr"], rel=1e-6)
    assert scalars["val/mIoU"][-1][1] == pytest.approx(summary["metrics"]["mIoU"], rel=1e-6)

    # A resume of the finished run has nothing to do and says what its last evaluation gave.
    capsys.readouterr()
    assert train_command(ROW, SETS, profile="smoke", work_dir=str(work), data_root=data, resume=True,
                         device="cpu") == 0
    out = capsys.readouterr().out
    assert "nothing left to do" in out and "iteration 4" in out and "nan" not in out
    assert f"mIoU {summary['metrics']['mIoU']:.2f}" in out
    assert [s for s, _ in _scalars(work)["train/loss"]] == [1, 2, 3, 4]


def test_without_tensorboard_training_logs_as_before_and_says_so_once(tmp_path, monkeypatch):
    # The package cannot be imported: torch.utils.tensorboard raises ImportError, as without it.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setattr(tensorboard_sink, "_said_missing", False)
    recipe = load_recipe(ROW, SETS, profile="smoke")
    said = []
    first = log_sinks(recipe, tmp_path / "a", resume=False, log=said.append)
    second = log_sinks(recipe, tmp_path / "b", resume=False, log=said.append)
    assert [type(s) for s in first] == [type(s) for s in second] == [JsonLinesSink, MMSeg0xLogSink]
    assert len(said) == 1 and "pip install 'nlbench[tensorboard]'" in said[0]


@pytest.mark.tensorboard
def test_sink_writes_scalars_of_train_and_eval_lines(tmp_path):
    pytest.importorskip("tensorboard")
    old = tmp_path / "events.out.tfevents.1.old-run"
    old.write_bytes(b"")
    sink = tensorboard_sink.TensorBoardSink(tmp_path)
    sink.write({"event": "start", "iteration": 0, "resumed": False})
    sink.write({"iteration": 10, "lr": 0.01, "loss": 1.5, "loss_decode": 1.0, "loss_aux": 0.5, "time": 0.1,
                "data_time": 0.01, "peak_mem_gb": 2.0, "mem_kind": "peak_rss"})
    sink.write({"event": "eval", "iteration": 10, "aAcc": 90.0, "mIoU": 50.0, "mAcc": 60.0})
    sink.write({"event": "interrupted", "iteration": 10})
    sink.close()
    sink.write({"event": "end", "iteration": 10})  # after close: ignored, as the loop writes it
    scalars = _scalars(tmp_path)
    assert scalars["train/loss"] == [(10, 1.5)] and scalars["val/mIoU"] == [(10, 50.0)]
    assert scalars["train/peak_mem_gb"] == [(10, 2.0)] and set(scalars) == TRAIN_TAGS | VAL_TAGS
    assert not old.exists()  # a fresh run (not resumed) replaces the event files of an earlier one
