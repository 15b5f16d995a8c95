"""`nlbench run-all --checkpoint released`: the plan over the 16 rows, results kept apart from trained
ones, the download cache shared by concurrent fetchers, and a real run (checkpoints served on loopback)
through tables and compare."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from http_server import LoopbackServer
from report_helpers import ROW, make_record, work_dir_of, write_row
from slurm_cluster import cluster_fixture

from benchmark.catalog import PUBLISHED_CSV
from benchmark.cli import main as cli
from benchmark.io.download import cached_download
from benchmark.launch.cost import estimate_gpu_hours
from benchmark.launch.plan import Resources, make_plan, stages_for
from benchmark.launch.status import collect_status
from benchmark.recipe import load_recipe
from benchmark.report.collect import collect
from benchmark.run.job import job_from_dict
from benchmark.run.records import RecordStore, write_record

ONE_CPU = lambda recipe: Resources()  # noqa: E731
SLURM_PROFILE = Path(__file__).resolve().parent.parent / "slurm" / "test-cluster.yaml"
VOC_20K = "nonlocal_r*-d8_4xb4-20k_voc12aug-512x512"  # one smoke model (VOC, 21 classes),
# the R-50 rows' smoke model for both (the R-101 rows' own smoke heads are wider), so one served file fits.
TINY = ["model.depth=18", "model.decode_head.channels=32", "model.auxiliary_head.channels=16",
        "data.synthetic.train=2", "data.synthetic.val=2", "test.ms_flip_ratios=[0.75,1.25]",
        "bench.total_images=2", "bench.warmup_images=1", "bench.mem_iters=1"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_dry_run_over_the_16_rows_shows_plan_and_gpu_hours(tmp_path, capsys):
    plan = make_plan(tmp_path, ONE_CPU, checkpoint="released")
    assert len(plan.jobs) == 16
    for job in plan.jobs:
        assert "train" not in job.stages and job.stages == stages_for(job.recipe)[1:]
        assert job.key == f"full/{job.name}/released/seed0"
        assert Path(job.work_dir) == (tmp_path.resolve() / "work" / "full" / job.name / "released"
                                      / f"seed0-{job.recipe.hash[:12]}")
        training = estimate_gpu_hours(job.recipe, stages_for(job.recipe))
        assert plan.training_gpu_hours[job.key] == pytest.approx(training)
        assert 0 < job.gpu_hours < training / 10
    again = job_from_dict(plan.jobs[0].to_dict())  # how a job travels to torchrun's ranks
    assert (again.key, again.checkpoint_source, again.cache_dir) == (plan.jobs[0].key, "released",
                                                                     plan.jobs[0].cache_dir)
    assert cli(["run-all", "--checkpoint", "released", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("| eval ") == 16 and "| train" not in out and "GPU-h full training (est.)" in out
    total, training = plan.total_gpu_hours, plan.total_training_gpu_hours
    assert training == pytest.approx(make_plan(tmp_path, ONE_CPU).total_gpu_hours)
    assert (f"16 job(s) on released checkpoints (no training); estimated total: {total:.1f} GPU-hours, "
            f"against {training:.0f} GPU-hours to train the same rows") in out
    assert "one seed per row is enough" in out


def _released(kind, seed=0, miou=60.0, **kw):
    record = make_record(kind, seed=seed, miou=miou, **kw)
    record.update(checkpoint_source="released", checkpoint_release={"url": "http://x/y.pth", "stamp": "s-00"})
    return record


def test_released_and_trained_results_never_mix(tmp_path, capsys):
    recipe = load_recipe(ROW)
    for kind in ("eval", "bench"):
        write_record(tmp_path, {**_released(kind), "provenance": {"recipe_hash": recipe.hash}})
    # A released eval does not make the trained row look done, and the other way round.
    store = RecordStore.read_row(tmp_path, ROW, "full", 0)
    assert store.kinds_done(ROW, "full", 0, recipe.hash) == set()
    assert store.kinds_done(ROW, "full", 0, recipe.hash, "released") == {"eval", "bench"}
    assert len(make_plan(tmp_path, ONE_CPU, pattern=ROW).jobs) == 1
    assert make_plan(tmp_path, ONE_CPU, pattern=ROW, checkpoint="released").skipped == [f"full/{ROW}/released/seed0"]
    write_row(tmp_path, miou=40.0)  # trained: train, eval, bench
    summary = collect(tmp_path).summary.set_index(["recipe", "profile", "checkpoint_source"])
    assert summary.loc[(ROW, "full", "trained"), "miou_mean"] == 40.0
    assert summary.loc[(ROW, "full", "released"), "miou_mean"] == 60.0
    assert summary.loc[(ROW, "full", "released"), "n_seeds"] == 1
    assert cli(["collect", "--results", str(tmp_path)]) == 0
    assert "| checkpoint " in capsys.readouterr().out
    with pytest.raises(Exception, match="checkpoint_source"):
        write_record(tmp_path, {**make_record("eval"), "checkpoint_source": "downloaded"})


def test_concurrent_fetchers_download_once(tmp_path):
    """A fetcher that finds the file's lock taken waits, then uses what the holder downloaded."""
    import fcntl

    body = b"released weights" * 1000
    prefix = hashlib.sha256(body).hexdigest()[:8]
    target = tmp_path / "w.pth"
    with LoopbackServer(body) as server:
        with open(tmp_path / "w.pth.lock", "a") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another process is downloading
            got = {}
            waiter = threading.Thread(target=lambda: got.update(
                path=cached_download(f"{server.url}/w.pth", prefix, tmp_path, progress=False)))
            waiter.start()
            time.sleep(0.5)
            assert waiter.is_alive() and not server.requests  # it waits for the lock
            target.write_bytes(body)  # the holder finishes
            fcntl.flock(held.fileno(), fcntl.LOCK_UN)
        waiter.join(timeout=30)
        assert got["path"] == target and server.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]  # no lock file left behind


