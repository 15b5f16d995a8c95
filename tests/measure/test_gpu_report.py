"""`nlbench gpu-report --dry-run`: every part of the GPU report runs on the CPU at tiny sizes and
writes both files, so that the command is known to work before a GPU is lent; on CPU the goals are
shown as not applicable and the gpu-marked tests skip."""

import json
import time

import pytest

from benchmark.cli import main as cli_main
from benchmark.measure.gpu_report import ROWS, goals, gpu_tests, markdown, time_for_gpu_tests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-report")
    # --budget-s 0: the torch.compile part is left out (minutes on a CPU), and the report says why.
    code = cli_main(["gpu-report", "--dry-run", "--device", "cpu", "--out", str(out), "--budget-s", "0"])
    return code, json.loads((out / "gpu_report.json").read_text()), (out / "gpu_report.md").read_text()


def test_every_part_runs_and_both_files_are_written(dry_run):
    code, report, text = dry_run
    assert code == 0, {k: v for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert report["dry_run"] is True and report["device"]["device_type"] == "cpu"
    assert set(report["part_seconds"]) == {"models", "attention", "flash_head_dim_256", "agreement", "gpu_tests"}
    assert "over half the 0 s budget" in report["compiled"]["skipped"]
    for heading in ("## Models: published and fast settings", "## The attention alone (head dim 256)",
                    "## bf16 vs fp32 argmax agreement", "## Goals", "## gpu-marked tests"):
        assert heading in text
    assert text.startswith("# nlbench GPU report\n\n**Dry run**")


def test_models_part_holds_both_settings_with_training_steps(dry_run):
    _, report, _ = dry_run
    assert [m["recipe"] for m in report["models"]] == list(ROWS)
    for result in report["models"]:
        assert result["infer_attention_impl"] == "explicit" and result["train_ddp"]["backend"] == "gloo"
        assert result["fps"] > 0 and result["mem_gb"] > 0 and result["train_step_s"] > 0
        fast = result["fast"]
        assert fast["infer_attention_impl"] == "sdpa" and fast["fps"] > 0 and fast["train_step_s"] > 0


def test_attention_part_names_the_kernel_that_ran(dry_run):
    _, report, _ = dry_run
    rows = report["attention"]
    assert {(r["n"], r["impl"], r["dtype"]) for r in rows} == {
        (n, impl, dtype) for n in (256, 1024) for impl in ("sdpa", "explicit") for dtype in ("float32", "bfloat16")}
    assert {r["kernel"] for r in rows if r["impl"] == "sdpa"} == {"flash (CPU)"}  # read off the profiler
    assert all(r["head_dim"] == 256 and r["ms"] > 0 for r in rows)
    flash = report["flash_head_dim_256"]
    assert flash["kernel"] == "flash (CPU)" and flash["backward_ok"] is True
    assert flash["relative_error_vs_fp64"] < 0.02  # bf16 rounding, not a wrong result


def test_agreement_and_gpu_tests_parts(dry_run):
    _, report, _ = dry_run
    agreement = report["agreement"]
    assert agreement["pixels"] == 2 * 64 * 128 and 0 < agreement["agreement_percent"] <= 100
    tests = report["gpu_tests"]
    assert tests["returncode"] == 0 and "skipped" in tests["summary"] and "passed" not in tests["summary"]
    assert "tests/engine/test_bench_settings.py" in tests["files"]


def test_goals_are_not_judged_off_the_gpu_they_name(dry_run):
    _, report, _ = dry_run
    assert [g["met"] for g in report["goals"]] == [None] * len(report["goals"]) and len(report["goals"]) == 4
    h100 = {**report, "device": {**report["device"], "device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}}
    fast = {"fps": 75.0, "train_step_s": 0.4, "train_step_mem_gb": 4.0}
    h100["models"] = [{"recipe": ROWS[0], "train_step_s": 1.0, "train_step_mem_gb": 10.0, "fast": fast}]
    h100["agreement"] = {"agreement_percent": 99.8}
    # 2.5x faster at 0.4x the memory; 75 fps on an H100; 99.8% agreement is under 99.9%.
    assert [g["met"] for g in goals(h100)] == [True, True, False]


def test_gpu_tests_get_what_is_left_of_the_limit_and_a_cut_report_still_reads(dry_run):
    assert time_for_gpu_tests(100.0, 480.0) == 300.0  # plenty left: pytest's own cap
    assert time_for_gpu_tests(400.0, 480.0) == 70.0  # stopped 10 s before the limit, to write the files
    assert time_for_gpu_tests(445.0, 480.0) is None  # under 30 s: left out, and the report says why
    _, report, _ = dry_run
    assert report["limit_s"] == 480.0
    first_part = {k: report[k] for k in ("dry_run", "sizes", "device", "budget_s", "models")}
    text = markdown({**first_part, "goals": goals(first_part), "wall_time_s": 1.0})
    assert text.count("(not measured: the report stopped before this part)") == 4  # attention, flash, bf16, tests


def test_gpu_tests_that_run_past_their_time_are_stopped_and_said():
    started = time.monotonic()
    tests = gpu_tests(timeout_s=1)  # pytest cannot even import torch in a second
    assert time.monotonic() - started < 30
    assert tests["returncode"] is None and tests["summary"].startswith("stopped after 1 s (the report's --limit-s)")
