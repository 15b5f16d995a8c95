"""TF32 as published (docs/FIDELITY.md, "TF32"): recipe ``runtime.tf32`` (default off: the published
V100s had none), set explicitly, both ways, by train, eval, predict and bench, and recorded in
provenance; the bench's ``fast`` setting turns it on, its ``published`` setting off.

The flags are plain process-wide values, so a CPU can check them: each entry point below is
stopped at its first step after setting up (a patched callee records the flags and raises), with
the flags set beforehand to the opposite of what the recipe asks.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CITY_ROW as ROW

from benchmark.recipe import load_recipe

THIN = ["model.depth=18", "model.stem_channels=8", "model.base_channels=8", "model.decode_head.channels=8",
        "model.auxiliary_head.channels=8", "model.pretrained=null", "data.data_root=no/such/root",
        "bench.warmup_images=0", "bench.total_images=1"]


class Reached(Exception):
    """The patched step was reached; the flags are recorded."""


def flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


@pytest.fixture(autouse=True)
def restore_flags():
    saved = flags()
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def set_flags(value: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = value


def recorder(seen: list):
    def record(*args, **kwargs):
        seen.append(flags())
        raise Reached

    return record


def test_recipe_default_is_off_and_settable():
    assert load_recipe(ROW).runtime.tf32 is False
    assert load_recipe(ROW, ["runtime.tf32=true"]).runtime.tf32 is True


@pytest.mark.parametrize("tf32", [False, True])
def test_train_eval_predict_set_the_flags_as_the_recipe_says(tf32, monkeypatch, tmp_path):
    from benchmark.engine import evaluate, predict, train

    recipe = load_recipe(ROW, THIN + [f"runtime.tf32={str(tf32).lower()}"])
    seen: list = []
    monkeypatch.setattr(train, "build_training", recorder(seen))
    monkeypatch.setattr(evaluate, "open_split", recorder(seen))
    monkeypatch.setattr(predict, "read_image_file", recorder(seen))
    calls = [lambda: train.train(recipe, tmp_path / "work", device="cpu", log=lambda *a: None),
             lambda: evaluate.evaluate(recipe, str(tmp_path / "any.pth"), device="cpu"),
             lambda: predict.predict(recipe, tmp_path / "any.pth", tmp_path / "in.png", tmp_path / "out.png")]
    for call in calls:
        set_flags(not tf32)
        with pytest.raises(Reached):
            call()
    assert seen == [(tf32, tf32)] * 3


@pytest.mark.parametrize("tf32", [False, True])
def test_bench_settings_set_their_own_flags_and_the_recipes_outside(tf32, monkeypatch):
    from benchmark.engine import bench

    recipe = load_recipe(ROW, THIN + [f"runtime.tf32={str(tf32).lower()}"])
    seen: list = []
    monkeypatch.setattr(bench, "measure_fps", recorder(seen))
    for name in ("published", "fast"):
        set_flags(not tf32)
        with pytest.raises(Reached):
            bench.bench(recipe, device="cpu", skip_mem=True, settings=(name,))
        # After the setting's measurement its flags are undone, back to the recipe's.
        assert flags() == (tf32, tf32)
    assert seen == [(False, False), (True, True)]  # published: off as on the V100s; fast: on


@pytest.mark.parametrize("tf32", [False, True])
def test_provenance_records_tf32(tf32):
    from benchmark.run.records import provenance

    assert provenance(load_recipe(ROW, [f"runtime.tf32={str(tf32).lower()}"]), device="cpu")["tf32"] is tf32