def _serve_smoke_checkpoint(tmp_path: Path) -> bytes:
    import torch

    from benchmark.mmseg_checkpoint import save_checkpoint
    from benchmark.models.segmentor import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor(load_recipe("nonlocal_r50-d8_4xb4-20k_voc12aug-512x512", profile="smoke").model)
    weights = model.state_dict()
    weights["decode_head.conv_seg.bias"][0] += 50.0  # "background everywhere": a known, non-zero mIoU
    return save_checkpoint(tmp_path / "served.pth", weights, meta={"note": "test"}).read_bytes()


def _reference_csv(path: Path, summary: pd.DataFrame, offsets) -> Path:
    """A smoke reference in published.csv's columns: the released results plus an offset per row."""
    table = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    rows = summary.set_index("recipe")
    table = table[table["recipe"].isin(offsets)].copy()
    table["miou"] = [f"{rows.loc[r, 'miou_mean'] + offsets[r]:.2f}" for r in table["recipe"]]
    table["miou_ms_flip"] = [f"{rows.loc[r, 'miou_ms_flip_mean']:.2f}" for r in table["recipe"]]
    table["mem_gb"], table["fps"], table["profile"], table["device"] = "", "", "smoke", "cpu"
    table.to_csv(path, index=False)
    return path


def _check_released_records(results: Path, names, sha: str, kinds=("bench", "eval", "eval_ms_flip")) -> None:
    for name in names:
        folder = results / "records" / name / "smoke" / "seed0"
        records = {p.name.split("-")[0]: json.loads(p.read_text()) for p in folder.glob("*.json")}
        assert sorted(records) == list(kinds)  # no training
        for record in records.values():
            assert record["checkpoint_source"] == "released"
            assert record["provenance"]["checkpoint_sha256"] == sha
            assert record["checkpoint_release"]["url"].startswith("http://127.0.0.1:")
        assert (work_dir_of(results, "smoke", name, source="released") / "job.log").is_file()


