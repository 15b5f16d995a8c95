"""The two measurement settings: `published` as the table measured (explicit attention, Mem inside
DDP), `fast` beside it (SDPA), both in one bench result and one bench record with their provenance."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import CITY_ROW as ROW

from benchmark.cli import main as cli_main
from benchmark.engine.bench import bench, single_rank_group
from benchmark.engine.settings import PUBLISHED, fast_setting, parse_settings
from benchmark.errors import NLBenchError
from benchmark.mmseg_checkpoint import save_checkpoint
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe
from benchmark.run.job import Job, Resources, run_job
from benchmark.run.records import load_records, validate_record

TINY = ["bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1", "bench.train_step_warmup=1",
        "bench.train_step_iters=1", "data.img_scale=[64,32]", "data.crop_size=[16,32]"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    recipe = load_recipe(ROW, TINY, profile="smoke")
    absent = tmp_path_factory.mktemp("nodata") / "absent"
    return bench(recipe, device="cpu", data_root=str(absent), train_step=True)


def test_published_builds_the_explicit_attention_and_measures_mem_inside_ddp(both):
    assert not dist.is_initialized()  # the world-size-1 group lived only for the measurement
    # What ran, read off the measured objects: mmcv's explicit attention for fps and Mem, and the
    # training iterations inside DistributedDataParallel over a gloo group of this process alone.
    assert both["infer_attention_impl"] == "explicit" and both["attention_impl"] == "explicit"
    assert both["train_ddp"] == {"backend": "gloo", "world_size": 1}
    published = both["measurement"]["published"]
    assert published == PUBLISHED.describe()
    assert published["attention"] == "explicit" and published["dtype"] == "float32"
    assert published["tf32"] is False and published["cudnn_benchmark"] is False
    assert published["grad_set_to_none"] is False and published["softmax_in_timer"] is True
    assert both["fps"] > 0 and both["mem_gb"] > 0 and both["mem_kind"] == "peak_rss"
    assert both["train_step_s"] > 0 and both["train_step_mem_gb"] > 0 and both["train_step_iters"] == 1


def test_fast_uses_sdpa_without_ddp_and_lands_beside_published(both):
    fast = both["fast"]
    assert fast["infer_attention_impl"] == "sdpa" and fast["attention_impl"] == "sdpa"
    assert fast["train_ddp"] is None and fast["grad_set_to_none"] is True
    assert fast["attention"] == "sdpa" and fast["channels_last"] is True and fast["tf32"] is True
    # No native bf16 on most CPUs: fast then stays fp32, and says so.
    assert fast["dtype"] == ("bfloat16" if fast["amp"] == "bf16" else "float32")
    assert fast["fps"] > 0 and fast["mem_gb"] > 0 and fast["train_step_s"] > 0
    assert both["measurement"]["fast"] == {k: fast[k] for k in both["measurement"]["fast"]}
    assert both["settings"] == ["published", "fast"] and both["dtype"] == "float32"


@pytest.mark.parametrize("setting, zeroed_in_place, softmaxes", [("published", True, True), ("fast", False, False)])
def test_what_each_setting_runs_not_only_what_it_says(tmp_path, monkeypatch, setting, zeroed_in_place, softmaxes):
    # Spies on the calls themselves: in-place zeroed gradients (mmcv's optimizer hook) in the Mem
    # iterations, and the softmax over the full-resolution logits inside the fps timer.
    zero_grad_calls, softmax_calls = [], []
    real_zero_grad, real_softmax = torch.optim.Optimizer.zero_grad, torch.Tensor.softmax

    def zero_grad(self, set_to_none=True):
        zero_grad_calls.append(set_to_none)
        return real_zero_grad(self, set_to_none=set_to_none)

    def softmax(self, *args, **kwargs):
        softmax_calls.append(tuple(self.shape))
        return real_softmax(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad)
    monkeypatch.setattr(torch.Tensor, "softmax", softmax)
    recipe = load_recipe(ROW, TINY, profile="smoke")
    result = bench(recipe, device="cpu", data_root=str(tmp_path / "absent"), settings=[setting])
    assert result["settings"] == [setting]
    assert zero_grad_calls and all(c is (not zeroed_in_place) for c in zero_grad_calls)
    full_resolution = [c for c in softmax_calls if len(c) == 4 and c[1] == recipe.model.num_classes]
    # One softmax per timed and warm-up image in the published setting, none in the fast one.
    assert len(full_resolution) == (recipe.bench.total_images if softmaxes else 0)


def test_fast_setting_follows_the_recipe_amp_and_compile():
    recipe = load_recipe(ROW, ["runtime.amp=fp16", "runtime.compile=true"], profile="smoke")
    chosen = fast_setting(recipe, torch.device("cpu"))
    assert chosen.amp == "fp16" and chosen.compile is True and chosen.describe()["dtype"] == "float16"


def test_settings_flag_parsing():
    assert parse_settings("published,fast") == ("published", "fast")
    assert parse_settings(" fast ") == ("fast",)
    for bad in ("", "published,quick", ","):
        with pytest.raises(NLBenchError, match="--settings"):
            parse_settings(bad)


def test_single_rank_group_is_made_and_removed():
    with single_rank_group(torch.device("cpu")):
        assert dist.get_world_size() == 1 and dist.get_backend() == "gloo"
    assert not dist.is_initialized()


def test_cli_settings_published_only_and_a_bad_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's relative data root is not there: random images stand in
    out = tmp_path / "b.json"
    args = ["bench", ROW, "--profile", "smoke", "--device", "cpu", *sum((["--set", s] for s in TINY), [])]
    assert cli_main([*args, "--settings", "published", "--skip-mem", "--json", str(out)]) == 0
    body = json.loads(out.read_text())
    assert "fast" not in body and list(body["measurement"]) == ["published"] and body["mem_gb"] is None
    assert "setting published: explicit attention, float32, TF32 off" in capsys.readouterr().out
    assert cli_main([*args, "--settings", "fastest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--settings" in err[0] and "published, fast" in err[0]


def test_bench_stage_writes_both_settings_into_one_record(tmp_path):
    recipe = load_recipe(ROW, TINY, profile="smoke")
    work = tmp_path / "work"
    save_checkpoint(work / "latest.pth", build_segmentor(recipe.model).state_dict(), meta={})
    job = Job(recipe=recipe, seed=0, stages=("bench",), results_dir=str(tmp_path / "results"), work_dir=str(work),
              data_root=str(tmp_path / "absent"), resources=Resources(), time_limit_min=10, gpu_hours=None,
              device="cpu")
    written = run_job(job)
    records, warnings = load_records(tmp_path / "results")
    assert not warnings and [r.kind for r in records] == ["bench"] and list(written) == ["bench"]
    record = json.loads(Path(records[0].path).read_text())  # the record as written
    assert validate_record({k: v for k, v in record.items() if k != "_path"}) == []
    assert record["fps"] > 0 and record["mem_gb"] > 0  # the published setting's, as the table's
    assert record["fast"]["fps"] > 0 and record["fast"]["mem_gb"] > 0 and record["fast"]["attention"] == "sdpa"
    measured = record["provenance"]["measurement"]
    assert measured["published"]["attention"] == "explicit" and measured["fast"]["attention"] == "sdpa"
    for name in ("published", "fast"):
        assert {"amp", "dtype", "tf32", "cudnn_benchmark", "compile", "channels_last"} <= set(measured[name])


def test_validate_record_checks_the_fast_object():
    base = {"schema": "nlbench.record/1", "kind": "bench", "recipe": ROW, "profile": "full", "seed": 0,
            "created_at": "2026-11-24T10:00:00+00:00", "fps": 2.0, "mem_gb": 7.0, "provenance": {}}
    fast = {"fps": 5.0, "mem_gb": 3.0, "attention": "sdpa", "amp": "bf16", "tf32": True, "cudnn_benchmark": True,
            "channels_last": True, "compile": False, "ddp": False, "grad_set_to_none": True,
            "softmax_in_timer": False}
    assert validate_record({**base, "fast": fast}) == []
    assert validate_record({**base, "fast": None}) == []
    problems = validate_record({**base, "fast": {**fast, "fps": "5", "attention": "flash", "amp": "int8",
                                                 "tf32": "yes", "mem_gb": [3]}})
    assert {p.split(":")[0] for p in problems} == {"fast.fps", "fast.attention", "fast.amp", "fast.tf32",
                                                    "fast.mem_gb"}
    assert validate_record({**base, "fast": [1]})[0].startswith("fast: expected an object")
    assert validate_record({**base, "train_step_s": "1 s"})[0].startswith("train_step_s:")


@pytest.mark.gpu
def test_gpu_settings_nccl_ddp_for_published_bf16_sdpa_for_fast_and_flags_restored():
    recipe = load_recipe(ROW, TINY, profile="smoke")
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = True, False
    out = bench(recipe, device="cuda", train_step=True)
    assert torch.backends.cudnn.benchmark is True and torch.backends.cuda.matmul.allow_tf32 is False
    assert out["train_ddp"] == {"backend": "nccl", "world_size": 1} and out["mem_kind"] == "cuda_max_allocated"
    fast = out["fast"]
    assert fast["amp"] == "bf16" and fast["infer_attention_impl"] == "sdpa" and fast["pin_memory"] is True
    assert fast["train_step_s"] > 0 and fast["train_step_mem_gb"] > 0
