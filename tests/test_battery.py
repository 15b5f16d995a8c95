"""A battery of broken inputs, run as a user runs them: each case is one `nlbench` command on one bad
file or value, and each must end with exit status 2, one line on stderr that names the culprit (the
file, or the key), no traceback, and nothing half-written (no temporary file left, no output of the
failed command, every file that was there before unchanged).

The cases cover every reader of every stage that reads (train, eval, eval ms+flip, bench, predict)
and the inputs around them: recipes, overrides, checkpoints (unsafe pickles included: no code
runs), images, datasets, work dirs, results folders, cluster profiles, records and reference files.
They run in this process through `benchmark.cli.main` (a few as a subprocess), on a tiny synthetic
VOC set and Cityscapes set in the real layouts and the smoke model, written once for the module.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
from conftest import CITY_ROW as CS_ROW
from conftest import VOC_ROW as ROW
from conftest import run_cli
from PIL import Image

from benchmark.cli import main as cli_main
from benchmark.mmseg_checkpoint import save_checkpoint
from benchmark.recipe import REPO_ROOT, load_recipe

SMOKE = ["--profile", "smoke", "--device", "cpu"]
VAL = "2010_000000"  # the first val image of the synthetic VOC set
TRAIN = "2007_000000"  # the first train image (train.txt; aug.txt follows)


@dataclass
class Kit:
    """What the cases start from, written once: data sets, smoke weights, a results folder."""

    root: Path
    voc: Path
    cityscapes: Path
    weights: Path  # an MMSeg-format checkpoint of the VOC smoke model
    results: Path  # one valid eval record of ROW


class Evil:
    """A pickle payload: unpickling it opens (creates) ``marker`` for writing."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _eval_record(recipe_name: str = ROW, **changes) -> Dict:
    from benchmark.run.records import provenance

    body = {"kind": "eval", "recipe": recipe_name, "profile": "smoke", "seed": 0, "iterations": 2,
            "wall_time_s": 1.0, "gpu_hours": None, "metrics": {"aAcc": 90.0, "mIoU": 40.0, "mAcc": 50.0},
            "mem_gb": None, "fps": None, "provenance": provenance(load_recipe(ROW, profile="smoke"), device="cpu")}
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Kit:
    from benchmark.data.synthetic import write_synthetic
    from benchmark.models.segmentor import build_segmentor
    from benchmark.run.records import write_record

    root = tmp_path_factory.mktemp("kit")
    voc = write_synthetic("voc", root / "voc", train=2, val=2, size_hw=(32, 40), seed=0)
    cityscapes = write_synthetic("cityscapes", root / "cityscapes", train=1, val=2, size_hw=(32, 64), seed=0)
    torch.manual_seed(0)
    model = build_segmentor(load_recipe(ROW, profile="smoke").model)
    weights = save_checkpoint(root / "voc_smoke.pth", model.state_dict(), meta={"note": "battery"})
    results = root / "results"
    write_record(results, _eval_record())
    return Kit(root, voc, cityscapes, weights, results)


# ----------------------------------------------------------------------------- building blocks


@dataclass
class Case:
    argv: List[str]
    culprit: str  # must appear in the error line
    outputs: List[Path] = field(default_factory=list)  # must not exist afterwards
    subprocess: bool = False
    after: Callable[[], None] = lambda: None  # further checks (e.g. no pickle payload ran)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _voc_with(kit: Kit, tmp: Path, folder: str, name: str) -> Tuple[Path, Path]:
    """A copy of the VOC set, and the path of one of its files (to break)."""
    voc = _copy(kit.voc, tmp / "voc")
    return voc, voc / folder / name


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def _recipe_file(tmp: Path, body: str) -> Path:
    return _write(tmp / "recipe.yaml", f"_base_: {REPO_ROOT / 'recipes' / f'{ROW}.yaml'}\n{body}")


def _resize_label(path: Path, size_wh: Tuple[int, int]) -> None:
    with Image.open(path) as im:
        im.resize(size_wh, Image.NEAREST).save(path)


def _no_payload_ran(marker: Path) -> Callable[[], None]:
    def check() -> None:
        assert not marker.exists(), "the checkpoint's pickle ran code"
    return check


