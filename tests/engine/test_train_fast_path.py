"""The training fast path: loss terms stay on the device and are read at log intervals, before
checkpoints and evaluations; a non-finite loss still stops the run, naming its iteration;
runtime.compile compiles the loss model (checkpoints keep the model's own keys); runtime.amp and
runtime.channels_last train on the CPU too."""

import json

import numpy as np
import pytest
import torch
from conftest import CITY_ROW as ROW

from benchmark.engine.steps import LossModel, build_loss_model
from benchmark.engine.train import train
from benchmark.engine.train_log import TrainLogger
from benchmark.errors import NLBenchError
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe


def _logger(lines, read_every=()):
    return TrainLogger([], enabled=True, max_iters=10, start_iter=0, log_interval=4, log=lines.append,
                       read_every=read_every, source="recipe.yaml")


def _terms(loss: float) -> dict:
    return {"loss": torch.tensor(loss), "loss_decode": torch.tensor(loss * 0.7), "loss_aux": torch.tensor(0.3)}


def test_loss_terms_wait_on_the_device_until_a_log_line():
    lines = []
    logger = _logger(lines)
    for done in range(1, 4):
        logger.step(done, 0.01, _terms(float(done)), 0.1, 0.01, 1.0, "peak_rss")
    assert len(logger.pending) == 3 and lines == []  # nothing read, nothing said yet
    logger.step(4, 0.01, _terms(4.0), 0.1, 0.01, 1.0, "peak_rss")
    assert logger.pending == [] and len(lines) == 1 and "loss 2.5000" in lines[0]  # mean of 1..4


@pytest.mark.parametrize("read_every, stops_at", [((), 8), ((6,), 6)])
def test_a_non_finite_loss_stops_at_the_next_read_naming_its_iteration(read_every, stops_at):
    logger = _logger([], read_every)
    losses = [1.0, 1.0, 1.0, 1.0, float("nan"), 2.0, float("inf"), 1.0]
    for done, loss in enumerate(losses, start=1):
        if done == stops_at:
            with pytest.raises(NLBenchError) as info:
                logger.step(done, 0.01, _terms(loss), 0.1, 0.01, 1.0, "peak_rss")
            assert "loss is nan at iteration 5" in str(info.value)  # the first one, not the read point
            assert info.value.key == "schedule.lr" and "recipe.yaml" in str(info.value)
            return
        logger.step(done, 0.01, _terms(loss), 0.1, 0.01, 1.0, "peak_rss")
    pytest.fail("the non-finite loss was never reported")


@pytest.mark.slow
def test_a_diverging_run_stops_before_its_first_checkpoint(tmp_path):
    recipe = load_recipe(ROW, ["schedule.lr=1.0e+30", "schedule.max_iters=8", "schedule.log_interval=4",
                               "schedule.checkpoint_interval=8", "schedule.eval_interval=8",
                               "data.crop_size=[16,32]"], profile="smoke")
    with pytest.raises(NLBenchError, match=r"loss is (nan|inf|-inf) at iteration [1-8];") as info:
        train(recipe, tmp_path / "work", device="cpu", data_root=str(tmp_path / "data"), log=lambda _m: None)
    assert info.value.key == "schedule.lr"
    assert not list((tmp_path / "work").glob("*.pth"))  # stopped at a read point before any checkpoint


def test_runtime_compile_compiles_the_loss_model_around_the_model_itself():
    recipe = load_recipe(ROW, ["runtime.compile=true"], profile="smoke")
    model = build_segmentor(recipe.model)
    compiled = build_loss_model(model, torch.device("cpu"), ddp=False, compile=recipe.runtime.compile)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)  # compiled lazily, at the first step
    assert isinstance(compiled._orig_mod, LossModel) and compiled._orig_mod.model is model  # checkpoints read model
    eager = build_loss_model(model, torch.device("cpu"), ddp=False, compile=load_recipe(ROW).runtime.compile)
    assert type(eager) is LossModel  # off by default


@pytest.mark.slow
def test_bf16_channels_last_training_on_cpu_logs_finite_losses(tmp_path):
    recipe = load_recipe(ROW, ["runtime.amp=bf16", "runtime.channels_last=true", "schedule.max_iters=2",
                               "schedule.log_interval=1", "schedule.checkpoint_interval=2",
                               "schedule.eval_interval=2", "data.crop_size=[16,32]"], profile="smoke")
    out = train(recipe, tmp_path / "work", device="cpu", data_root=str(tmp_path / "data"), log=lambda _m: None)
    assert out["dtype"] == "bfloat16" and np.isfinite(out["final_loss"])
    lines = [json.loads(line) for line in (tmp_path / "work" / "train.log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line and "event" not in line]
    assert len(losses) == 2 and all(np.isfinite(losses))  # one line per iteration, read off the device
