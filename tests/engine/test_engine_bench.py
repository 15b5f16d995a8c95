"""nlbench bench: the published fps/Mem method, CPU figures labelled as such, GPU paths on a GPU."""

import json

import pytest
import torch
from conftest import CITY_ROW as ROW
from conftest import CITY_SLIDE_ROW as SLIDE_ROW

from benchmark.cli import main as cli_main
from benchmark.data.synthetic import ensure_dataset
from benchmark.engine.bench import bench, synthetic_image_size
from benchmark.recipe import load_recipe


def test_cpu_bench_on_synthetic_images_when_no_dataset(tmp_path):
    # The former smoke sizes pinned: the test scale (128, 64) and 2 images a batch.
    recipe = load_recipe(ROW, ["bench.total_images=3", "bench.warmup_images=1", "bench.mem_iters=1",
                               "data.img_scale=[128,64]", "data.imgs_per_gpu=2"], profile="smoke")
    out = bench(recipe, device="cpu", data_root=str(tmp_path / "absent"))
    assert out["image_source"] == "synthetic"
    assert out["image_hw"] == list(synthetic_image_size(recipe)) == [64, 128]  # Cityscapes 1:2 at the test scale
    assert out["input_hw"] == [64, 128]
    assert out["images_timed"] == 2 and out["fps"] > 0
    assert out["fps"] == pytest.approx(out["images_timed"] / out["timed_seconds"])
    assert out["wall_time_s"] > out["timed_seconds"]  # the whole stage, for the run record's cost
    # CPU figures say they are CPU figures.
    assert out["fps_device"] == "cpu" and out["mem_kind"] == "peak_rss"
    assert out["mem_gb"] > 0.05 and out["mem_batch"] == 2 and out["mem_crop_hw"] == [32, 64]
    assert out["dtype"] == "float32" and out["cudnn_benchmark"] is False
    for key in ("device_name", "torch_version", "cuda_version", "cudnn_version"):
        assert key in out


def test_cli_bench_on_val_images_with_slide_mode(tmp_path, capsys):
    # The former smoke sizes pinned: 64x128 val images, the test scale (129, 65).
    sizes = ["data.synthetic.size=[64,128]", "data.img_scale=[129,65]"]
    recipe = load_recipe(SLIDE_ROW, sizes, profile="smoke")
    root = ensure_dataset(recipe.data, tmp_path / "cityscapes")
    out_json = tmp_path / "bench.json"
    code = cli_main(["bench", SLIDE_ROW, "--profile", "smoke", "--data-root", str(root), "--device", "cpu",
                     "--set", "bench.total_images=2", "--set", "bench.warmup_images=1", "--skip-mem",
                     *[arg for s in sizes for arg in ("--set", s)], "--json", str(out_json)])
    assert code == 0
    text = capsys.readouterr().out
    assert "CPU fps" in text and "val split" in text and "(slide)" in text
    body = json.loads(out_json.read_text())
    assert body["image_source"] == "val" and body["image_hw"] == [64, 128]
    assert body["input_hw"] == [65, 129]  # keep-ratio resize to (129, 65), then 49x49 windows
    assert body["test_mode"] == "slide" and body["mem_gb"] is None and body["images_timed"] == 1


def test_nothing_to_time_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no dataset at the recipe's relative data root: random images
    code = cli_main(["bench", ROW, "--profile", "smoke", "--device", "cpu", "--skip-mem",
                     "--set", "bench.total_images=2", "--set", "bench.warmup_images=2"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bench.total_images" in err[0]


@pytest.mark.gpu
def test_gpu_bench_reports_max_memory_allocated():
    recipe = load_recipe(ROW, ["bench.total_images=3", "bench.warmup_images=1", "bench.mem_iters=2"],
                         profile="smoke")
    torch.backends.cudnn.benchmark = True
    out = bench(recipe, device="cuda")
    assert torch.backends.cudnn.benchmark is True  # restored after the benchmark-off measurement
    assert out["fps_device"] == "cuda" and out["mem_kind"] == "cuda_max_allocated"
    assert out["mem_gb"] > 0 and out["cuda_version"] is not None
    assert out["device_name"] == torch.cuda.get_device_name(0)


@pytest.mark.gpu
def test_gpu_training_with_bf16_and_channels_last(tmp_path):
    from benchmark.engine.train import train

    recipe = load_recipe(ROW, ["schedule.max_iters=4", "schedule.checkpoint_interval=4", "schedule.eval_interval=4",
                               "runtime.amp=bf16", "runtime.channels_last=true"], profile="smoke")
    out = train(recipe, tmp_path / "work", device="cuda", data_root=str(tmp_path / "data"))
    assert out["mem_kind"] == "cuda_max_allocated" and out["dtype"] == "bfloat16"
    assert out["final_loss"] == out["final_loss"]  # finite, not NaN
    assert (tmp_path / "work" / "latest.pth").is_file()


def test_a_val_split_that_cannot_be_read_is_told_to_the_callers_warn(tmp_path):
    from benchmark.engine.bench import bench_images

    recipe = load_recipe(ROW, profile="smoke")
    (tmp_path / "broken").mkdir()  # a data root without the layout
    told = []
    source, _ = bench_images(recipe, str(tmp_path / "broken"), 2, told.append)
    assert source == "synthetic"
    assert len(told) == 1 and told[0].startswith("warning: bench: the val split cannot be read (")
