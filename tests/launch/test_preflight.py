"""Pre-flight (`nlbench doctor`, and run-all before any job): each known data fault, planted in a real
layout written by write_synthetic, is reported by name with its absolute path; run-all stops on a
problem with one line each, exit 2, nothing written; deviations from the published setting reach the
records and the verdicts."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ADE_ROW, CITY_ROW, VOC_ROW
from PIL import Image
from report_helpers import ROW, make_record
from slurm_cluster import cluster_fixture

from benchmark.cli import main as cli
from benchmark.data.checks import PUBLISHED_COUNTS
from benchmark.data.synthetic import write_synthetic
from benchmark.launch.preflight import check_cluster
from benchmark.recipe import load_recipe
from benchmark.run.deviations import deviations
from benchmark.run.records import RecordStore, write_record
from benchmark.run.schema import Record

CITY, ADE, VOC = CITY_ROW, ADE_ROW, VOC_ROW
ROWS = {"cityscapes": CITY, "ade20k": ADE, "voc": VOC}


def _doctor(capsys, recipe: str, root: Path, *extra: str):
    code = cli(["doctor", recipe, "--profile", "smoke", "--data-root", str(root), "--results",
                str(root.parent / "results"), *extra])
    out = capsys.readouterr().out
    return code, out, [line for line in out.splitlines() if line.startswith("problem")]


@pytest.fixture
def city(tmp_path) -> Path:
    return write_synthetic("cityscapes", tmp_path / "cityscapes", train=4, val=2, size_hw=(32, 64))


def _first(root: Path, split: str, pattern: str) -> Path:
    return sorted((root / "gtFine" / split).rglob(pattern))[0]


@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k", "voc"])
def test_doctor_is_clean_on_the_synthetic_sets_and_says_they_are_smaller(tmp_path, capsys, dataset):
    root = write_synthetic(dataset, tmp_path / dataset, train=4, val=2, size_hw=(32, 64))
    code, out, bad = _doctor(capsys, ROWS[dataset], root)
    assert code == 0 and bad == [], out
    published = PUBLISHED_COUNTS[load_recipe(ROWS[dataset]).data.dataset]["train"]
    assert f"note    data.train: {root}: 4 image/label pairs, a smaller set than the published {published}" in out
    assert "0 problem(s)" in out


def test_a_label_value_outside_the_classes_is_named(city, capsys):
    label = _first(city, "train", "*_labelTrainIds.png")
    array = np.array(Image.open(label))
    array[0, 0] = 40
    Image.fromarray(array).save(label)
    code, out, bad = _doctor(capsys, CITY, city)
    assert code == 1
    assert any(line.startswith(f"problem data.train: {label}: label values 40 (1 pixels) are outside the 19 classes")
               for line in bad), out


def test_a_missing_label_is_named(city, capsys):
    label = _first(city, "val", "*_labelTrainIds.png")
    label.unlink()
    code, out, bad = _doctor(capsys, CITY, city)
    assert code == 1
    assert any(line.startswith(f"problem data.val: {label}: label for image ") and line.endswith("is missing")
               for line in bad), out


def test_a_label_whose_size_differs_from_its_image_is_named(city, capsys):
    label = _first(city, "train", "*_labelTrainIds.png")
    Image.fromarray(np.zeros((16, 64), np.uint8)).save(label)
    code, out, bad = _doctor(capsys, CITY, city)
    assert code == 1
    assert any(line.startswith(f"problem data.train: {label}: label is 16x64 but its image ") and
               "is 32x64 (HxW); expected the same size" in line for line in bad), out


def test_a_voc_aug_list_naming_a_missing_file_is_named(tmp_path, capsys):
    root = write_synthetic("voc", tmp_path / "voc", train=4, val=2, size_hw=(32, 64))
    aug = root / "ImageSets" / "Segmentation" / "aug.txt"
    aug.write_text(aug.read_text() + "2099_000123\n")
    code, out, bad = _doctor(capsys, VOC, root)
    assert code == 1
    missing = root / "JPEGImages" / "2099_000123.jpg"
    assert f"problem data.train: {aug}: image {missing} named in the split is missing" in bad, out


def test_an_empty_split_is_named(city, capsys):
    for image in (city / "leftImg8bit" / "val").rglob("*.png"):
        image.unlink()
    code, out, bad = _doctor(capsys, CITY, city)
    assert code == 1
    assert any(line.startswith(f"problem data.val: {city / 'leftImg8bit' / 'val'}: the val split is empty")
               for line in bad), out


def test_a_relative_data_root_resolves_against_the_documented_base(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NLBENCH_DATA_BASE", str(tmp_path / "base"))
    code, out, bad = _doctor(capsys, CITY, Path("nowhere"), "--set", "data.synthetic=null")
    assert code == 1
    where = tmp_path / "base" / "nowhere"
    assert bad[0].startswith(f"problem data.root: {where}: data root not found; expected MMSeg's cityscapes"), out


def test_a_reader_names_the_base_a_relative_data_root_was_resolved_against(tmp_path, monkeypatch):
    from benchmark.data.layouts import build_dataset
    from benchmark.errors import NLBenchError

    monkeypatch.setenv("NLBENCH_DATA_BASE", str(tmp_path))
    with pytest.raises(NLBenchError) as exc:
        build_dataset(load_recipe(CITY).data, "val", "elsewhere")
    assert str(exc.value).startswith(f"{tmp_path / 'elsewhere'}: data root not found (the relative 'elsewhere' "
                                     f"resolved against $NLBENCH_DATA_BASE {tmp_path})")


def test_a_backbone_file_that_does_not_fit_is_a_problem(city, tmp_path, capsys):
    from benchmark.models.segmentor import build_segmentor

    model = load_recipe(CITY, profile="smoke").model
    weights = build_segmentor(model).backbone.state_dict()
    dropped = sorted(weights)[0]
    del weights[dropped]
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": weights}, path)
    code, out, bad = _doctor(capsys, CITY, city, "--set", f"model.pretrained={path}")
    assert code == 1
    assert any(line.startswith(f"problem pretrained: {path}: ") and dropped in line for line in bad), out
    torch.save({"state_dict": build_segmentor(model).backbone.state_dict()}, path)
    code, out, bad = _doctor(capsys, CITY, city, "--set", f"model.pretrained={path}")
    assert code == 0 and "0 missing, 0 unexpected" in out, out


def test_run_all_stops_on_a_missing_data_root_with_one_line_and_writes_nothing(tmp_path, capsys):
    results, missing = tmp_path / "R", tmp_path / "no-data"
    started = time.perf_counter()
    code = cli(["run-all", "--filter", CITY, "--profile", "smoke", "--results", str(results), "--data-root",
                str(missing), "--set", "data.synthetic=null"])
    took = time.perf_counter() - started
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith("nlbench run-all: error: pre-flight found 1 problem(s); nothing was run or submitted")
    assert lines[1] == (f"  data.root: {missing}: data root not found; expected MMSeg's cityscapes layout (set "
                        "data.data_root, pass --data-root, or set $NLBENCH_DATA_BASE)")
    assert "Traceback" not in captured.out + captured.err
    assert not results.exists()
    assert took < 30


def test_a_synthetic_set_of_an_older_renderer_is_a_problem_for_doctor_and_run_all(city, capsys):
    """The stamp ensure_dataset checks on the node is checked before: doctor names it, run-all stops."""
    import json

    code, out, bad = _doctor(capsys, CITY, city)
    assert code == 0 and bad == [], out
    stamp = json.loads((city / "synthetic.json").read_text())
    (city / "synthetic.json").write_text(json.dumps(dict(stamp, renderer=1)))  # as an older nlbench wrote it
    code, out, bad = _doctor(capsys, CITY, city)
    assert code == 1 and len(bad) == 1, out  # doctor's exit status for a problem
    assert bad[0].startswith(f"problem data.synthetic: {city}: ") and "written by another nlbench (renderer 1, " \
        "expected 2)" in bad[0], bad
    results = city.parent / "R"
    assert cli(["run-all", "--filter", CITY, "--profile", "smoke", "--results", str(results), "--data-root",
                str(city)]) == 2
    err = capsys.readouterr().err
    assert "pre-flight found 1 problem(s)" in err and "data.synthetic:" in err and "renderer 1" in err, err
    assert not results.exists()


def test_eval_of_a_released_checkpoint_reads_the_data_root_before_any_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path / "cache"))
    import benchmark.mmseg_checkpoint as ckpt

    monkeypatch.setattr(ckpt, "fetch_released", lambda *a, **k: pytest.fail("downloaded before the data check"))
    code = cli(["eval", CITY, "--checkpoint", "released", "--data-root", str(tmp_path / "missing")])
    assert code == 2
    assert f"{tmp_path / 'missing'}: data root not found" in capsys.readouterr().err


def test_slurm_profile_names_are_looked_up_on_the_cluster(tmp_path):
    from benchmark.launch.slurm import ClusterProfile

    answers = {"sinfo": (0, "debug\ngpu\n"), "sacctmgr": (0, "root\nlab\n")}
    found = check_cluster(ClusterProfile(partition="gpus", account="lab"), tmp_path, [],
                          run=lambda argv: answers[argv[0]])
    by_check = {f.check: f for f in found}
    assert by_check["slurm.partition"].level == "problem"
    assert "partition 'gpus' is not known to the cluster (`sinfo -h` lists: debug, gpu)" in \
        by_check["slurm.partition"].message
    assert by_check["slurm.account"].level == "ok"
    assert any(f.check == "slurm.shared" and str(tmp_path) in f.message for f in found)


def test_deviations_name_the_effective_batch_and_the_norm():
    full = load_recipe(CITY)
    assert deviations(full, 4, "Tesla V100-SXM2-32GB", counts=PUBLISHED_COUNTS["cityscapes"]) == []
    found = deviations(full, 2, "Tesla V100-SXM2-32GB", counts=PUBLISHED_COUNTS["cityscapes"])
    assert found == ["effective batch 4 instead of 8 (2 x 2 images, published 4 GPUs x 2)"]
    one = deviations(full, 1, "cpu", counts={"train": 10, "val": 5})
    assert "BN instead of SyncBN" in one and "device cpu instead of V100" in one
    assert "data 10/5 train/val images instead of 2975/500" in one
    smoke = deviations(load_recipe(CITY, profile="smoke"), 1, "cpu", counts={"train": 32, "val": 16})
    assert smoke[0].startswith("smoke profile (by design: depth-18 model")
    assert "synthetic data 32/16 images" in smoke[0]


def test_deviations_sit_beside_the_verdict_and_old_records_stay_readable(tmp_path, capsys):
    old = make_record("eval")
    write_record(tmp_path, old)
    assert RecordStore.read(tmp_path).records[0].deviations is None
    for kind in ("train", "eval", "bench"):
        write_record(tmp_path, {**make_record(kind, seed=1), "deviations": ["effective batch 4 instead of 8"]})
    assert Record.parse({**make_record("eval"), "schema": "nlbench.record/1", "created_at":
                         "2026-01-01T00:00:00+00:00", "deviations": "x"})[0] is None
    cli(["compare", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert any(ROW in line and "; effective batch 4 instead of 8 |" in line for line in out.splitlines()), out


# ----------------------------------------------------------------------------- on the SLURM test cluster

cluster = cluster_fixture()
PROFILE = Path(__file__).resolve().parents[2] / "slurm" / "test-cluster.yaml"


def _queued() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout


@pytest.mark.slurm
def test_run_all_on_slurm_stops_on_a_missing_data_root_before_submitting(cluster, capsys):
    results, missing = cluster / "R-missing", cluster / "no-data"
    before = _queued()
    started = time.perf_counter()
    code = cli(["run-all", "--launcher", "slurm", "--cluster", str(PROFILE), "--filter", CITY, "--profile", "smoke",
                "--results", str(results), "--data-root", str(missing), "--set", "data.synthetic=null"])
    took = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2
    assert f"  data.root: {missing}: data root not found" in err.splitlines()[1]
    assert "slurm.partition" not in err  # the profile's partition is the cluster's
    assert not results.exists() and _queued() == before
    assert took < 60


@pytest.mark.slurm
def test_doctor_finds_the_profile_names_on_the_cluster(cluster, capsys):
    root = write_synthetic("cityscapes", cluster / "city-doctor", train=2, val=1, size_hw=(32, 64))
    profile = cluster / "wrong-partition.yaml"
    profile.write_text(PROFILE.read_text().replace("partition: debug", "partition: nosuch"))
    code, out, bad = _doctor(capsys, CITY, root, "--launcher", "slurm", "--cluster", str(PROFILE))
    assert code == 0 and "ok      slurm.partition: debug: known to the cluster" in out, out
    code, out, bad = _doctor(capsys, CITY, root, "--launcher", "slurm", "--cluster", str(profile))
    assert code == 1
    assert bad == ["problem slurm.partition: the cluster profile's partition 'nosuch' is not known to the cluster "
                   "(`sinfo -h` lists: debug)"], out


def test_a_failing_job_keeps_its_traceback_in_the_job_log_not_the_console(tmp_path, capsys):
    from benchmark.launch import local
    from benchmark.launch.plan import make_plan

    plan = make_plan(tmp_path / "R", local.resources_for, pattern=CITY, profile="smoke",
                     overrides=["data.synthetic=null"], data_root=str(tmp_path / "absent"))
    outcome = local.run_local(plan.jobs, tmp_path / "R")  # past the pre-flight, as a job that meets bad data
    captured = capsys.readouterr()
    assert list(outcome.values()) == ["failed"]
    assert f"{tmp_path / 'absent'}: data root not found" in captured.out
    assert "Traceback" not in captured.out + captured.err
    log = (Path(plan.jobs[0].work_dir) / "job.log").read_text()
    assert "Traceback (most recent call last)" in log


def test_run_all_on_released_checkpoints_checks_the_data_before_any_download(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NLBENCH_CACHE", str(cache))
    code = cli(["run-all", "--checkpoint", "released", "--filter", CITY, "--results", str(tmp_path / "R"),
                "--data-root", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert code == 2 and f"  data.root: {tmp_path / 'absent'}: data root not found" in err
    assert not cache.exists() and not (tmp_path / "R").exists()


def test_a_data_root_given_to_the_plan_is_part_of_the_planned_recipe(tmp_path, monkeypatch):
    """run-all --data-root is the planned recipe's data root (as --set data.data_root): the job file's
    resolved recipe says it and the job reads what was planned; the recipe hash and work dir stay
    those of the recipe's own root (the same dataset moved is the same run)."""
    from benchmark.launch import local
    from benchmark.launch.plan import make_plan
    from benchmark.run.job import job_from_dict

    monkeypatch.setenv("NLBENCH_DATA_BASE", str(tmp_path / "base"))
    own = make_plan(tmp_path / "R", local.resources_for, pattern=CITY, profile="smoke", seeds=2).jobs
    given = make_plan(tmp_path / "R", local.resources_for, pattern=CITY, profile="smoke", seeds=2,
                      data_root="elsewhere").jobs
    where = str(tmp_path / "base" / "elsewhere")
    for job, other in zip(given, own):
        assert job.recipe.data.data_root == job.data_root == where
        assert other.recipe.data.data_root != where
        assert job.recipe.hash == other.recipe.hash and job.work_dir == other.work_dir
        assert job.recipe.config_hash == other.recipe.config_hash
        entry = job.to_dict()
        assert entry["recipe_resolved"]["data"]["data_root"] == where
        monkeypatch.setenv("NLBENCH_DATA_BASE", str(tmp_path / "moved"))  # the job runs elsewhere
        again = job_from_dict(entry)
        assert again.data_root == again.recipe.data.data_root == where and again.recipe.hash == job.recipe.hash
    assert [j.seed for j in given] == [0, 1] and given[0].recipe.hash != given[1].recipe.hash
    assert own[0].data_root == str(tmp_path / "base" / load_recipe(CITY, profile="smoke").data.data_root)