def _check_tables(results: Path, readme: Path, names, sha: str) -> None:
    readme.write_text("# x\n")
    assert cli(["tables", "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "### Published vs released checkpoints" in text and "### Published vs reproduced" not in text
    summary = collect(results).summary.set_index("recipe")
    rows = {cells[1]: cells for cells in ([c.strip() for c in ln.strip("|").split("|")]
                                          for ln in text.splitlines() if ln.startswith("| Pascal VOC"))}
    assert sorted(rows) == ["R-101-D8", "R-50-D8"]
    for name in names:
        got = summary.loc[name]
        cells = rows["R-101-D8" if "r101" in name else "R-50-D8"]
        assert got["miou_mean"] > 0 and cells[6] == f"{got['miou_mean']:.2f}" and cells[7] == "1"
        assert cells[10] == f"{got['miou_ms_flip_mean']:.2f}" and cells[15] == sha[:12]


def _mious(out: str, names):
    return {n: [ln for ln in out.splitlines() if n in ln and "| mIoU " in ln][0] for n in names}


def _check_compare(results: Path, tmp_path: Path, names, capsys) -> None:
    """Row 0 has its own result as reference, row 1 a reference 2 points above its result."""
    ref = _reference_csv(tmp_path / "ref.csv", collect(results).summary, {names[0]: 0.0, names[1]: 2.0})
    report = tmp_path / "compare.md"
    code = cli(["compare", "--results", str(results), "--reference", str(ref), "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1 and "Released checkpoints" in out and "FAIL: 1 regression(s)" in out
    assert "## Released checkpoints" in report.read_text()
    lines = _mious(out, names)
    assert "| reproduced" in lines[names[0]] and "| regressed" in lines[names[1]]
    assert cli(["compare", "--results", str(results), "--reference", str(ref), "--method", "ci"]) == 1
    lines = _mious(capsys.readouterr().out, names)
    assert "| reproduced" in lines[names[0]] and "no seed spread" in lines[names[0]]
    assert "| below" in lines[names[1]]


def _release_sets(url: str, sha: str):
    return [f"release.base_url={url}", f"release.stamp=20200617_222613-{sha[:8]}"]


@pytest.mark.slow
def test_run_all_released_end_to_end_through_tables_and_compare(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the smoke recipes' synthetic data roots land here
    monkeypatch.setenv("NLBENCH_CACHE", str(tmp_path / "cache"))
    body = _serve_smoke_checkpoint(tmp_path)
    sha = hashlib.sha256(body).hexdigest()
    results = tmp_path / "results"
    with LoopbackServer(body) as server:
        release = _release_sets(server.url, sha)
        args = ["run-all", "--checkpoint", "released", "--profile", "smoke", "--filter", VOC_20K,
                "--results", str(results), *_sets(TINY + release)]
        assert cli(args) == 0
        out = capsys.readouterr().out
        assert "2 row(s): 2 done" in out and "(released checkpoint)" in out
        assert len(server.requests) == 2  # one file per row, each downloaded once, before the jobs ran
        assert cli(args) == 0 and "nothing to run" in capsys.readouterr().out
        assert len(server.requests) == 2
    names = sorted(r["recipe"] for r in collect_status(results))
    _check_released_records(results, names, sha)
    # The trained rows are still to do: a released checkpoint's results do not count for them.
    assert len(make_plan(results, ONE_CPU, pattern=VOC_20K, profile="smoke", overrides=TINY + release).jobs) == 2
    _check_tables(results, tmp_path / "README.md", names, sha)
    _check_compare(results, tmp_path, names, capsys)


cluster = cluster_fixture()


@pytest.mark.slurm
@pytest.mark.slow
def test_run_all_released_on_slurm_downloads_once_before_submission(cluster, monkeypatch, capsys):
    monkeypatch.setenv("NLBENCH_CACHE", str(cluster / "cache"))
    body = _serve_smoke_checkpoint(cluster)
    sha = hashlib.sha256(body).hexdigest()
    results = cluster / "results-released"
    with LoopbackServer(body) as server:
        args = ["run-all", "--checkpoint", "released", "--launcher", "slurm", "--cluster", str(SLURM_PROFILE),
                "--profile", "smoke", "--filter", VOC_20K, "--results", str(results),
                *_sets(TINY + ["test.ms_flip_published=false"] + _release_sets(server.url, sha))]
        assert cli(args) == 0  # submits one array and waits for it
        out = capsys.readouterr().out
        # Both files were fetched here, before sbatch; the array tasks read them from the cache.
        assert len(server.requests) == 2 and out.index("released checkpoint of") < out.index("submitted 2 job(s)")
    (run_file,) = (results / "jobs" / "runs").glob("*.json")
    entries = json.loads(run_file.read_text())["jobs"]
    assert len({e["slurm_job_id"].split("_")[0] for e in entries}) == 1
    assert all(e["key"].endswith("/released/seed0") and e["checkpoint_source"] == "released" for e in entries)
    rows = collect_status(results)
    assert [r["state"] for r in rows] == ["done", "done"]
    names = sorted(r["recipe"] for r in rows)
    _check_released_records(results, names, sha, kinds=("bench", "eval"))  # ms+flip left out: time
    eval_record = json.loads(next((results / "records" / names[0] / "smoke" / "seed0").glob("eval-*.json"))
                             .read_text())
    assert eval_record["provenance"]["slurm_array_job_id"] == entries[0]["slurm_job_id"].split("_")[0]
