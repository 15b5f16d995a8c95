"""A stop request (SLURM preemption / time limit) saves at the next iteration boundary, and a resume
from there ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.engine.train import train
from benchmark.errors import TrainingInterrupted
from benchmark.recipe import load_recipe


def _recipe(tmp_path):
    return load_recipe(
        "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512",
        ["schedule.max_iters=6", "schedule.checkpoint_interval=5", "schedule.eval_interval=6",
         f"data.data_root={tmp_path / 'voc'}", "data.synthetic.train=4", "data.synthetic.val=1"],
        profile="smoke",
    )


@pytest.mark.slow
def test_stop_request_saves_at_the_boundary_and_resume_is_exact(tmp_path):
    quiet = lambda _msg: None  # noqa: E731
    recipe = _recipe(tmp_path)
    train(recipe, tmp_path / "straight", device="cpu", log=quiet)

    steps = []
    with pytest.raises(TrainingInterrupted) as info:
        train(recipe, tmp_path / "stopped", device="cpu", log=quiet,
              step_callback=lambda it, _m: steps.append(it), stop_requested=lambda: len(steps) >= 3)
    assert info.value.iteration == 3  # not a checkpoint interval: saved because of the request
    assert torch.load(tmp_path / "stopped" / "latest.pth", weights_only=True)["iteration"] == 3
    events = [json.loads(line) for line in (tmp_path / "stopped" / "train.log.jsonl").read_text().splitlines()]
    assert {"event": "interrupted", "iteration": 3}.items() <= events[-1].items()

    summary = train(recipe, tmp_path / "stopped", resume=True, device="cpu", log=quiet)
    assert summary["start_iteration"] == 3 and summary["iterations"] == 6
    a = torch.load(tmp_path / "straight" / "latest.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "stopped" / "latest.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
