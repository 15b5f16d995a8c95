"""Checkpoints: MMSeg's format round trip, strict loading with one clear error per bad input (also
through the CLI, without a traceback), weights-only safety, and atomic writes."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CITY_ROW as RECIPE
from conftest import run_cli
from torch import nn

from benchmark.cli import main as cli_main
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_bytes, atomic_write_text, file_sha256
from benchmark.mmseg_checkpoint import (
    atomic_torch_save,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_segmentor(load_recipe(RECIPE, profile="smoke").model)


@pytest.fixture(scope="module")
def good_ckpt(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.pth"
    save_checkpoint(path, model.state_dict(), meta={"iter": 40, "CLASSES": ("road", "sidewalk")})
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    import cv2

    path = tmp_path_factory.mktemp("img") / "img.png"
    cv2.imwrite(str(path), np.zeros((16, 24, 3), dtype=np.uint8))
    return path


def _fresh(model):
    torch.manual_seed(1)
    return build_segmentor(load_recipe(RECIPE, profile="smoke").model)


def test_round_trip_in_mmseg_format(model, good_ckpt):
    raw = torch.load(good_ckpt, weights_only=True)
    assert set(raw) == {"meta", "state_dict"} and raw["meta"]["iter"] == 40
    other = _fresh(model)
    ckpt = load_weights(other, good_ckpt)
    assert ckpt["meta"]["CLASSES"] == ("road", "sidewalk")
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_bare_state_dict_ddp_prefix_and_extra_entries(model, tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(OrderedDict(("module." + k, v) for k, v in model.state_dict().items()), bare)
    load_weights(_fresh(model), bare)
    with_opt = tmp_path / "opt.pth"
    save_checkpoint(with_opt, model.state_dict(), optimizer={"state": {}, "param_groups": []}, iteration=7)
    ckpt = load_checkpoint(with_opt)
    assert ckpt["optimizer"]["param_groups"] == [] and ckpt["iteration"] == 7 and ckpt["meta"] == {}


def test_numpy_in_meta_is_allowed_as_data(model, tmp_path):
    path = tmp_path / "np_meta.pth"
    torch.save({"meta": {"PALETTE": np.array([[128, 64, 128]]), "seed": np.int64(0)},
                "state_dict": model.state_dict()}, path)
    ckpt = load_weights(_fresh(model), path)
    assert ckpt["meta"]["PALETTE"].tolist() == [[128, 64, 128]]


@pytest.fixture(scope="module")
def bad_files(model, good_ckpt, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bad")
    sd = model.state_dict()
    first = next(iter(sd))
    missing = OrderedDict(sd)
    del missing["decode_head.conv_seg.weight"]
    extra = OrderedDict(sd)
    extra["decode_head.surprise.weight"] = torch.zeros(1)
    wrong = OrderedDict(sd)
    wrong["decode_head.conv_seg.weight"] = torch.zeros(7, 32, 1, 1)
    files = {}
    for name, state, needle in [("missing", missing, "1 missing key(s): decode_head.conv_seg.weight"),
                                ("extra", extra, "1 unexpected key(s): decode_head.surprise.weight"),
                                ("shape", wrong, "decode_head.conv_seg.weight (checkpoint (7, 32, 1, 1), "
                                                 "model (19, 32, 1, 1))")]:
        files[name] = (save_checkpoint(tmp_path / f"{name}.pth", state), needle)
    data = good_ckpt.read_bytes()
    files["truncated"] = (tmp_path / "truncated.pth", "truncated")
    files["truncated"][0].write_bytes(data[: len(data) // 2])
    files["text"] = (tmp_path / "notes.txt", "not a PyTorch checkpoint")
    files["text"][0].write_text("this is not a checkpoint\n")
    files["empty"] = (tmp_path / "empty.pth", "not a PyTorch checkpoint")
    files["empty"][0].write_bytes(b"")
    files["directory"] = (tmp_path, "got a directory")
    files["absent"] = (tmp_path / "absent.pth", "not found")
    files["module"] = (tmp_path / "module.pth", "refusing to load")
    torch.save({"state_dict": sd, "meta": {"model": nn.Linear(1, 1)}}, files["module"][0])
    files["not_tensors"] = (tmp_path / "strings.pth", "expected tensors only")
    torch.save({"state_dict": {first: "weights"}}, files["not_tensors"][0])
    return files


BAD = ["missing", "extra", "shape", "truncated", "text", "empty", "directory", "absent", "module", "not_tensors"]


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_gives_one_clear_error(model, bad_files, case):
    path, needle = bad_files[case]
    with pytest.raises(NLBenchError) as info:
        load_weights(_fresh(model), path)
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message
    assert "\n" not in message


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "truncated", "text"])
def test_bad_checkpoint_through_the_cli_exits_2_without_traceback(bad_files, image, tmp_path, case, capsys):
    path, needle = bad_files[case]
    code = cli_main(["predict", RECIPE, "--profile", "smoke", "--checkpoint", str(path), "--image", str(image),
                     "--out", str(tmp_path / "pred.png"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("nlbench predict: error: ") and needle in err
    assert "Traceback" not in err and not (tmp_path / "pred.png").exists()


def test_console_script_prints_one_line(bad_files, image, tmp_path):
    path, _ = bad_files["text"]
    proc = run_cli("predict", RECIPE, "--profile", "smoke", "--checkpoint", path, "--image", image,
                   "--out", tmp_path / "p.png", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr and str(path) in proc.stderr


def test_atomic_writes_replace_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.bin", "out.txt"]


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == plain.stat().st_mode


def test_failed_save_keeps_the_old_file(tmp_path):
    target = tmp_path / "ckpt.pth"
    atomic_torch_save({"a": torch.ones(2)}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises, the old file must survive
        atomic_torch_save({"a": lambda: None}, target)  # a lambda cannot be pickled
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_file_sha256(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_saved_tensors_are_on_cpu_and_detached(tmp_path):
    layer = nn.Linear(2, 2)
    save_checkpoint(tmp_path / "c.pth", {k: v * 1 for k, v in layer.state_dict().items()})
    sd = load_checkpoint(Path(tmp_path / "c.pth"))["state_dict"]
    assert all(v.device.type == "cpu" and not v.requires_grad for v in sd.values())
