"""Readers, synthetic sets, preparation and bad input, on data in the real on-disk layouts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image, ImageDraw

from benchmark.data.classes import CLASS_NAMES, PALETTES
from benchmark.data.layouts import build_dataset
from benchmark.data.prepare import aug_lists, prepare_cityscapes, prepare_voc
from benchmark.data.synthetic import ensure_dataset, voc_colormap, write_synthetic
from benchmark.errors import NLBenchError
from benchmark.recipe import load_recipe

RECIPES = {
    "cityscapes": "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024",
    "ade20k": "nonlocal_r50-d8_4xb4-80k_ade20k-512x512",
    "voc": "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512",
}


def data_cfg(dataset: str):
    return load_recipe(RECIPES[dataset]).data


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    """One set per dataset, written by the CLI."""
    base = tmp_path_factory.mktemp("synth")
    roots = {}
    for dataset in ("cityscapes", "ade20k", "voc"):
        root = base / dataset
        proc = run_cli("synth", dataset, "--out", str(root), "--train", "4", "--val", "2", "--size", "40x56",
                       "--seed", "3")
        assert proc.returncode == 0, proc.stderr
        assert str(root) in proc.stdout
        roots[dataset] = root
    return roots


def copy_of(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / root.name
    shutil.copytree(root, dst)
    return dst


# ----------------------------------------------------------------------------- classes


def test_class_tables_match_mmseg_sizes_and_known_entries():
    assert {k: len(v) for k, v in CLASS_NAMES.items()} == {"cityscapes": 19, "ade20k": 150, "voc12aug": 21}
    assert all(len(PALETTES[k]) == len(CLASS_NAMES[k]) for k in CLASS_NAMES)
    assert CLASS_NAMES["cityscapes"][13] == "car" and PALETTES["cityscapes"][13] == (0, 0, 142)
    assert CLASS_NAMES["ade20k"][7] == "bed " and CLASS_NAMES["ade20k"][149] == "flag"
    # VOC's palette is the standard bit-interleaved PNG colormap.
    flat = [c for rgb in PALETTES["voc12aug"] for c in rgb]
    assert voc_colormap()[: len(flat)] == flat


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k", "voc"])
def test_readers_on_synthetic_sets(synth, dataset):
    cfg = data_cfg(dataset)
    train = build_dataset(cfg, "train", synth[dataset])
    val = build_dataset(cfg, "val", synth[dataset])
    assert (len(train), len(val)) == (4, 2)
    assert train.check() == 4 and val.check() == 2
    for ds in (train, val):
        for i in range(len(ds)):
            image, label = ds.read_sample(i)
            assert image.dtype == np.uint8 and image.shape == (40, 56, 3)
            assert label.dtype == np.uint8 and label.shape == (40, 56)
            ok = (label < ds.num_classes) | (label == 255)
            assert ok.all()
    assert len(set(train.name(i) for i in range(4)) | set(val.name(i) for i in range(2))) == 6


def test_labels_are_learnable_from_pixels(synth):
    """A nearest-class-colour rule fitted on the train split labels most val pixels correctly."""
    cfg = data_cfg("voc")
    train, val = build_dataset(cfg, "train", synth["voc"]), build_dataset(cfg, "val", synth["voc"])
    sums, counts = {}, {}
    for i in range(len(train)):
        image, label = train.read_sample(i)
        for c in np.unique(label[label != 255]):
            m = label == c
            sums[c] = sums.get(c, 0) + image[m].astype(np.float64).sum(0)
            counts[c] = counts.get(c, 0) + m.sum()
    classes = sorted(sums)
    means = np.stack([sums[c] / counts[c] for c in classes])
    correct = total = 0
    for i in range(len(val)):
        image, label = val.read_sample(i)
        d = ((image.astype(np.float64)[:, :, None, :] - means[None, None]) ** 2).sum(-1)
        pred = np.array(classes)[d.argmin(-1)]
        keep = np.isin(label, classes)
        correct += (pred[keep] == label[keep]).sum()
        total += keep.sum()
    assert correct / total > 0.8


def test_cityscapes_lists_all_cities_sorted(synth):
    ds = build_dataset(data_cfg("cityscapes"), "train", synth["cityscapes"])
    names = [ds.name(i) for i in range(len(ds))]
    assert names == sorted(names)
    assert {n.split("/")[0] for n in names} == {"aachen", "bochum", "bremen"}
    assert ds.samples[0].label.name.endswith("_gtFine_labelTrainIds.png")


def test_ade20k_reduce_zero_label(synth):
    ds = build_dataset(data_cfg("ade20k"), "train", synth["ade20k"])
    for i in range(len(ds)):
        raw = np.array(Image.open(ds.samples[i].label))
        reduced = ds.read_label(i)
        assert np.array_equal(reduced[raw == 0], np.full((raw == 0).sum(), 255, np.uint8))
        assert np.array_equal(reduced[raw > 0], raw[raw > 0] - 1)
    # 255 stays 255 (MMSeg: 255 - 1 = 254 is mapped back to 255).
    from benchmark.data.layouts import reduce_zero_label
    assert reduce_zero_label(np.array([[0, 1, 150, 255]], np.uint8)).tolist() == [[255, 0, 149, 255]]


def test_voc_splits_palette_pngs_and_aug(synth):
    root = synth["voc"]
    train = build_dataset(data_cfg("voc"), "train", root)
    txt = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    aug = (root / "ImageSets/Segmentation/aug.txt").read_text().split()
    assert [train.name(i) for i in range(len(train))] == txt + aug
    assert {s.label.parent.name for s in train.samples[: len(txt)]} == {"SegmentationClass"}
    assert {s.label.parent.name for s in train.samples[len(txt):]} == {"SegmentationClassAug"}
    with Image.open(train.samples[0].label) as im:
        assert im.mode == "P"  # a palette PNG: the reader must return indices, not colours
        indices = np.array(im)
    assert np.array_equal(train.read_label(0), indices)
    assert 255 in indices and indices.max() <= 255 and set(np.unique(indices)) - {255} <= set(range(21))


def test_synthetic_sets_are_deterministic(tmp_path):
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    a = write_synthetic("ade20k", tmp_path / "a", 2, 1, (24, 32), seed=5)
    b = write_synthetic("ade20k", tmp_path / "b", 2, 1, (24, 32), seed=5)
    c = write_synthetic("ade20k", tmp_path / "c", 2, 1, (24, 32), seed=6)
    assert digest(a) == digest(b) != digest(c)


def test_ensure_dataset_writes_missing_synthetic_root_once(tmp_path):
    cfg = load_recipe(RECIPES["voc"], profile="smoke",
                      overrides=[f"data.data_root={tmp_path / 'voc'}", "data.synthetic.train=2",
                                 "data.synthetic.val=1"]).data
    root = ensure_dataset(cfg)
    assert len(build_dataset(cfg, "train", root)) == 2
    marker = root / "marker"
    marker.write_text("x")
    assert ensure_dataset(cfg) == root and marker.exists()  # present: left alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    full = load_recipe(RECIPES["voc"]).data  # no data.synthetic: a missing root stays missing
    assert ensure_dataset(full, tmp_path / "nothing") == tmp_path / "nothing"
    assert not (tmp_path / "nothing").exists()


def test_a_synthetic_set_from_other_parameters_or_an_older_renderer_is_refused(tmp_path):
    over = [f"data.data_root={tmp_path / 'voc'}", "data.synthetic.train=2", "data.synthetic.val=1"]
    root = ensure_dataset(load_recipe(RECIPES["voc"], profile="smoke", overrides=over).data)
    stamp = json.loads((root / "synthetic.json").read_text())
    assert stamp == {"dataset": "voc", "train": 2, "val": 1, "size": [128, 160], "seed": 0, "renderer": 2}
    other_seed = load_recipe(RECIPES["voc"], profile="smoke", overrides=over + ["data.synthetic.seed=3"]).data
    with pytest.raises(NLBenchError, match="other parameters") as err:
        ensure_dataset(other_seed)
    assert str(root) in str(err.value) and "data.synthetic" in str(err.value)
    assert ensure_dataset(other_seed, root) == root  # named with --data-root: any set of this renderer
    (root / "synthetic.json").write_text(json.dumps(dict(stamp, renderer=1)))  # as an older nlbench wrote it
    for root_given in (None, root):
        with pytest.raises(NLBenchError, match="by another nlbench .renderer 1, expected 2.; remove the folder"):
            ensure_dataset(load_recipe(RECIPES["voc"], profile="smoke", overrides=over).data, root_given)
    (root / "synthetic.json").unlink()  # no stamp: a real dataset, say; used as it is
    assert ensure_dataset(other_seed) == root


def test_ensure_dataset_is_safe_when_writers_race(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cfg = load_recipe(RECIPES["ade20k"], profile="smoke",
                      overrides=[f"data.data_root={tmp_path / 'ade'}", "data.synthetic.train=3",
                                 "data.synthetic.val=1"]).data
    with ThreadPoolExecutor(3) as pool:
        roots = list(pool.map(lambda _: ensure_dataset(cfg), range(3)))
    assert roots == [tmp_path / "ade"] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["ade"]  # the losers' temporary copies are gone
    assert build_dataset(cfg, "train", roots[0]).check() == 3


# ----------------------------------------------------------------------------- prepare


def expected_train_ids(json_path: Path) -> np.ndarray:
    """Polygons drawn in file order with the trainIds of cityscapesscripts' own label table."""
    from cityscapesscripts.helpers.labels import name2label

    doc = json.loads(json_path.read_text())
    im = Image.new("L", (doc["imgWidth"], doc["imgHeight"]), name2label["unlabeled"].trainId)
    draw = ImageDraw.Draw(im)
    for obj in doc["objects"]:
        name = obj["label"]
        if name not in name2label and name.endswith("group"):
            name = name[: -len("group")]
        if name2label[name].id < 0:
            continue
        draw.polygon([tuple(p) for p in obj["polygon"]], fill=name2label[name].trainId)
    return np.array(im)