def _evil_zip(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": Evil(marker)}, path)
    return path


def _evil_raw(path: Path, marker: Path) -> Path:
    return _write(path, pickle.dumps(Evil(marker), protocol=2))  # the pre-1.6 torch format: a bare pickle


def _eval(kit: Kit, tmp: Path, *extra: str, data_root: Path = None, checkpoint: Path = None,
          recipe: str = ROW) -> List[str]:
    out = tmp / "metrics.json"
    return ["eval", recipe, *SMOKE, "--checkpoint", str(checkpoint or kit.weights),
            "--data-root", str(data_root or kit.voc), "--json", str(out), *extra]


def _predict(kit: Kit, tmp: Path, *extra: str, image: Path = None, checkpoint: Path = None,
             recipe: str = ROW) -> List[str]:
    image = image or kit.voc / "JPEGImages" / f"{VAL}.jpg"
    return ["predict", recipe, *SMOKE, "--checkpoint", str(checkpoint or kit.weights), "--image", str(image),
            "--out", str(tmp / "pred.png"), "--logits", str(tmp / "logits.npy"), *extra]


def _bench(kit: Kit, tmp: Path, *extra: str, data_root: Path = None, checkpoint: Path = None,
           recipe: str = ROW) -> List[str]:
    return ["bench", recipe, *SMOKE, "--checkpoint", str(checkpoint or kit.weights), "--skip-mem",
            "--data-root", str(data_root or kit.voc), "--json", str(tmp / "bench.json"), *extra]


def _train(kit: Kit, tmp: Path, *extra: str, data_root: Path = None, recipe: str = ROW,
           work: Path = None) -> List[str]:
    return ["train", recipe, *SMOKE, "--work-dir", str(work or tmp / "work"), "--data-root",
            str(data_root or kit.voc), "--set", "schedule.max_iters=2", "--set", "data.synthetic=null", *extra]


def _eval_outputs(tmp: Path) -> List[Path]:
    return [tmp / "metrics.json"]


def _predict_outputs(tmp: Path) -> List[Path]:
    return [tmp / "pred.png", tmp / "logits.npy"]


def _train_outputs(tmp: Path) -> List[Path]:
    return [tmp / "work" / "iter_2.pth", tmp / "work" / "iter_1.pth"]


def _results_with(kit: Kit, tmp: Path, name: str, text: str) -> Path:
    """A results folder whose only record is ``text``."""
    results = tmp / "results"
    _write(results / "records" / ROW / "smoke" / "seed0" / name, text)
    return results


def _reference(tmp: Path, rows: str, header: str = None) -> Path:
    header = header or "recipe,dataset,method,backbone,crop_size,lr_schd,mem_gb,fps,miou,miou_ms_flip,profile,device"
    return _write(tmp / "reference.csv", f"{header}\n{rows}")


REF_ROW = f"{ROW},Pascal VOC 2012 + Aug,NonLocal,R-50-D8,512x512,20000,,,40.0,,smoke,cpu"


def _training_state(meta_hash: str) -> Dict:
    return {"meta": {"recipe_hash": meta_hash}, "state_dict": {"w": torch.zeros(1)},
            "optimizer": {"state": {}, "param_groups": []}, "iteration": 1}


# ----------------------------------------------------------------------------- the cases
# Each builder gets the kit and the case's own folder and returns the Case. The id says what is
# broken and which command reads it.


def recipe_missing_file__train(kit, tmp):
    return Case(_train(kit, tmp)[:1] + [str(tmp / "nowhere.yaml")] + _train(kit, tmp)[2:], str(tmp / "nowhere.yaml"),
                _train_outputs(tmp))


def recipe_invalid_yaml__eval(kit, tmp):
    bad = _write(tmp / "bad.yaml", "schedule: [1, 2\n")
    return Case(_eval(kit, tmp, recipe=str(bad)), str(bad), _eval_outputs(tmp))


def recipe_unknown_key__bench(kit, tmp):
    bad = _recipe_file(tmp, "schedule: {max_iterz: 3}\n")
    return Case(_bench(kit, tmp, recipe=str(bad)), "schedule.max_iterz", [tmp / "bench.json"])


def recipe_missing_base__predict(kit, tmp):
    bad = _write(tmp / "child.yaml", "_base_: ./parent_that_is_not_there.yaml\n")
    return Case(_predict(kit, tmp, recipe=str(bad)), "parent_that_is_not_there.yaml", _predict_outputs(tmp))


def recipe_not_utf8__eval_ms_flip(kit, tmp):
    bad = _write(tmp / "binary.yaml", b"\xff\xfe\x00model: {}")
    return Case(_eval(kit, tmp, "--ms-flip", recipe=str(bad)), str(bad), _eval_outputs(tmp))


def recipe_unknown_profile__train(kit, tmp):
    argv = _train(kit, tmp)
    argv[argv.index("smoke")] = "tiny"
    return Case(argv, "'tiny'", _train_outputs(tmp))


def recipe_not_a_mapping__bench(kit, tmp):
    bad = _write(tmp / "list.yaml", "- model\n- data\n")
    return Case(_bench(kit, tmp, recipe=str(bad)), str(bad), [tmp / "bench.json"])


def override_without_equals__train(kit, tmp):
    return Case(_train(kit, tmp, "--set", "schedule.lr"), "schedule.lr", _train_outputs(tmp))


def override_unknown_key__eval(kit, tmp):
    return Case(_eval(kit, tmp, "--set", "test.mod=whole"), "test.mod", _eval_outputs(tmp))


def override_wrong_type__bench(kit, tmp):
    return Case(_bench(kit, tmp, "--set", "bench.total_images=abc"), "bench.total_images", [tmp / "bench.json"])


def override_empty_ms_flip_ratios__eval_ms_flip(kit, tmp):
    return Case(_eval(kit, tmp, "--ms-flip", "--set", "test.ms_flip_ratios=[]"), "test.ms_flip_ratios",
                _eval_outputs(tmp))


def override_zero_crop__train(kit, tmp):
    return Case(_train(kit, tmp, "--set", "data.crop_size=[0,0]"), "data.crop_size", _train_outputs(tmp))


def override_bad_test_mode__predict(kit, tmp):
    return Case(_predict(kit, tmp, "--set", "test.mode=diagonal"), "test.mode", _predict_outputs(tmp))


def override_into_a_number__eval(kit, tmp):
    return Case(_eval(kit, tmp, "--set", "schedule.lr.value=1"), "schedule.lr", _eval_outputs(tmp))


def checkpoint_missing__eval(kit, tmp):
    return Case(_eval(kit, tmp, checkpoint=tmp / "none.pth"), str(tmp / "none.pth"), _eval_outputs(tmp))


def checkpoint_is_a_folder__eval_ms_flip(kit, tmp):
    (tmp / "folder.pth").mkdir()
    return Case(_eval(kit, tmp, "--ms-flip", checkpoint=tmp / "folder.pth"), str(tmp / "folder.pth"),
                _eval_outputs(tmp))


def checkpoint_is_text__bench(kit, tmp):
    bad = _write(tmp / "notes.pth", "these are not weights\n")
    return Case(_bench(kit, tmp, checkpoint=bad), str(bad), [tmp / "bench.json"])


def checkpoint_truncated__predict(kit, tmp):
    whole = tmp / "whole.pth"
    save_checkpoint(whole, {"w": torch.arange(4096.0)})
    bad = _write(tmp / "truncated.pth", whole.read_bytes()[: whole.stat().st_size // 2])
    return Case(_predict(kit, tmp, checkpoint=bad), str(bad), _predict_outputs(tmp))


def checkpoint_unsafe_pickle_zip__eval(kit, tmp):
    marker = tmp / "pwned"
    bad = _evil_zip(tmp / "evil.pth", marker)
    return Case(_eval(kit, tmp, checkpoint=bad), str(bad), _eval_outputs(tmp), after=_no_payload_ran(marker))


def checkpoint_unsafe_pickle_raw__predict(kit, tmp):
    marker = tmp / "pwned"
    bad = _evil_raw(tmp / "evil.pth", marker)
    return Case(_predict(kit, tmp, checkpoint=bad), str(bad), _predict_outputs(tmp), after=_no_payload_ran(marker))


def checkpoint_unsafe_pickle__bench_subprocess(kit, tmp):
    marker = tmp / "pwned"
    bad = _evil_zip(tmp / "evil.pth", marker)
    return Case(_bench(kit, tmp, checkpoint=bad), str(bad), [tmp / "bench.json"], subprocess=True,
                after=_no_payload_ran(marker))


def checkpoint_of_another_model__eval(kit, tmp):
    bad = save_checkpoint(tmp / "other.pth", {"classifier.weight": torch.zeros(3, 3)})
    return Case(_eval(kit, tmp, checkpoint=bad), str(bad), _eval_outputs(tmp))


def checkpoint_holding_non_tensors__eval_ms_flip(kit, tmp):
    bad = tmp / "numbers.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": 1.0}}, bad)
    return Case(_eval(kit, tmp, "--ms-flip", checkpoint=bad), str(bad), _eval_outputs(tmp))


