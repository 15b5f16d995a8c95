"""Faults on the way: a full disk (for real, on a size-limited tmpfs), a corrupt latest.pth on
resume, and the bookkeeping of a run trained in several attempts.

Every training here is the real thing on the smoke model and a tiny synthetic VOC set; one
uninterrupted reference run, shared by the module, is what resumed runs must match bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from conftest import VOC_ROW as ROW

from benchmark.cli import main as cli_main
from benchmark.engine.attempts import read_attempts, totals
from benchmark.engine.train import train
from benchmark.engine.train_checkpoints import has_checkpoint, read_manifest
from benchmark.errors import NLBenchError, TrainingInterrupted
from benchmark.io.files import append_line, file_sha256
from benchmark.mmseg_checkpoint import load_checkpoint
from benchmark.recipe import load_recipe

pytestmark = pytest.mark.slow
QUIET = lambda _msg: None  # noqa: E731


def _overrides(data_root: Path, max_iters: int = 4):
    return [f"schedule.max_iters={max_iters}", "schedule.checkpoint_interval=2",
            f"schedule.eval_interval={max_iters}", f"data.data_root={data_root}",
            "data.synthetic.train=4", "data.synthetic.val=1", "data.crop_size=[32,32]", "data.imgs_per_gpu=1"]


def _recipe(data_root: Path, max_iters: int = 4):
    return load_recipe(ROW, _overrides(data_root, max_iters), profile="smoke")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 4-iteration run: (recipe, its final weights, its work dir)."""
    base = tmp_path_factory.mktemp("reference")
    recipe = _recipe(base / "voc")
    train(recipe, base / "work", device="cpu", log=QUIET)
    return recipe, load_checkpoint(base / "work" / "latest.pth")["state_dict"], base / "work"


@pytest.fixture(scope="module")
def reference(reference_run):
    """(recipe, final weights) of the uninterrupted run."""
    return reference_run[:2]


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stop_at(iteration: int):
    steps = []
    return dict(step_callback=lambda it, _m: steps.append(it), stop_requested=lambda: len(steps) >= iteration)


def _temporary_files(folder: Path):
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


# ----------------------------------------------------------------------------- a small disk


@pytest.fixture
def small_disk(tmp_path, request):
    """A size-limited tmpfs mounted for this test (root only), unmounted by a finalizer."""
    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk-{size}"
        mnt.mkdir()
        if os.geteuid() != 0:
            pytest.skip(f"mounting a tmpfs needs root; running as uid {os.geteuid()}")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "nlbench-test", str(mnt)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs here: {(proc.stderr or proc.stdout).strip()}")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(mnt)], capture_output=True))
        return mnt

    return mount


def _fill(disk: Path, leave: int = 0, name: str = "filler") -> Path:
    """Fill ``disk`` up to ``leave`` free bytes (a real ENOSPC for whatever writes more)."""
    filler = disk / name
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: closing it has nothing left to flush
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
        except OSError:
            pass
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    if leave > free:
        os.truncate(filler, max(filler.stat().st_size - (leave - free), 0))
    return filler


@pytest.mark.diskfull
def test_a_full_disk_keeps_the_last_checkpoint_and_resume_uses_it(reference, small_disk, tmp_path):
    recipe, final = reference
    disk = small_disk("240m")  # two smoke checkpoints (~90 MB each) and a little more
    work = disk / "work"  # the data stays off the small disk

    def fill_after_the_first_checkpoint(it, _model):
        if it == 3:
            _fill(disk, leave=256 << 10)  # logs still fit; the next checkpoint does not

    with pytest.raises(NLBenchError) as info:
        train(recipe, work, device="cpu", log=QUIET, step_callback=fill_after_the_first_checkpoint)
    message = str(info.value)
    assert f"{work / 'iter_4.pth'}: cannot write checkpoint: No space left on device" == message
    # The previous checkpoint is intact, latest.pth still names it, and nothing half-written remains.
    assert not (work / "iter_4.pth").exists() and not _temporary_files(disk)
    assert os.path.samefile(work / "latest.pth", work / "iter_2.pth")
    assert read_manifest(work) == {"iter_2.pth": file_sha256(work / "iter_2.pth")}
    assert load_checkpoint(work / "latest.pth")["iteration"] == 2

    (disk / "filler").unlink()
    said = []
    summary = train(recipe, work, resume=True, device="cpu", log=said.append)
    assert summary["start_iteration"] == 2
    assert f"resume: continuing from {work / 'latest.pth'} at iteration 2" in said
    assert _same_weights(load_checkpoint(work / "latest.pth")["state_dict"], final)