def test_prepare_cityscapes_gives_the_label_tables_train_ids(synth, tmp_path):
    root = copy_of(synth["cityscapes"], tmp_path)
    made = sorted(root.rglob("*_gtFine_labelTrainIds.png"))
    for p in made:
        p.unlink()
    proc = run_cli("prepare", "cityscapes", "--src", str(root))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {len(made)}" in proc.stdout and "skipped 0" in proc.stdout
    seen = set()
    for json_path in sorted(root.rglob("*_gtFine_polygons.json")):
        out = Path(str(json_path).replace("_gtFine_polygons.json", "_gtFine_labelTrainIds.png"))
        label = np.array(Image.open(out))
        assert np.array_equal(label, expected_train_ids(json_path))
        seen |= set(np.unique(label).tolist())
        assert (label[-1] == 255).all()  # the "ego vehicle" band: trainId 255
    assert {0, 10, 255} <= seen and seen & {2, 8, 11, 13}  # road, sky, ignore, and some objects
    # Idempotent: a second run writes nothing.
    again = run_cli("prepare", "cityscapes", "--src", str(root))
    assert again.returncode == 0 and "wrote 0" in again.stdout and f"skipped {len(made)}" in again.stdout
    # --dst writes the same files under another root.
    prepare_cityscapes(root, tmp_path / "dst", log=lambda _: None)
    for p in made:
        twin = tmp_path / "dst" / p.relative_to(root)
        assert np.array_equal(np.array(Image.open(twin)), np.array(Image.open(p)))