def checkpoint_wrong_shapes__predict(kit, tmp):
    state = torch.load(kit.weights, weights_only=True)
    key = next(k for k in state["state_dict"] if k.endswith("conv_seg.weight"))
    state["state_dict"][key] = state["state_dict"][key][:3]  # 3 classes instead of 21
    bad = tmp / "three_classes.pth"
    torch.save(state, bad)
    return Case(_predict(kit, tmp, checkpoint=bad), str(bad), _predict_outputs(tmp))


def checkpoint_pretrained_missing__train(kit, tmp):
    return Case(_train(kit, tmp, "--set", f"model.pretrained={tmp / 'resnet18.pth'}"), str(tmp / "resnet18.pth"),
                _train_outputs(tmp))


def checkpoint_pretrained_of_another_network__train(kit, tmp):
    bad = save_checkpoint(tmp / "not_a_resnet.pth", {"features.0.weight": torch.zeros(4, 3, 3, 3)})
    return Case(_train(kit, tmp, "--set", f"model.pretrained={bad}"), str(bad), _train_outputs(tmp))


def resume_latest_unreadable__train(kit, tmp):
    _write(tmp / "work" / "latest.pth", b"PK\x03\x04" + b"\x00" * 64)
    return Case(_train(kit, tmp, "--resume"), str(tmp / "work" / "latest.pth"), _train_outputs(tmp))