@pytest.mark.diskfull
def test_a_full_disk_fails_a_record_a_table_and_a_log_line_cleanly(small_disk, tmp_path, capsys):
    from benchmark.run.records import load_records, provenance, write_record

    disk = small_disk("4m")
    results = disk / "results"
    recipe = load_recipe(ROW, profile="smoke")
    record = {"kind": "eval", "recipe": ROW, "profile": "smoke", "seed": 0, "iterations": 2, "wall_time_s": 1.0,
              "gpu_hours": None, "metrics": {"aAcc": 90.0, "mIoU": 40.0, "mAcc": 50.0}, "mem_gb": None,
              "fps": None, "provenance": provenance(recipe, device="cpu")}
    first = write_record(results, record)
    readme = tmp_path / "README.md"
    readme.write_text("# results\n")
    assert cli_main(["tables", "--results", str(results), "--readme", str(readme)]) == 0
    assert cli_main(["collect", "--results", str(results)]) == 0
    tables, summary, log = results / "tables.md", results / "summary.csv", disk / "train.log.jsonl"
    append_line(log, '{"iteration": 1}')
    kept = {p: p.read_bytes() for p in (first, tables, summary, log)}
    capsys.readouterr()

    _fill(disk, leave=8192)
    with pytest.raises(NLBenchError, match="cannot append: .*(No space left|short write)"):
        append_line(log, json.dumps({"iteration": 2, "pad": "x" * 65536}))  # more than fits: no torn line
    _fill(disk, name="filler2")  # not a byte left
    with pytest.raises(NLBenchError, match="No space left on device") as info:
        write_record(results, record)
    assert str(first.parent) in str(info.value)
    assert cli_main(["tables", "--results", str(results), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"nlbench tables: error: {tables}: cannot write: No space left on device"]
    assert cli_main(["collect", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nlbench collect: error: {summary}: cannot write: No space left on device"

    # Every earlier file is intact and readable; no temporary file is left behind.
    assert {p: p.read_bytes() for p in kept} == kept
    assert [r.path for r in load_records(results)[0]] == [str(first)]
    assert not _temporary_files(disk)


@pytest.mark.diskfull
@pytest.mark.tensorboard
def test_a_full_disk_under_the_tensorboard_scalars_is_one_error_naming_the_work_dir(small_disk, capsys):
    pytest.importorskip("torch.utils.tensorboard")
    from benchmark.engine.tensorboard_sink import TensorBoardSink

    disk = small_disk("4m")
    sink = TensorBoardSink(disk / "work")
    sink.write({"event": "start", "iteration": 0, "resumed": False})
    line = {"iteration": 1, "loss": 1.0, "lr": 0.01, "time": 0.1, "data_time": 0.01, "peak_mem_gb": 0.5}
    sink.write(line)
    _fill(disk)  # not a byte left
    with pytest.raises(NLBenchError) as info:
        for it in range(2, 5000):  # the writer's buffer takes a few lines before a flush reaches the disk
            sink.write({**line, "iteration": it})
    assert str(info.value) == f"{disk / 'work'}: cannot write the TensorBoard scalars: No space left on device"
    sink.write({**line, "iteration": 9999})  # let go: nothing more is written, nothing raised
    for thread in threading.enumerate():  # TensorBoard's writer thread has died of the same error
        if type(thread).__name__ == "_AsyncWriterThread":
            thread.join(timeout=10)
    assert "Traceback" not in capsys.readouterr().err  # said once, by the main thread, not by the writer's


# ----------------------------------------------------------------------------- a corrupt latest.pth


def test_a_corrupt_latest_falls_back_to_the_newest_intact_checkpoint(reference, tmp_path):
    recipe, final = reference
    work = tmp_path / "work"
    with pytest.raises(TrainingInterrupted):
        train(recipe, work, device="cpu", log=QUIET, **_stop_at(3))  # iter_2.pth, then iter_3.pth = latest.pth
    latest = work / "latest.pth"
    assert os.path.samefile(latest, work / "iter_3.pth")
    assert set(read_manifest(work)) == {"iter_2.pth", "iter_3.pth"}

    # 4 KiB zeroed in the middle: torch's zip reader checks no CRC, the recorded sha256 does.
    size = latest.stat().st_size
    with open(latest, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\0" * 4096)
    assert file_sha256(latest) not in read_manifest(work).values()

    said = []
    summary = train(recipe, work, resume=True, device="cpu", log=said.append)
    warning = next(line for line in said if line.startswith("warning: resume:"))
    assert str(latest) in warning and str(work / "iter_2.pth") in warning and "sha256" in warning
    assert f"resume: continuing from {work / 'iter_2.pth'} at iteration 2" in said
    assert summary["start_iteration"] == 2 and summary["iterations"] == 4
    assert _same_weights(load_checkpoint(latest)["state_dict"], final)


def _zero_block(path: Path) -> None:
    """4 KiB zeroed in the middle: torch's zip reader checks no CRC, the recorded sha256 does."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\0" * 4096)


def _resume_cli(work: Path, recipe, capsys) -> list:
    """`nlbench train --resume` on ``work``: the lines it printed."""
    data_root = recipe.data.data_root
    args = ["train", ROW, "--profile", "smoke", "--work-dir", str(work), "--resume", "--device", "cpu"]
    for override in _overrides(Path(data_root), recipe.schedule.max_iters):
        args += ["--set", override]
    assert cli_main(args) == 0
    return capsys.readouterr().out.splitlines()


def test_a_corrupt_final_latest_in_a_copied_work_dir_is_pointed_at_the_intact_last_checkpoint(reference_run,
                                                                                             tmp_path, capsys):
    # A work dir copied without its hard links (cp -r, rsync without -H): latest.pth is a file of its
    # own. Only it is damaged; iter_4.pth, the final checkpoint, is intact.
    recipe, final, finished = reference_run
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    latest = work / "latest.pth"
    assert not os.path.samefile(latest, work / "iter_4.pth")
    _zero_block(latest)
    from benchmark.engine.train_checkpoints import verify_checkpoint

    with pytest.raises(NLBenchError, match="matches no sha256"):
        verify_checkpoint(latest)  # what the eval and bench stages would say before the repair

    said = _resume_cli(work, recipe, capsys)
    assert any(line.startswith(f"warning: resume: {latest} matches no sha256") and str(work / "iter_4.pth") in line
               for line in said), said
    assert f"resume: {latest} now names iter_4.pth again (replaced atomically)" in said
    assert said[-1].startswith(f"nothing left to do: {latest} already holds all 4 iterations")
    assert os.path.samefile(latest, work / "iter_4.pth") and verify_checkpoint(latest) == latest
    assert _same_weights(load_checkpoint(latest)["state_dict"], final)
    assert not _temporary_files(work)


def test_a_corrupt_final_latest_hard_linked_to_its_iter_file_trains_the_last_iterations_again(reference_run,
                                                                                              tmp_path, capsys):
    # As training leaves it (cp -a keeps the hard link): damaging latest.pth damages iter_4.pth too,
    # so the resume falls back to iter_2.pth and trains iterations 3 and 4 again.
    recipe, final, finished = reference_run
    work = tmp_path / "work"
    subprocess.run(["cp", "-a", str(finished), str(work)], check=True)
    latest = work / "latest.pth"
    assert os.path.samefile(latest, work / "iter_4.pth")
    _zero_block(latest)

    said = _resume_cli(work, recipe, capsys)
    assert any(line.startswith(f"warning: resume: {latest} matches no sha256") and str(work / "iter_2.pth") in line
               for line in said), said
    assert f"resume: {latest} now names iter_2.pth again (replaced atomically)" in said
    assert f"resume: continuing from {work / 'iter_2.pth'} at iteration 2" in said
    assert said[-1].startswith("done: 4 iterations")
    manifest = read_manifest(work)
    assert os.path.samefile(latest, work / "iter_4.pth") and file_sha256(latest) == manifest["iter_4.pth"]
    assert _same_weights(load_checkpoint(latest)["state_dict"], final)


def test_a_missing_latest_resumes_from_the_newest_iter_checkpoint_and_keeps_the_ledger(reference, tmp_path):
    # e.g. the first save could not point latest.pth (ENOSPC): the iter_N.pth files are still there,
    # and a resume must neither start again from scratch nor drop the earlier attempt from the ledger.
    recipe, final = reference
    work = tmp_path / "work"
    with pytest.raises(TrainingInterrupted):
        train(recipe, work, device="cpu", log=QUIET, **_stop_at(3))
    (work / "latest.pth").unlink()
    assert has_checkpoint(work) and not has_checkpoint(tmp_path / "empty")
    said = []
    summary = train(recipe, work, resume=True, device="cpu", log=said.append)
    warning = next(line for line in said if line.startswith("warning: resume:"))
    assert "latest.pth is missing" in warning and str(work / "iter_3.pth") in warning
    assert summary["start_iteration"] == 3 and summary["iterations"] == 4
    assert [a["outcome"] for a in read_attempts(work)] == ["interrupted", "done"]
    assert _same_weights(load_checkpoint(work / "latest.pth")["state_dict"], final)


def test_the_eval_stage_refuses_a_latest_that_is_not_what_training_wrote(tmp_path):
    from benchmark.run.job import Job, Resources, run_job
    from benchmark.run.state import read_state

    recipe = _recipe(tmp_path / "voc")
    work = tmp_path / "results" / "work"
    work.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, work / "iter_2.pth")
    os.link(work / "iter_2.pth", work / "latest.pth")
    (work / "checkpoints.sha256").write_text(f"{file_sha256(work / 'iter_2.pth')}  iter_2.pth\n")
    with open(work / "latest.pth", "r+b") as fh:  # damaged on disk after training
        fh.seek(40)
        fh.write(b"\xff" * 8)
    job = Job(recipe, 0, ("eval",), str(tmp_path / "results"), str(work), str(tmp_path / "voc"), Resources(), 10, None)
    with pytest.raises(NLBenchError, match="latest.pth matches no sha256 recorded in checkpoints.sha256"):
        run_job(job)
    assert read_state(work)["state"] == "failed"


# ----------------------------------------------------------------------------- attempts


def test_a_run_trained_in_three_attempts_records_their_totals(tmp_path):
    from benchmark.run.job import Job, Resources, StopFlag, run_job

    recipe = _recipe(tmp_path / "voc", max_iters=3)
    results, work = tmp_path / "results", tmp_path / "results" / "work"
    job = Job(recipe, 0, ("train",), str(results), str(work), str(tmp_path / "voc"), Resources(), 10, None)
    for _ in range(2):  # two attempts stopped (a SLURM preemption asks for it) one iteration in
        stop = StopFlag()
        stop.request()
        with pytest.raises(TrainingInterrupted):
            run_job(job, stop)
    written = run_job(job)

    entries = read_attempts(work)
    assert [(e["start_iteration"], e["iteration"], e["outcome"]) for e in entries] == [
        (0, 1, "interrupted"), (1, 2, "interrupted"), (2, 3, "done")]
    record = json.loads(Path(written["train"]).read_text())
    assert record["attempts"] == 3
    assert record["wall_time_s"] == pytest.approx(sum(e["wall_time_s"] for e in entries))
    assert record["wall_time_s"] > entries[-1]["wall_time_s"]
    assert record["mem_gb"] == max(e["peak_mem_gb"] for e in entries)
    assert record["gpu_hours"] is None  # CPU attempts: no GPU-hours


def test_a_corrupt_attempts_file_is_kept_aside_said_and_the_count_becomes_unknown(tmp_path):
    from benchmark.run.job import Job, Resources, StopFlag, run_job

    recipe = _recipe(tmp_path / "voc", max_iters=2)
    results, work = tmp_path / "results", tmp_path / "results" / "work"
    job = Job(recipe, 0, ("train",), str(results), str(work), str(tmp_path / "voc"), Resources(), 10, None)
    stop = StopFlag()
    stop.request()
    with pytest.raises(TrainingInterrupted):
        run_job(job, stop)
    damaged = (work / "attempts.json").read_bytes()[:-20]
    (work / "attempts.json").write_bytes(damaged)
    written = run_job(job)

    [aside] = work.glob("attempts.json.unreadable-*")
    assert aside.read_bytes() == damaged  # nothing lost
    log = (work / "job.log").read_text()
    assert f"warning: {work / 'attempts.json'}: cannot be read (kept as {aside.name})" in log
    [entry] = read_attempts(work)
    assert entry["start_iteration"] == 1 and entry["earlier_attempts_unknown"] is True
    record = json.loads(Path(written["train"]).read_text())
    assert record["attempts"] is None  # not known, rather than a wrong 1
    assert record["wall_time_s"] == pytest.approx(entry["wall_time_s"])  # what is known of the cost


def test_attempt_totals_sum_time_and_gpu_hours_and_take_the_peak():
    entries = [{"wall_time_s": 3600.0, "gpu_hours": 4.0, "peak_mem_gb": 7.5},
               {"wall_time_s": 1800.0, "gpu_hours": 2.0, "peak_mem_gb": 7.9},
               {"wall_time_s": 60.0, "gpu_hours": None, "peak_mem_gb": None}]  # lost before it measured
    assert totals(entries) == {"attempts": 3, "total_wall_time_s": 5460.0, "total_gpu_hours": 6.0,
                               "max_peak_mem_gb": 7.9}
