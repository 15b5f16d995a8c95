"""Released-checkpoint download against a real HTTP server on loopback (Range-capable, in a thread)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import VOC_ROW as RECIPE
from http_server import LoopbackServer

from benchmark.errors import NLBenchError
from benchmark.mmseg_checkpoint import fetch_released
from benchmark.recipe import load_recipe


def _recipe(base_url: str, body: bytes, prefix: str = None):
    prefix = prefix or hashlib.sha256(body).hexdigest()[:8]
    return load_recipe(RECIPE, [f"release.base_url={base_url}", f"release.stamp=20200617_222613-{prefix}"])


def test_download_verifies_and_caches(tmp_path):
    body = bytes(range(256)) * 4000  # ~1 MB, several chunks
    with LoopbackServer(body) as server:
        recipe = _recipe(server.url, body)
        path = fetch_released(recipe, cache_dir=tmp_path, progress=False)
        assert path.read_bytes() == body
        assert path.name == recipe.release.filename
        assert server.requests[0][0].endswith(f"/{recipe.release.mmseg0x_config}/{recipe.release.filename}")
        assert not list(tmp_path.glob("*.part"))
        # Second call: served from the cache, no request.
        assert fetch_released(recipe, cache_dir=tmp_path, progress=False) == path
        assert len(server.requests) == 1


def test_download_resumes_partial_file_with_range(tmp_path):
    body = b"nlbench" * 300_000
    with LoopbackServer(body) as server:
        recipe = _recipe(server.url, body)
        server.cut_after = 500_000  # the first attempt dies half-way
        with pytest.raises(NLBenchError, match="interrupted"):
            fetch_released(recipe, cache_dir=tmp_path, progress=False)
        part = tmp_path / (recipe.release.filename + ".part")
        assert part.stat().st_size == 500_000  # the bytes so far are kept for the next attempt
        assert not (tmp_path / recipe.release.filename).exists()
        path = fetch_released(recipe, cache_dir=tmp_path, progress=False)
        assert path.read_bytes() == body
        # The second attempt asked only for the missing bytes.
        assert server.requests[-1][1] == "bytes=500000-"
        assert not part.exists()


def test_sha_mismatch_deletes_partial_and_names_stamp(tmp_path):
    body = b"not the released weights" * 1000
    with LoopbackServer(body) as server:
        recipe = _recipe(server.url, body, prefix="deadbeef")
        with pytest.raises(NLBenchError) as err:
            fetch_released(recipe, cache_dir=tmp_path, progress=False)
    text = str(err.value)
    assert "sha256 mismatch" in text and "deadbeef" in text and "release.stamp" in text
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    with LoopbackServer(b"") as server:
        url = server.url
    recipe = _recipe(url, b"x")  # server is stopped: connection refused
    with pytest.raises(NLBenchError, match="download failed"):
        fetch_released(recipe, cache_dir=tmp_path, progress=False)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    body = b"weights" * 10
    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path / "cache"))
    with LoopbackServer(body) as server:
        path = fetch_released(_recipe(server.url, body), progress=False)
    assert path.parent == tmp_path / "cache"
    assert Path(path).read_bytes() == body


@pytest.mark.slow
def test_eval_checkpoint_released_downloads_and_evaluates(tmp_path, monkeypatch, capsys):
    """`nlbench eval --checkpoint released` end to end: served from loopback, cached, hash-checked."""
    import torch

    from benchmark.cli import main as cli
    from benchmark.mmseg_checkpoint import save_checkpoint
    from benchmark.models.segmentor import build_segmentor

    monkeypatch.chdir(tmp_path)  # the smoke recipe's synthetic data root lands here
    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path / "cache"))
    small = ["data.synthetic.train=2", "data.synthetic.val=2"]
    torch.manual_seed(0)
    model = build_segmentor(load_recipe(RECIPE, small, profile="smoke").model)
    weights = save_checkpoint(tmp_path / "released.pth", model.state_dict(), meta={"note": "test"})
    body = weights.read_bytes()
    prefix = hashlib.sha256(body).hexdigest()[:8]
    with LoopbackServer(body) as server:
        args = ["eval", RECIPE, "--profile", "smoke", "--checkpoint", "released",
                "--set", f"release.base_url={server.url}", "--set", f"release.stamp=20200617_222613-{prefix}",
                *[a for s in small for a in ("--set", s)], "--json", str(tmp_path / "m.json"), "--device", "cpu"]
        assert cli(args) == 0
        assert len(server.requests) == 1
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 100.0
    cached = list((tmp_path / "cache").iterdir())
    assert [p.read_bytes() == body for p in cached] == [True]
    assert "mIoU" in capsys.readouterr().out