def resume_latest_not_a_training_checkpoint__train(kit, tmp):
    (tmp / "work").mkdir()
    os.link(kit.weights, tmp / "work" / "latest.pth")  # weights only: no optimizer, no iteration
    return Case(_train(kit, tmp, "--resume"), str(tmp / "work" / "latest.pth"), _train_outputs(tmp))


def resume_latest_corrupt_and_no_intact_iter__train(kit, tmp):
    work = tmp / "work"
    torch.save(_training_state("0" * 64), _write(work / "iter_1.pth", b""))
    os.link(work / "iter_1.pth", work / "latest.pth")
    _write(work / "checkpoints.sha256", f"{hashlib.sha256(b'what was written').hexdigest()}  iter_1.pth\n")
    return Case(_train(kit, tmp, "--resume"), str(work / "latest.pth"), [work / "iter_2.pth"])


def resume_latest_is_a_folder__train(kit, tmp):
    (tmp / "work" / "latest.pth").mkdir(parents=True)
    return Case(_train(kit, tmp, "--resume"), str(tmp / "work" / "latest.pth"), _train_outputs(tmp))


def image_missing__predict(kit, tmp):
    return Case(_predict(kit, tmp, image=tmp / "none.jpg"), str(tmp / "none.jpg"), _predict_outputs(tmp))


