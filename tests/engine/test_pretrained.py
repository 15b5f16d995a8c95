"""ImageNet backbone initialisation: file layouts, strictness, open-mmlab:// download, use in training."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from http_server import LoopbackServer

from benchmark.engine.pretrained import load_backbone_weights, resolve_pretrained
from benchmark.errors import NLBenchError
from benchmark.models.resnet import ResNetV1c


def _imagenet_file(path: Path, depth: int = 18, prefix: str = "", seed: int = 1) -> dict:
    torch.manual_seed(seed)
    backbone = ResNetV1c(depth)
    for p in backbone.parameters():
        p.data.normal_()
    state = {prefix + k: v for k, v in backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save({"state_dict": state}, path)
    return backbone.state_dict()


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_weights_land_in_the_backbone(tmp_path, prefix):
    expected = _imagenet_file(tmp_path / "r18.pth", prefix=prefix)
    backbone = ResNetV1c(18)
    dropped = load_backbone_weights(backbone, tmp_path / "r18.pth")
    assert dropped == ["fc.bias", "fc.weight"]
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_wrong_backbone_is_refused(tmp_path):
    _imagenet_file(tmp_path / "r18.pth", depth=18)
    with pytest.raises(NLBenchError, match="model.pretrained: not pretrained weights for this backbone: .*missing key"):
        load_backbone_weights(ResNetV1c(50), tmp_path / "r18.pth")
    state = torch.load(tmp_path / "r18.pth", weights_only=True)["state_dict"]
    state["decode_head.conv_seg.weight"] = torch.zeros(1)  # a whole segmentor is not a backbone file
    torch.save({"state_dict": state}, tmp_path / "foreign.pth")
    with pytest.raises(NLBenchError, match="unexpected key.*decode_head.conv_seg.weight"):
        load_backbone_weights(ResNetV1c(18), tmp_path / "foreign.pth")
    with pytest.raises(NLBenchError, match="not found"):
        resolve_pretrained(str(tmp_path / "absent.pth"))
    with pytest.raises(NLBenchError, match="unknown open-mmlab model"):
        resolve_pretrained("open-mmlab://resnet34_v1c")


def test_open_mmlab_names_download_and_check_the_hash(tmp_path, monkeypatch):
    _imagenet_file(tmp_path / "r18.pth")
    body = (tmp_path / "r18.pth").read_bytes()
    with LoopbackServer(body) as server:
        monkeypatch.setenv("NLBENCH_OPENMMLAB_BASE_URL", server.url)
        # The served bytes are not the real file, so the hash in its name (b5776b93) must not match.
        with pytest.raises(NLBenchError, match="sha256 mismatch"):
            resolve_pretrained("open-mmlab://resnet18_v1c", cache_dir=tmp_path / "cache")
        assert server.requests[0][0] == "/resnet18_v1c-b5776b93.pth"
        # A URL whose name carries the file's true hash prefix downloads, verifies and is cached.
        name = f"r18-{hashlib.sha256(body).hexdigest()[:8]}.pth"
        got = resolve_pretrained(f"{server.url}/{name}", cache_dir=tmp_path / "cache")
        assert got.read_bytes() == body
        assert resolve_pretrained(f"{server.url}/{name}", cache_dir=tmp_path / "cache") == got
        assert len(server.requests) == 2


@pytest.mark.slow
def test_training_starts_from_the_pretrained_backbone(tmp_path):
    from benchmark.engine.train import train
    from benchmark.recipe import load_recipe

    _imagenet_file(tmp_path / "r18.pth")
    recipe = load_recipe(
        "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024",
        # ImageNet weights are full width: the smoke trunk's narrow width is set back to 64 channels.
        [f"model.pretrained={tmp_path / 'r18.pth'}", "model.stem_channels=64", "model.base_channels=64",
         "schedule.max_iters=1", f"data.data_root={tmp_path / 'cs'}",
         "data.synthetic.train=2", "data.synthetic.val=1"],
        profile="smoke",
    )
    lines = []
    first = {}

    def grab(iteration, model):
        first.setdefault("stem", model.backbone.stem[0].weight.detach().clone())

    train(recipe, tmp_path / "work", device="cpu", log=lines.append, step_callback=grab)
    assert any("backbone initialised from" in line for line in lines)
    expected = torch.load(tmp_path / "r18.pth", weights_only=True)["state_dict"]["stem.0.weight"]
    # one SGD step at lr 0.05 moves the weights only a little away from the ImageNet ones
    assert torch.allclose(first["stem"], expected, atol=0.1)
    assert not torch.allclose(first["stem"], torch.zeros_like(expected), atol=0.1)
