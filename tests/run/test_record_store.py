"""The results folder's owner (io/layout.py) and the record store (run/records.py): each command reads
every record file once, and the store answers what the launchers and reports ask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from report_helpers import ROW, make_record

from benchmark.cli import main as cli
from benchmark.engine.distributed import cpu_model
from benchmark.io.layout import ResultsLayout
from benchmark.recipe import REPO_ROOT
from benchmark.run import job as job_module
from benchmark.run import records
from benchmark.run.records import CheckpointSource, Kind, RecordStore, write_record
from benchmark.run.schema import EVAL_KINDS

SMOKE_ROW = "nonlocal_r50-d8_4xb4-20k_voc12aug-512x512"


def _fake_stage(job, stage, log, stop):
    """A stage's record without training or evaluating anything (what is counted is the reading)."""
    fields = {"metrics": {"aAcc": 90.0, "mIoU": 50.0, "mAcc": 60.0}} if stage in EVAL_KINDS else {}
    if stage == "bench":
        fields.update(fps=10.0, mem_gb=0.5)
    return job_module._record(job, stage, {"device": "cpu"}, None, **fields)


def test_run_all_then_report_open_each_record_file_once_per_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    opened = []
    real = records.read_record
    monkeypatch.setattr(records, "read_record", lambda path: opened.append(str(path)) or real(path))
    monkeypatch.setattr(job_module, "_run_stage", _fake_stage)

    args = ["--profile", "smoke", "--filter", SMOKE_ROW, "--results", str(results)]
    assert cli(["run-all", *args]) == 0
    files = sorted(str(p) for p in ResultsLayout(results).records.rglob("*.json"))
    assert len(files) == 4  # train, eval, eval ms+flip, bench
    # The plan and the job's claim found none yet; the end (status, guard summary, verdicts) read each once.
    assert Counter(opened) == Counter(files)
    opened.clear()
    assert cli(["report", "--results", str(results)]) == 0
    assert Counter(opened) == Counter(files)  # html read them twice before (collect, then load_records)
    opened.clear()
    assert cli(["run-all", *args]) == 0  # every stage done: the plan's read is the verdicts' too
    assert Counter(opened) == Counter(files)
    assert "nothing to run" in capsys.readouterr().out


def test_the_store_answers_per_row_per_source_and_newest(tmp_path):
    old = write_record(tmp_path, make_record("eval", miou=10.0, created_at="2026-01-01T00:00:00+00:00"))
    new = write_record(tmp_path, make_record("eval", miou=30.0, created_at="2026-01-02T00:00:00+00:00"))
    write_record(tmp_path, {**make_record("bench", fps=3.0, mem_gb=1.0), "checkpoint_source": "released"})
    write_record(tmp_path, {**make_record("train", created_at="2026-01-03T00:00:00+00:00"), "status": "diverged",
                            "guard": {"message": "diverged at iter 8"}, "stopped_at_iteration": 8})
    store = RecordStore.read(tmp_path)
    assert store.warnings == [] and len(store.records) == 4
    assert [r.path for r in store.row(ROW, "full", 0)] == [str(old), str(new), store.diverged(ROW, "full", 0).path]
    assert store.kinds_done(ROW, "full", 0) == {Kind.EVAL}  # the diverged train record is not done
    assert store.kinds_done(ROW, "full", 0, source="released") == {Kind.BENCH}
    assert store.diverged(ROW, "full", 0).stopped_at_iteration == 8
    newest = store.newest_by_kind()
    assert set(newest) == {(ROW, "full", CheckpointSource.TRAINED, 0), (ROW, "full", CheckpointSource.RELEASED, 0)}
    assert newest[ROW, "full", "trained", 0][Kind.EVAL].path == str(new)
    # A job's store, that row's folder alone, read under its lock, gives the same answers.
    row = RecordStore.read_row(tmp_path, ROW, "full", 0)
    assert row.kinds_done(ROW, "full", 0) == store.kinds_done(ROW, "full", 0)
    assert row.kinds_done(ROW, "full", 0, source="released") == {Kind.BENCH}
    assert row.diverged(ROW, "full", 0).path == store.diverged(ROW, "full", 0).path


def test_the_layout_names_every_path_of_the_results_folder(tmp_path):
    layout = ResultsLayout(tmp_path)
    key = f"smoke/{ROW}/released/seed2"
    assert layout.record_dir(ROW, "full", 3) == tmp_path / "records" / ROW / "full" / "seed3"
    assert layout.work_dir("smoke", ROW, 2) == tmp_path / "work" / "smoke" / ROW / "seed2"
    assert layout.work_dir("smoke", ROW, 2, "released") == tmp_path / "work" / "smoke" / ROW / "released" / "seed2"
    assert layout.lock_file(key) == tmp_path / "jobs" / "locks" / f"smoke__{ROW}__released__seed2.lock"
    assert layout.local_job_file(key).with_suffix(".out").parent == tmp_path / "jobs" / "local"
    assert layout.run_file("x") == tmp_path / "jobs" / "runs" / "x.json"
    assert [layout.summary_csv, layout.tables_md, layout.report, layout.plots] == [
        tmp_path / "summary.csv", tmp_path / "tables.md", tmp_path / "report", tmp_path / "plots"]
    assert ResultsLayout.of(str(tmp_path)) == layout and ResultsLayout.of(layout) is layout
    assert isinstance(layout.root, Path)


def test_the_model_keeps_what_the_dict_checks_accepted(tmp_path):
    """A train record's metrics are its last evaluation's, or empty; fields the schema does not name
    are kept; a record without checkpoint_source is trained (said by the model alone)."""
    for metrics in ({}, {"iteration": 8, "aAcc": None, "mIoU": None, "mAcc": None}, None):
        write_record(tmp_path, {**make_record("train"), "metrics": metrics, "start_iteration": 4})
    store = RecordStore.read(tmp_path)
    assert store.warnings == [] and len(store.records) == 3
    assert {r.model_extra["start_iteration"] for r in store.records} == {4}
    assert {r.source for r in store.records} == {CheckpointSource.TRAINED} == {"trained"}
    assert {f"{r.kind}" for r in store.records} == {"train"}  # the enums print as the JSON's strings



def test_a_records_provenance_names_the_processor_and_the_instruction_set_aten_ran_on(tmp_path):
    # A CPU result's rounding depends on both (docs/SMOKE.md); the instruction set is what ATen
    # dispatches to in the process that made the record, so a capped process records the cap.
    probe = ("import json; from benchmark.recipe import load_recipe; from benchmark.run.records import provenance; "
             f"p = provenance(load_recipe({ROW!r}), device='cpu'); "
             "print(json.dumps([p['cpu_model'], p['cpu_capability']]))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [cpu_model(), "DEFAULT"]
    write_record(tmp_path, make_record("eval", provenance={"cpu_model": "Some CPU", "cpu_capability": "AVX2"}))
    (record,) = records.load_records(tmp_path)[0]
    assert (record.provenance.cpu_model, record.provenance.cpu_capability) == ("Some CPU", "AVX2")