def image_garbage__predict(kit, tmp):
    bad = _write(tmp / "photo.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    return Case(_predict(kit, tmp, image=bad), str(bad), _predict_outputs(tmp))


def image_empty__predict(kit, tmp):
    bad = _write(tmp / "empty.png", b"")
    return Case(_predict(kit, tmp, image=bad), str(bad), _predict_outputs(tmp))


def prediction_out_is_a_folder__predict(kit, tmp):
    (tmp / "pred.png").mkdir()
    argv = _predict(kit, tmp)
    return Case(argv, str(tmp / "pred.png"), [tmp / "logits.npy"])


def prediction_logits_under_a_file__predict(kit, tmp):
    _write(tmp / "afile", "x")
    argv = _predict(kit, tmp)
    argv[argv.index("--logits") + 1] = str(tmp / "afile" / "logits.npy")
    return Case(argv, str(tmp / "afile" / "logits.npy"), [tmp / "pred.png"])


def _broken_voc_file(folder: str, name: str, breaks: Callable[[Path], None], command: str, *extra: str):
    """A case: one file of a copy of the VOC set broken by ``breaks``, read by ``command``."""
    build, outputs = {"eval": (_eval, _eval_outputs), "bench": (_bench, lambda tmp: [tmp / "bench.json"]),
                      "train": (_train, _train_outputs)}[command]

    def case(kit, tmp):
        voc, path = _voc_with(kit, tmp, folder, name)
        breaks(path)
        return Case(build(kit, tmp, *extra, data_root=voc), str(path), outputs(tmp))
    return case


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n broken" if path.suffix == ".png" else b"garbage")


def _resized_to(size_wh: Tuple[int, int]) -> Callable[[Path], None]:
    return lambda path: _resize_label(path, size_wh)


def _filled_with(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(array).save(path)


val_image_corrupt__eval = _broken_voc_file("JPEGImages", f"{VAL}.jpg", _garbage, "eval")
val_image_corrupt__bench = _broken_voc_file("JPEGImages", f"{VAL}.jpg", _garbage, "bench")
val_image_corrupt__eval_ms_flip = _broken_voc_file("JPEGImages", f"{VAL}.jpg", _garbage, "eval", "--ms-flip")
val_image_missing__eval_ms_flip = _broken_voc_file("JPEGImages", f"{VAL}.jpg", lambda path: path.unlink(), "eval",
                                                   "--ms-flip")
train_image_corrupt__train = _broken_voc_file("JPEGImages", f"{TRAIN}.jpg", _garbage, "train")
label_size_differs__eval = _broken_voc_file("SegmentationClass", f"{VAL}.png", _resized_to((20, 16)), "eval")
label_size_differs__eval_ms_flip = _broken_voc_file("SegmentationClass", f"{VAL}.png", _resized_to((40, 33)), "eval",
                                                    "--ms-flip")
label_size_differs__train = _broken_voc_file("SegmentationClass", f"{TRAIN}.png", _resized_to((41, 32)), "train")
label_corrupt__eval = _broken_voc_file("SegmentationClass", f"{VAL}.png", _garbage, "eval")
label_values_out_of_range__eval_ms_flip = _broken_voc_file(  # 50: beyond VOC's 21 classes, not 255
    "SegmentationClass", f"{VAL}.png", _filled_with(np.full((32, 40), 50, np.uint8)), "eval", "--ms-flip")
label_in_colour__eval = _broken_voc_file("SegmentationClass", f"{VAL}.png",
                                         _filled_with(np.zeros((32, 40, 3), np.uint8)), "eval")


def data_root_missing__train(kit, tmp):
    return Case(_train(kit, tmp, data_root=tmp / "nowhere"), str(tmp / "nowhere"), _train_outputs(tmp))


def split_names_a_missing_image__eval(kit, tmp):
    voc = _copy(kit.voc, tmp / "voc")
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text(split.read_text() + "2099_000000\n")
    return Case(_eval(kit, tmp, data_root=voc), str(split), _eval_outputs(tmp))


def split_file_missing__train(kit, tmp):
    voc = _copy(kit.voc, tmp / "voc")
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    split.unlink()
    return Case(_train(kit, tmp, data_root=voc), str(split), _train_outputs(tmp))


def cityscapes_label_missing__eval(kit, tmp):
    cs = _copy(kit.cityscapes, tmp / "cityscapes")
    label = next((cs / "gtFine" / "val").rglob("*_gtFine_labelTrainIds.png"))
    label.unlink()
    argv = ["eval", CS_ROW, *SMOKE, "--checkpoint", str(kit.weights), "--data-root", str(cs),
            "--json", str(tmp / "metrics.json")]
    return Case(argv, str(label), _eval_outputs(tmp))


def work_dir_is_a_file__train(kit, tmp):
    work = _write(tmp / "work", "a file\n")
    return Case(_train(kit, tmp, work=work), str(work), [])


def work_dir_is_a_file__train_subprocess(kit, tmp):
    work = _write(tmp / "work", "a file\n")
    return Case(_train(kit, tmp, work=work), str(work), [], subprocess=True)


def work_dir_under_a_file__train(kit, tmp):
    _write(tmp / "afile", "x")
    return Case(_train(kit, tmp, work=tmp / "afile" / "work"), str(tmp / "afile" / "work"), [])


def work_dir_of_another_recipe__train(kit, tmp):
    torch.save(_training_state("f" * 64), _write(tmp / "work" / "latest.pth", b""))
    return Case(_train(kit, tmp, "--resume"), str(tmp / "work" / "latest.pth"), _train_outputs(tmp))


def results_is_a_file__run_all(kit, tmp):
    results = _write(tmp / "results", "not a folder\n")
    argv = ["run-all", "--profile", "smoke", "--filter", ROW, "--results", str(results)]
    return Case(argv, str(results), [])


def results_without_records__collect(kit, tmp):
    (tmp / "results").mkdir()
    return Case(["collect", "--results", str(tmp / "results")], str(tmp / "results"), [tmp / "results" / "summary.csv"])


def results_tables_md_is_a_folder__tables(kit, tmp):
    results = _copy(kit.results, tmp / "results")
    (results / "tables.md").mkdir()
    readme = _write(tmp / "README.md", "# x\n")
    return Case(["tables", "--results", str(results), "--readme", str(readme)], str(results / "tables.md"), [])


def results_summary_under_a_file__collect(kit, tmp):
    _write(tmp / "afile", "x")
    out = tmp / "afile" / "summary.csv"
    return Case(["collect", "--results", str(kit.results), "--out", str(out)], str(out), [])


def results_without_runs__status(kit, tmp):
    return Case(["status", "--results", str(kit.results)], str(kit.results), [])


def results_corrupt_run_file__status(kit, tmp):
    broken = _write(tmp / "results" / "jobs" / "runs" / "20260101T000000Z-abcdef.json", '{"jobs": [')
    return Case(["status", "--results", str(tmp / "results")], str(broken), [])


def _run_all_slurm(profile: Path) -> List[str]:
    return ["run-all", "--launcher", "slurm", "--cluster", str(profile), "--profile", "smoke", "--filter", ROW,
            "--dry-run"]


def cluster_profile_missing__run_all(kit, tmp):
    return Case(_run_all_slurm(tmp / "none.yaml"), str(tmp / "none.yaml"), [])


def cluster_profile_unknown_key__run_all_subprocess(kit, tmp):
    profile = _write(tmp / "cluster.yaml", "partitoin: gpu\n")
    return Case(_run_all_slurm(profile), "partitoin", [], subprocess=True)


def cluster_profile_bad_value__run_all(kit, tmp):
    profile = _write(tmp / "cluster.yaml", "gpus_per_node: -1\n")
    return Case(_run_all_slurm(profile), "gpus_per_node", [])


def cluster_profile_invalid_yaml__run_all(kit, tmp):
    profile = _write(tmp / "cluster.yaml", "partition: [gpu\n")
    return Case(_run_all_slurm(profile), str(profile), [])


def cluster_profile_with_the_local_launcher__run_all(kit, tmp):
    argv = ["run-all", "--cluster", str(REPO_ROOT / "slurm" / "example.yaml"), "--profile", "smoke", "--filter", ROW,
            "--results", str(tmp / "results")]
    return Case(argv, "--cluster", [tmp / "results"])


def record_truncated__collect(kit, tmp):
    text = json.dumps({"schema": "nlbench.record/1", **_eval_record(), "created_at": "2026-01-01T00:00:00+00:00"})
    results = _results_with(kit, tmp, "eval-20260101T000000000000Z-00000000.json", text[: len(text) // 2])
    return Case(["collect", "--results", str(results)], "eval-20260101T000000000000Z-00000000.json",
                [results / "summary.csv"])


def record_of_another_schema__compare(kit, tmp):
    results = _results_with(kit, tmp, "eval-x.json", json.dumps({"schema": "someone-else/2", "kind": "eval"}))
    return Case(["compare", "--results", str(results), "--report", str(tmp / "report.md")], "eval-x.json",
                [tmp / "report.md"])


def record_of_an_unknown_recipe__tables(kit, tmp):
    from benchmark.run.records import write_record

    results = tmp / "results"
    path = write_record(results, _eval_record("nonlocal_r9-d8_unknown"))
    readme = _write(tmp / "README.md", "# x\n")
    return Case(["tables", "--results", str(results), "--readme", str(readme)], path.name, [results / "tables.md"])


def record_with_a_bad_field__plots(kit, tmp):
    created = "2026-01-01T00:00:00+00:00"
    text = json.dumps({"schema": "nlbench.record/1", **_eval_record(seed=-1), "created_at": created})
    results = _results_with(kit, tmp, "eval-neg.json", text)
    return Case(["plots", "--results", str(results), "--out", str(tmp / "plots")], "eval-neg.json", [tmp / "plots"])


def reference_missing__compare_subprocess(kit, tmp):
    return Case(["compare", "--results", str(kit.results), "--reference", str(tmp / "none.csv")],
                str(tmp / "none.csv"), [], subprocess=True)


def reference_missing_columns__compare(kit, tmp):
    ref = _reference(tmp, f"{ROW},40.0\n", header="recipe,miou")
    return Case(["compare", "--results", str(kit.results), "--reference", str(ref)], str(ref), [])


def reference_not_a_number__compare(kit, tmp):
    ref = _reference(tmp, REF_ROW.replace(",40.0,", ",forty,") + "\n")
    return Case(["compare", "--results", str(kit.results), "--reference", str(ref),
                 "--junit", str(tmp / "junit.xml")], "miou", [tmp / "junit.xml"])


def reference_two_devices__compare(kit, tmp):
    ref = _reference(tmp, REF_ROW + "\n" + REF_ROW.replace(ROW, ROW.replace("20k", "40k")).replace(",cpu", ",V100")
                     + "\n")
    return Case(["compare", "--results", str(kit.results), "--reference", str(ref)], "device", [])


def data_root_missing__bench(kit, tmp):  # asked for: not silently replaced by random images
    return Case(["bench", ROW, "--profile", "smoke", "--data-root", str(tmp / "no-such-root"),
                 "--json", str(tmp / "bench.json")], str(tmp / "no-such-root"), [tmp / "bench.json"])


def option_not_a_number__compare(kit, tmp):  # argparse's float() takes "nan": it must not open the gate
    return Case(["compare", "--results", str(kit.results), "--tolerance", "nan", "--report", str(tmp / "report.md")],
                "--tolerance", [tmp / "report.md"])


def option_zero_parallel__run_all(kit, tmp):  # refused before the results folder is touched
    return Case(["run-all", "--profile", "smoke", "--filter", ROW, "--results", str(tmp / "results"),
                 "--parallel", "0"], "--parallel", [tmp / "results"])


def report_out_is_a_file__report(kit, tmp):
    out = _write(tmp / "afile", "x")
    return Case(["report", "--results", str(kit.results), "--out", str(out)], f"{out}: --out: expected a folder")


def option_infinite__compare(kit, tmp):
    return Case(["compare", "--results", str(kit.results), "--method", "ci", "--assumed-std", "inf"], "--assumed-std")


CASES = {name: fn for name, fn in dict(globals()).items() if "__" in name and callable(fn) and not name.startswith("_")}


def test_the_battery_has_forty_cases_or_more_over_every_category_and_stage():
    assert len(CASES) >= 40
    assert {name.split("__")[0].split("_")[0] for name in CASES} >= {
        "recipe", "override", "checkpoint", "image", "label", "work", "results", "cluster", "record", "reference"}
    stages = {name.split("__")[1].replace("_subprocess", "") for name in CASES}
    assert stages >= {"train", "eval", "eval_ms_flip", "bench", "predict"}


# ----------------------------------------------------------------------------- running a case


def _snapshot(folder: Path) -> Dict[Path, tuple]:
    """Every file under ``folder`` -> what must be unchanged after a failed command: inode, size and
    modification time, and the sha256 of files under 1 MiB."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 20 else None
            out[path] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
    return out


def _run(case: Case, cwd: Path, capsys) -> Tuple[int, str]:
    if case.subprocess:
        proc = run_cli(*case.argv, cwd=cwd)
        return proc.returncode, proc.stderr
    capsys.readouterr()
    code = cli_main(case.argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_input_is_one_clear_line_and_exit_2(name, kit, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative defaults (work_dirs/, data/) land in the case's folder
    case = CASES[name](kit, tmp_path)
    before = {**_snapshot(tmp_path), **_snapshot(kit.root)}
    code, err = _run(case, tmp_path, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error: " in lines[0], err
    assert case.culprit in lines[0], (case.culprit, lines[0])
    # Nothing half-written: no temporary file anywhere, no output, every old file as it was.
    assert not [p for p in list(tmp_path.rglob("*")) + list(kit.root.rglob("*")) if ".tmp" in p.name]
    assert [p for p in case.outputs if p.exists()] == []
    after = {**_snapshot(tmp_path), **_snapshot(kit.root)}
    assert {p: h for p, h in after.items() if p in before} == before
    case.after()


def test_the_unsafe_pickles_are_live(tmp_path):
    """The battery's pickles really run code when unpickled without weights_only, so the cases that
    load them through nlbench prove that nlbench does not."""
    raw_marker, zip_marker = tmp_path / "raw", tmp_path / "zip"
    pickle.loads(_evil_raw(tmp_path / "raw.pth", raw_marker).read_bytes())
    torch.load(_evil_zip(tmp_path / "zip.pth", zip_marker), weights_only=False)
    assert raw_marker.exists() and zip_marker.exists()
