"""`nlbench logs fetch` against a real HTTP server on loopback: resumable downloads into the cache,
the sha256 pinned at the first download, and the reference a row's curves are checked against."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import VOC_ROW as ROW
from http_server import LoopbackServer

from benchmark.cli import main as cli
from benchmark.curves.reference import fetch_logs, log_cache_dir, resolve_reference
from benchmark.errors import NLBenchError
from benchmark.recipe import load_recipe

LOG_NAME = "nonlocal_r50-d8_512x512_20k_voc12aug_20200617_222613.log.json"


def _published_log(n: int = 400) -> bytes:
    lines = [json.dumps({"env_info": "sys.platform: linux", "seed": 0, "exp_name": "x.py"})]
    for it in range(50, 50 * n + 1, 50):
        lines.append(json.dumps({"mode": "train", "epoch": 1, "iter": it, "lr": 0.00999, "memory": 7390,
                                 "data_time": 0.01, "decode.loss_seg": 0.5, "aux.loss_seg": 0.2, "loss": 0.7,
                                 "time": 0.9}))
        if it % 2000 == 0:
            lines.append(json.dumps({"mode": "val", "epoch": 2, "iter": 1449, "lr": 0.00999, "aAcc": 0.93,
                                     "mIoU": 0.7, "mAcc": 0.8}))
    return ("\n".join(lines) + "\n").encode()


def test_fetch_downloads_once_pins_the_hash_and_resumes(tmp_path, capsys):
    body = _published_log()
    cache = tmp_path / "cache"
    with LoopbackServer(body) as server:
        mirror = [f"release.base_url={server.url}"]
        server.cut_after = len(body) // 2  # the first attempt dies half-way
        with pytest.raises(NLBenchError, match="interrupted"):
            fetch_logs(ROW, mirror, cache_dir=cache, progress=False)
        [path] = fetch_logs(ROW, mirror, cache_dir=cache, progress=False)
        assert server.requests[-1] == (f"/nonlocal_r50-d8_512x512_20k_voc12aug/{LOG_NAME}", f"bytes={len(body) // 2}-")
        assert path == cache / LOG_NAME and path.read_bytes() == body
        pin = cache / (LOG_NAME + ".sha256")
        assert pin.read_text().split()[1] == LOG_NAME
        assert "400 train and 10 evaluation lines" in capsys.readouterr().out

        fetch_logs(ROW, mirror, cache_dir=cache, progress=False)  # from the cache: no request
        assert len(server.requests) == 2
        path.write_bytes(body[:-10])  # a damaged cached file is fetched again and matches its pin
        fetch_logs(ROW, mirror, cache_dir=cache, progress=False)
        assert len(server.requests) == 3 and path.read_bytes() == body

        # The published file changed after it was pinned: refused, named, the cached copy removed.
        path.unlink()
        server.body = _published_log(401)
        with pytest.raises(NLBenchError) as err:
            fetch_logs(ROW, mirror, cache_dir=cache, progress=False)
        assert "differs from the one pinned at the first download" in str(err.value)
        assert not path.exists() and pin.exists()


def test_concurrent_fetches_of_one_log_download_it_once(tmp_path):
    body = _published_log()
    with LoopbackServer(body) as server:
        server.delay_s = 0.5  # the second caller arrives while the first is still downloading
        mirror = [f"release.base_url={server.url}"]
        with ThreadPoolExecutor(2) as pool:
            paths = list(pool.map(lambda _: fetch_logs(ROW, mirror, cache_dir=tmp_path, progress=False), range(2)))
    assert paths == [[tmp_path / LOG_NAME]] * 2 and (tmp_path / LOG_NAME).read_bytes() == body
    assert len(server.requests) == 1  # the other caller waited for the lock and found the file
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOG_NAME, LOG_NAME + ".sha256"]  # no lock or .part left


def test_a_downloaded_file_that_is_not_a_log_is_refused(tmp_path):
    with LoopbackServer(b"<html><body>Access denied</body></html>\n") as server:
        with pytest.raises(NLBenchError) as err:
            fetch_logs(ROW, [f"release.base_url={server.url}"], cache_dir=tmp_path, progress=False)
    assert "not a training log" in str(err.value) and list(tmp_path.iterdir()) == []


def test_logs_fetch_command_and_the_released_reference_of_a_full_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(ROW)
    with pytest.raises(NLBenchError, match="not in the cache"):
        resolve_reference(recipe, "released", offline=True)  # plots never download
    with LoopbackServer(_published_log()) as server:
        assert cli(["logs", "fetch", "--filter", ROW, "--set", f"release.base_url={server.url}"]) == 0
    out = capsys.readouterr().out
    assert f"{ROW}: {log_cache_dir() / LOG_NAME}" in out and "1 published training log(s)" in out
    # The row's published log is now the full profile's reference, offline too.
    assert resolve_reference(recipe, "released", offline=True) == log_cache_dir() / LOG_NAME
    # A local file or folder stands in for it (--reference PATH).
    local = tmp_path / "mine"
    local.mkdir()
    (local / f"{ROW}.log.json").write_bytes(_published_log(10))
    assert resolve_reference(recipe, str(local)) == local / f"{ROW}.log.json"
    with pytest.raises(NLBenchError, match="reference log not found"):
        resolve_reference(recipe, str(tmp_path / "absent.log.json"))


def test_run_all_fetches_each_guard_reference_once_before_the_jobs(tmp_path, monkeypatch):
    from benchmark.launch.plan import Resources, make_plan
    from benchmark.launch.run_all import fetch_reference_logs_once

    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path / "cache"))
    with LoopbackServer(_published_log()) as server:
        plan = make_plan(tmp_path / "results", lambda _r: Resources(), pattern=ROW, seeds=2,
                         overrides=[f"release.base_url={server.url}", "guard.reference=released"])
        said = []
        fetch_reference_logs_once(plan.jobs, report=said.append)
        assert len(plan.jobs) == 2 and len(server.requests) == 1 and len(said) == 1
        assert (log_cache_dir() / LOG_NAME).is_file()