def test_prepare_cityscapes_unknown_label_is_a_clear_error(synth, tmp_path):
    root = copy_of(synth["cityscapes"], tmp_path)
    json_path = sorted(root.rglob("*_gtFine_polygons.json"))[0]
    doc = json.loads(json_path.read_text())
    doc["objects"][1]["label"] = "spaceship"
    json_path.write_text(json.dumps(doc))
    proc = run_cli("prepare", "cityscapes", "--src", str(root))
    assert proc.returncode == 2
    assert str(json_path) in proc.stderr and "objects[1].label" in proc.stderr and "spaceship" in proc.stderr
    assert "Traceback" not in proc.stderr


def _sbd_mat(path: Path, seg: np.ndarray) -> None:
    from scipy.io import savemat

    # SBD's cls/*.mat: a MATLAB struct GTcls with Boundaries, Segmentation, CategoriesPresent.
    cats = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    savemat(str(path), {"GTcls": {"Boundaries": np.zeros((20, 1), dtype=object), "Segmentation": seg,
                                  "CategoriesPresent": cats}})


def _voc_and_sbd_trees(tmp_path: Path, voc_train, voc_val, sbd_dataset: Path, sbd_train, sbd_val):
    """A VOCdevkit with the two split files, and SBD's dataset folder with cls/ and its split files."""
    voc = tmp_path / "VOCdevkit"
    sets = voc / "VOC2012" / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for folder, name, names in ((sets, "train.txt", voc_train), (sets, "val.txt", voc_val),
                                (sbd_dataset, "train.txt", sbd_train), (sbd_dataset, "val.txt", sbd_val)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("".join(f"{n}\n" for n in names))
    (sbd_dataset / "cls").mkdir()
    return voc, sets, sbd_dataset / "cls"


def test_prepare_voc_converts_sbd_and_writes_mmsegs_aug_list(tmp_path):
    sbd = tmp_path / "benchmark_RELEASE"
    sbd_train = ["2008_000009", "2007_000001", "2007_000003", "2008_000005"]
    sbd_val = ["2008_000001", "2007_000004"]
    voc, sets, cls = _voc_and_sbd_trees(tmp_path, ["2007_000001", "2007_000002"], ["2007_000003", "2007_000004"],
                                        sbd / "dataset", sbd_train, sbd_val)
    rng = np.random.default_rng(0)
    segs = {}
    for name in sbd_train + sbd_val:
        segs[name] = rng.integers(0, 21, size=(6, 9)).astype(np.uint8)
        _sbd_mat(cls / f"{name}.mat", segs[name])

    proc = run_cli("prepare", "voc", "--voc", str(voc), "--sbd", str(sbd))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 6 masks" in proc.stdout
    out = voc / "VOC2012" / "SegmentationClassAug"
    for name, seg in segs.items():
        assert np.array_equal(np.array(Image.open(out / f"{name}.png")), seg)
    # voc_aug.py: aug = (SBD train + val) - (VOC train + val); trainaug = (VOC train + SBD) - VOC val.
    assert (sets / "aug.txt").read_text() == "2008_000001\n2008_000005\n2008_000009\n"
    assert (sets / "trainaug.txt").read_text().split() == [
        "2007_000001", "2007_000002", "2008_000001", "2008_000005", "2008_000009"]
    again = run_cli("prepare", "voc", "--voc", str(voc), "--sbd", str(sbd / "dataset"))
    assert again.returncode == 0 and "wrote 0 masks" in again.stdout and "skipped 6" in again.stdout
    assert "aug.txt unchanged" in again.stdout
    assert aug_lists(["a"], ["b"], ["a", "c"], ["b", "d"]) == (["c", "d"], ["a", "c", "d"])


def test_prepare_voc_bad_mat_is_a_clear_error(tmp_path):
    voc, _, cls = _voc_and_sbd_trees(tmp_path, ["a"], ["b"], tmp_path / "sbd", ["c"], [])
    from scipy.io import savemat
    savemat(str(cls / "c.mat"), {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(NLBenchError, match=r"c\.mat: GTcls\.Segmentation"):
        prepare_voc(voc, tmp_path / "sbd", log=lambda _: None)
    assert not (voc / "VOC2012" / "SegmentationClassAug" / "c.png").exists()


# ----------------------------------------------------------------------------- bad input


def _error(dataset: str, root: Path, split: str = "train", check: bool = True) -> str:
    with pytest.raises(NLBenchError) as info:
        ds = build_dataset(data_cfg(dataset), split, root)
        if check:
            ds.check()
    return str(info.value)


def test_missing_data_root(tmp_path):
    msg = _error("cityscapes", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in msg and "data root not found" in msg
    proc = run_cli("bench-data", RECIPES["ade20k"], "--data-root", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and str(tmp_path / "nowhere") in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_missing_split_file(synth, tmp_path):
    root = copy_of(synth["voc"], tmp_path)
    (root / "ImageSets/Segmentation/aug.txt").unlink()
    msg = _error("voc", root)
    assert "aug.txt" in msg and "split file not found" in msg


def test_split_names_a_missing_image_or_label(synth, tmp_path):
    root = copy_of(synth["voc"], tmp_path)
    name = (root / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    (root / "SegmentationClass" / f"{name}.png").unlink()
    msg = _error("voc", root, "val")
    assert f"SegmentationClass/{name}.png" in msg and "val.txt" in msg
    (root / "JPEGImages" / f"{name}.jpg").unlink()
    assert f"JPEGImages/{name}.jpg" in _error("voc", root, "val")
    city = copy_of(synth["cityscapes"], tmp_path)
    label = sorted(city.rglob("*_gtFine_labelTrainIds.png"))[0]
    label.unlink()
    assert str(label) in _error("cityscapes", city, "train" if "/train/" in str(label) else "val")


def test_image_and_label_of_different_sizes(synth, tmp_path):
    root = copy_of(synth["ade20k"], tmp_path)
    label = sorted((root / "annotations" / "training").glob("*.png"))[0]
    Image.fromarray(np.ones((10, 12), np.uint8)).save(label)
    msg = _error("ade20k", root)
    assert str(label) in msg and "10x12" in msg and "40x56" in msg


def test_undecodable_image(synth, tmp_path):
    root = copy_of(synth["ade20k"], tmp_path)
    image = sorted((root / "images" / "validation").glob("*.jpg"))[0]
    image.write_bytes(b"this is not a jpeg")
    msg = _error("ade20k", root, "val")
    assert str(image) in msg and "cannot decode image" in msg


def test_label_values_outside_the_classes(synth, tmp_path):
    root = copy_of(synth["cityscapes"], tmp_path)
    label = sorted((root / "gtFine" / "val").rglob("*_gtFine_labelTrainIds.png"))[0]
    arr = np.array(Image.open(label))
    arr[0, :3] = 19  # one past the last of the 19 classes
    Image.fromarray(arr).save(label)
    msg = _error("cityscapes", root, "val")
    assert str(label) in msg and "label values 19 (3 pixels)" in msg


def test_empty_split(synth, tmp_path):
    root = copy_of(synth["voc"], tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n")
    assert "val split is empty" in _error("voc", root, "val")
    city = copy_of(synth["cityscapes"], tmp_path)
    shutil.rmtree(city / "leftImg8bit" / "val")
    os.makedirs(city / "leftImg8bit" / "val")
    assert "val split is empty" in _error("cityscapes", city, "val")
