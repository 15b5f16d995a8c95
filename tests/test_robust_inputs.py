"""Bad input far from the command line still ends as one clear NLBenchError naming the file."""

from __future__ import annotations

import hashlib

import pytest
from conftest import VOC_ROW as ROW
from conftest import run_cli

from benchmark.data.layouts import build_dataset
from benchmark.data.loader import train_batches
from benchmark.data.synthetic import write_synthetic
from benchmark.data.transforms import build_train_pipeline
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.launch.slurm import load_cluster_profile
from benchmark.recipe import REPO_ROOT, load_recipe


def test_corrupt_image_read_in_a_worker_names_the_file(tmp_path):
    root = tmp_path / "voc"
    write_synthetic("voc", root, train=2, val=1, size_hw=(32, 40), seed=0)
    recipe = load_recipe(ROW, [f"data.data_root={root}"], profile="smoke")
    dataset = build_dataset(recipe.data, "train", str(root))
    bad = dataset.samples[0].image  # every epoch reads every training sample
    bad.write_bytes(b"not a jpeg")
    pipeline = build_train_pipeline(recipe.data)
    batches = train_batches(dataset, pipeline, imgs_per_gpu=2, seed=0, num_workers=1)
    with pytest.raises(NLBenchError) as info:
        for _ in range(len(dataset)):  # bounded: one epoch holds the bad sample
            next(batches)
    message = str(info.value)
    assert bad.name in message and "Caught" not in message and "\n" not in message


def test_unwritable_targets_are_clear_errors(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(NLBenchError, match="cannot write: is a directory"):
        atomic_write_text(tmp_path / "adir", "x")
    (tmp_path / "afile").write_text("")
    with pytest.raises(NLBenchError, match="cannot write"):
        atomic_write_text(tmp_path / "afile" / "below.json", "x")


def test_non_utf8_yaml_and_zero_sizes(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(NLBenchError, match="not a UTF-8 text file"):
        load_recipe(binary)
    with pytest.raises(NLBenchError, match="not a UTF-8 text file"):
        load_cluster_profile(binary)
    for override in ("data.crop_size=[0,0]", "data.img_scale=[2048,0]"):
        with pytest.raises(NLBenchError, match="greater than 0"):
            load_recipe(ROW, [override])


def test_cli_on_a_missing_recipe_file_is_one_line(tmp_path):
    proc = run_cli("show", tmp_path / "bin.yaml", cwd=REPO_ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _short_smoke(tmp_path, *extra):
    return load_recipe(
        "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024",
        ["schedule.max_iters=2", "schedule.checkpoint_interval=2", "schedule.eval_interval=2",
         f"data.data_root={tmp_path / 'cs'}", "data.synthetic.train=2", "data.synthetic.val=1", *extra],
        profile="smoke",
    )


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_recipe(tmp_path):
    from benchmark.engine.train import train

    train(_short_smoke(tmp_path), tmp_path / "work", device="cpu", log=lambda _m: None)
    changed = _short_smoke(tmp_path, "schedule.lr=0.02", "schedule.max_iters=4")
    with pytest.raises(NLBenchError, match="latest.pth: written by a different recipe"):
        train(changed, tmp_path / "work", resume=True, device="cpu", log=lambda _m: None)


def test_only_records_of_the_same_resolved_recipe_count_as_done(tmp_path):
    from benchmark.run.records import RecordStore, provenance, write_record

    recipe = _short_smoke(tmp_path)
    write_record(tmp_path / "results", {
        "kind": "bench", "recipe": recipe.name, "profile": recipe.profile, "seed": 0, "iterations": 2,
        "wall_time_s": 1.0, "gpu_hours": None, "metrics": None, "mem_gb": 0.5, "fps": 3.0,
        "provenance": provenance(recipe),
    })
    args = (recipe.name, recipe.profile, 0)
    store = RecordStore.read_row(tmp_path / "results", *args)
    assert store.kinds_done(*args) == {"bench"}
    assert store.kinds_done(*args, recipe.hash) == {"bench"}
    assert store.kinds_done(*args, _short_smoke(tmp_path, "schedule.lr=0.02").hash) == set()


@pytest.mark.slow
def test_resume_takes_a_checkpoint_hashed_by_an_older_rule_when_its_work_dir_ran_this_recipe(tmp_path):
    """A work dir renamed into place (launch/plan.py adopt_old_work_dirs) holds checkpoints whose hash
    was computed by an earlier rule (the data root was part of it): the same configuration resumes.
    Another configuration is still refused, whatever recipe.yaml says (`nlbench train` rewrites it
    before training starts)."""
    import json as json_module

    import torch

    from benchmark.engine.train import train

    recipe = _short_smoke(tmp_path, "schedule.max_iters=4")
    body = {k: v for k, v in recipe.to_dict().items() if k not in ("source", "guard")}  # the earlier rule
    earlier = hashlib.sha256(json_module.dumps(body, sort_keys=True).encode()).hexdigest()
    assert earlier != recipe.hash
    work = tmp_path / "work"
    train(_short_smoke(tmp_path), work, device="cpu", log=lambda _m: None)  # 2 of the 4 iterations

    def stamp(saved_hash):
        state = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=False)
        state["meta"]["recipe_hash"] = saved_hash
        for name in ("iter_2.pth", "latest.pth"):
            torch.save(state, work / name)
        digest = hashlib.sha256((work / "iter_2.pth").read_bytes()).hexdigest()
        (work / "checkpoints.sha256").write_text(f"{digest}  iter_2.pth\n")  # the ledger as training keeps it

    stamp("0" * 64)  # another configuration's checkpoint, with this run's recipe.yaml beside it
    (work / "recipe.yaml").write_text(recipe.to_yaml())
    with pytest.raises(NLBenchError, match="latest.pth: written by a different recipe"):
        train(recipe, work, resume=True, device="cpu", log=lambda _m: None)
    stamp(earlier)
    assert train(recipe, work, resume=True, device="cpu", log=lambda _m: None)["iterations"] == 4
