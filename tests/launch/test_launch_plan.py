"""Planning: recipes -> jobs, skipping complete rows, the cost estimate, and run-all's input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.catalog import load_published
from benchmark.cli import main as cli
from benchmark.errors import NLBenchError
from benchmark.launch import slurm
from benchmark.launch.cost import INFER_TMAC_PER_S, estimate_gpu_hours, forward_gmac, image_test_gmac
from benchmark.launch.plan import Resources, default_time_limit_min, format_plan, make_plan
from benchmark.recipe import list_recipe_paths, load_recipe

ONE_CPU = lambda recipe: Resources()  # noqa: E731


def test_one_job_per_row_with_published_stages(tmp_path):
    plan = make_plan(tmp_path, ONE_CPU)
    assert len(plan.jobs) == len(list_recipe_paths()) == 16
    published = load_published()
    for job in plan.jobs:
        has_ms_flip = published.loc[job.name, "miou_ms_flip_text"] != ""
        expected = ("train", "eval", "eval_ms_flip", "bench") if has_ms_flip else ("train", "eval", "bench")
        assert job.stages == expected, job.name
        assert Path(job.work_dir) == tmp_path.resolve() / "work" / "full" / job.name / f"seed0-{job.recipe.hash[:12]}"
        assert job.gpu_hours is not None and job.gpu_hours > 0
    assert plan.total_gpu_hours == pytest.approx(sum(j.gpu_hours for j in plan.jobs))


def test_seeds_override_runtime_seed_and_filter(tmp_path):
    plan = make_plan(tmp_path, ONE_CPU, pattern="*r101*cityscapes-769x769", profile="smoke", seeds=3)
    assert sorted({j.name for j in plan.jobs}) == ["nonlocal_r101-d8_4xb2-40k_cityscapes-769x769",
                                                   "nonlocal_r101-d8_4xb2-80k_cityscapes-769x769"]
    assert sorted((j.name, j.seed, j.recipe.runtime.seed) for j in plan.jobs)[:3] == [
        ("nonlocal_r101-d8_4xb2-40k_cityscapes-769x769", s, s) for s in (0, 1, 2)]
    assert len({j.work_dir for j in plan.jobs}) == 6
    assert all(j.profile == "smoke" and j.gpu_hours is None for j in plan.jobs)


def test_filter_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(NLBenchError, match="--filter.*no recipe matches 'nonlocal_r18\\*'"):
        make_plan(tmp_path, ONE_CPU, pattern="nonlocal_r18*")


def _plant(results: Path, recipe: str, kinds, seed=0, profile="smoke"):
    """Records as write_record makes them (the real writer, real files)."""
    from benchmark.run.records import provenance, write_record

    r = load_recipe(recipe, profile=profile)
    for kind in kinds:
        metrics = {"aAcc": 90.0, "mIoU": 50.0, "mAcc": 60.0} if kind.startswith("eval") else None
        write_record(results, {"kind": kind, "recipe": recipe, "profile": profile, "seed": seed,
                               "iterations": 40, "wall_time_s": 1.0, "gpu_hours": None, "metrics": metrics,
                               "mem_gb": None, "fps": 1.0 if kind == "bench" else None,
                               "provenance": provenance(r, device="cpu")})


def test_rows_with_every_record_are_skipped(tmp_path):
    voc20, voc40 = "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", "nonlocal_r50-d8_4xb4-40k_voc12aug-512x512"
    _plant(tmp_path, voc20, ["train", "eval", "eval_ms_flip", "bench"])
    _plant(tmp_path, voc40, ["train", "eval", "bench"])  # ms+flip still missing: not complete
    plan = make_plan(tmp_path, ONE_CPU, pattern="*r50*voc12aug*", profile="smoke")
    assert [j.name for j in plan.jobs] == [voc40]
    assert plan.skipped == [f"smoke/{voc20}/seed0"]
    # Another seed of the complete row is not complete.
    plan = make_plan(tmp_path, ONE_CPU, pattern="*r50*20k_voc12aug*", profile="smoke", seeds=2)
    assert [(j.name, j.seed) for j in plan.jobs] == [(voc20, 1)]


def test_cost_model_matches_the_stated_gmac_and_published_fps():
    # docs/FIDELITY.md: R-50-D8 769x769 = 459 + 45, 1024x2048 = 1598 + 550; R-101 1024x2048 = 2219 + 550.
    assert forward_gmac(50, 769, 769) == pytest.approx(459 + 45, rel=0.02)
    assert forward_gmac(50, 1024, 2048) == pytest.approx(1598 + 550, rel=0.02)
    assert forward_gmac(101, 1024, 2048) == pytest.approx(2219 + 550, rel=0.02)
    assert forward_gmac(18, 64, 128) is None
    # The assumed inference rate turns the model cost into fps near the published ones (within 10%).
    published = load_published()
    for name in ("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024", "nonlocal_r50-d8_4xb2-40k_cityscapes-769x769",
                 "nonlocal_r50-d8_4xb4-80k_ade20k-512x512", "nonlocal_r101-d8_4xb2-40k_cityscapes-769x769"):
        fps = INFER_TMAC_PER_S * 1e3 / image_test_gmac(load_recipe(name))
        assert fps == pytest.approx(published.loc[name, "fps"], rel=0.10), name


def test_estimate_scales_with_schedule_and_depth():
    r50_40k = estimate_gpu_hours(load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"))
    r50_80k = estimate_gpu_hours(load_recipe("nonlocal_r50-d8_4xb2-80k_cityscapes-512x1024"))
    r101_40k = estimate_gpu_hours(load_recipe("nonlocal_r101-d8_4xb2-40k_cityscapes-512x1024"))
    assert 1.8 < r50_80k / r50_40k < 2.05  # training dominates; evaluation does not double
    assert r101_40k > r50_40k
    assert default_time_limit_min(r50_40k, 4) >= r50_40k * 60 / 4
    assert default_time_limit_min(None, 4) == 30


def test_slurm_resources_from_recipe_gpus(tmp_path):
    profile = slurm.ClusterProfile(gpus_per_node=8)
    recipe = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024")
    assert slurm.resources_for(profile)(recipe) == Resources(nodes=1, tasks_per_node=4, gpus_per_node=4)
    assert slurm.resources_for(slurm.ClusterProfile(gpus_per_node=2))(recipe) == Resources(2, 2, 2)
    assert slurm.resources_for(slurm.ClusterProfile(gpus_per_node=0, cpu_tasks=2))(recipe) == Resources(1, 2, 0)
    with pytest.raises(NLBenchError, match="do not split evenly"):
        slurm.resources_for(slurm.ClusterProfile(gpus_per_node=3))(recipe)


def test_shipped_cluster_profiles_load():
    root = Path(__file__).resolve().parents[2] / "slurm"
    test = slurm.load_cluster_profile(root / "test-cluster.yaml")
    assert test.gpus_per_node == 0 and test.timeout_min >= 11  # USR2 then counts as a preemption
    example = slurm.load_cluster_profile(root / "example.yaml")
    assert example.gpus_per_node > 0 and example.partition


def test_bad_cluster_profile_key_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: debug\ngpus_per_nod: 4\n")
    with pytest.raises(NLBenchError) as err:
        slurm.load_cluster_profile(bad)
    assert str(bad) in str(err.value) and "gpus_per_nod" in str(err.value) and "unknown key" in str(err.value)
    code = cli(["run-all", "--launcher", "slurm", "--cluster", str(bad), "--results", str(tmp_path / "r")])
    assert code == 2
    assert "gpus_per_nod: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing planned, nothing written
    bad.write_text("timeout_min: soon\n")
    with pytest.raises(NLBenchError, match="timeout_min"):
        slurm.load_cluster_profile(bad)


def test_run_all_input_errors_exit_2_and_run_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    assert cli(["run-all", "--filter", "nope*", "--results", str(results)]) == 2
    assert "no recipe matches 'nope*'" in capsys.readouterr().err
    assert cli(["run-all", "--launcher", "slurm", "--results", str(results)]) == 2
    assert "--cluster" in capsys.readouterr().err
    # A results path below a regular file can never be created (even by root).
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli(["run-all", "--profile", "smoke", "--filter", "*r50*20k_voc*", "--results", str(blocker / "r")]) == 2
    err = capsys.readouterr().err
    assert "--results" in err and "not writable" in err and "Traceback" not in err
    assert not results.exists()


def test_dry_run_full_prints_every_row_and_the_total(tmp_path, capsys):
    assert cli(["run-all", "--dry-run", "--profile", "full", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "r").exists()
    rows = [line for line in out.splitlines() if line.startswith("| nonlocal_")]
    assert len(rows) == 16
    plan = make_plan(tmp_path / "r", ONE_CPU)
    assert f"estimated total: {plan.total_gpu_hours:.0f} GPU-hours" in out
    assert "4x2" in out and "4x4" in out and "ms+flip" in out
    # Each row's estimate is printed with its time limit.
    first = next(j for j in plan.jobs if j.name == rows[0].split("|")[1].strip())
    assert f"{first.gpu_hours:.1f}" in rows[0]


def test_job_dict_round_trip(tmp_path):
    from benchmark.run.job import job_from_dict

    plan = make_plan(tmp_path, ONE_CPU, pattern="*r101*80k_ade20k*", profile="smoke", seeds=2,
                     overrides=["schedule.max_iters=8"])
    for job in plan.jobs:
        again = job_from_dict(json.loads(json.dumps(job.to_dict())))
        assert again == job


def test_saved_gpu_hours_of_a_stopped_job_are_the_rest_of_it():
    from benchmark.launch.cost import estimate_saved_gpu_hours
    from benchmark.launch.plan import stages_for

    row = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"
    recipe = load_recipe(row)
    stages = stages_for(recipe)
    total, train = estimate_gpu_hours(recipe, stages), estimate_gpu_hours(recipe, ("train",))
    assert estimate_saved_gpu_hours(recipe, stages, 0) == pytest.approx(total)
    assert estimate_saved_gpu_hours(recipe, stages, 8000) == pytest.approx(total - 0.2 * train)
    assert estimate_saved_gpu_hours(recipe, stages, 40000) == pytest.approx(total - train)  # the later stages
    assert estimate_saved_gpu_hours(load_recipe(row, profile="smoke"), stages, 50) is None


def test_a_row_the_guard_stopped_is_planned_again_only_with_guard_action_warn(tmp_path):
    from benchmark.run.records import provenance, write_record

    row = "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512"
    r = load_recipe(row, profile="smoke")
    write_record(tmp_path, {"kind": "train", "recipe": row, "profile": "smoke", "seed": 0, "iterations": 100,
                            "wall_time_s": 1.0, "gpu_hours": None, "metrics": None, "mem_gb": None, "fps": None,
                            "provenance": provenance(r, device="cpu"), "status": "diverged",
                            "stopped_at_iteration": 50, "guard": {"message": "diverged at iter 50"}})
    stop = make_plan(tmp_path, ONE_CPU, pattern=row, profile="smoke", overrides=["guard.action=stop"])
    assert stop.jobs == [] and stop.diverged == [f"smoke/{row}/seed0"]
    assert "skipped 1 diverged row(s)" in format_plan(stop, "local")
    warn = make_plan(tmp_path, ONE_CPU, pattern=row, profile="smoke", overrides=["guard.action=warn"])
    assert [j.name for j in warn.jobs] == [row] and warn.jobs[0].stages[0] == "train"
