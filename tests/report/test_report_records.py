import hashlib
import json
import multiprocessing
import re

import pytest
from report_helpers import ROW, ROWS, make_record

from benchmark.errors import NLBenchError
from benchmark.recipe import load_recipe
from benchmark.report.collect import collect
from benchmark.run.records import SCHEMA, load_records, provenance, write_record


def test_write_record_layout_schema_and_roundtrip(tmp_path):
    path = write_record(tmp_path, make_record("eval", seed=3, miou=61.5))
    rel = path.relative_to(tmp_path).parts
    assert rel[:4] == ("records", ROW, "full", "seed3")
    assert re.fullmatch(r"eval-\d{8}T\d{12}Z-[0-9a-f]{8}\.json", rel[4])
    body = json.loads(path.read_text())
    assert body["schema"] == SCHEMA and body["created_at"].endswith("+00:00")
    records, warnings = load_records(tmp_path)
    assert warnings == [] and len(records) == 1
    assert records[0].metrics.mIoU == 61.5 and records[0].path == str(path)
    # no temporary file is left beside the record
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("change, key", [
    ({"kind": "evaluate"}, "kind"),
    ({"seed": "0"}, "seed"),
    ({"recipe": "../escape"}, "recipe"),
    ({"metrics": None}, "metrics"),
    ({"provenance": None}, "provenance"),
    ({"schema": "other/1"}, "schema"),
])
def test_write_record_rejects_bad_fields(tmp_path, change, key):
    record = make_record("eval")
    record.update(change)
    with pytest.raises(NLBenchError, match=key):
        write_record(tmp_path, record)
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").rglob("*.json"))


def test_nan_per_class_is_stored_as_null(tmp_path):
    record = make_record("eval")
    record["metrics"]["per_class"]["wall"] = {"IoU": float("nan"), "Acc": float("nan")}
    path = write_record(tmp_path, record)
    assert json.loads(path.read_text())["metrics"]["per_class"]["wall"] == {"IoU": None, "Acc": None}


def _write_many(args):
    results, start, count, barrier = args
    barrier.wait()  # every process starts writing at the same moment
    for i in range(start, start + count):
        write_record(results, make_record("eval", recipe=ROWS[i % len(ROWS)], seed=i // len(ROWS), miou=float(i)))


def test_concurrent_writers_collect_to_exactly_100(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Manager().Barrier(4)
    procs = [ctx.Process(target=_write_many, args=((tmp_path, k * 25, 25, barrier),)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records, warnings = load_records(tmp_path)
    assert warnings == [] and len(records) == 100
    assert sorted(r.metrics.mIoU for r in records) == [float(i) for i in range(100)]
    collected = collect(tmp_path)
    assert len(collected.per_seed) == 100 and collected.summary["n_seeds"].sum() == 100
    assert not [p for p in (tmp_path / "records").rglob("*") if p.name.startswith(".")]


def test_bad_records_are_skipped_with_a_warning_naming_the_file(tmp_path):
    good = write_record(tmp_path, make_record("eval", miou=42.0))
    folder = good.parent
    truncated = folder / "eval-truncated.json"
    truncated.write_text(good.read_text()[:60])
    corrupt = folder / "bench-corrupt.json"
    corrupt.write_bytes(b"\xff\xfe\x00garbage")
    foreign = folder / "foreign.json"
    foreign.write_text(json.dumps({"mIoU": 99.0}))
    partial = folder / "eval-partial.json"
    body = json.loads(good.read_text())
    del body["metrics"]["mIoU"]
    partial.write_text(json.dumps(body))
    wrong_type = folder / "eval-wrongtype.json"
    body = json.loads(good.read_text())
    body["seed"] = "zero"
    wrong_type.write_text(json.dumps(body))
    unknown = write_record(tmp_path, make_record("eval", recipe="nonlocal_r50-d8_4xb2-40k_nowhere-1x1"))
    in_flight = folder / ".eval-x.json.abc.tmp"  # a writer's temp file is not a record
    in_flight.write_text("{")

    records, warnings = load_records(tmp_path)
    assert [r.path for r in records] == [str(good)]
    assert len(warnings) == 6
    for path, why in [(truncated, "not valid JSON"), (corrupt, "UTF-8"), (foreign, "schema"),
                      (partial, "metrics.mIoU"), (wrong_type, "seed"), (unknown, "unknown recipe")]:
        assert [w for w in warnings if w.startswith(str(path)) and why in w], (path, warnings)
    # the unknown recipe is accepted when the caller knows it
    records, _ = load_records(tmp_path, known_recipes=ROWS + ["nonlocal_r50-d8_4xb2-40k_nowhere-1x1"])
    assert len(records) == 2


def test_provenance_fields(tmp_path):
    recipe = load_recipe(ROW, profile="smoke")
    ckpt = tmp_path / "iter_1.pth"
    ckpt.write_bytes(b"weights")
    prov = provenance(recipe, device="cpu", dtype="bfloat16", checkpoint=ckpt)
    assert prov["recipe_hash"] == recipe.hash
    assert prov["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert prov["device_name"] == "cpu" and prov["device_count"] == 1 and prov["dtype"] == "bfloat16"
    assert prov["torch_version"] and prov["nlbench_version"] and prov["hostname"]
    # the checkout is a git repository: a 40-hex commit and a dirty flag
    assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"]) and isinstance(prov["git_dirty"], bool)
    with pytest.raises(NLBenchError, match="missing.pth"):
        provenance(recipe, device="cpu", checkpoint=tmp_path / "missing.pth")


def test_provenance_reads_slurm_ids(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    prov = provenance(load_recipe(ROW), device="cpu")
    assert prov["slurm_job_id"] == "1234" and prov["slurm_array_task_id"] == "7"


def test_train_records_carry_status_and_the_guards_evidence(tmp_path):
    from benchmark.run.records import RecordStore

    def row():  # the job's question, asked under its lock: that row's folder, read now
        return RecordStore.read_row(tmp_path, ROW, "full", 0)

    evidence = {"verdict": "diverged", "message": "diverged at iter 8: mIoU 5.39, published 15.39"}
    diverged = {**make_record("train", created_at="2026-01-01T00:00:00+00:00"), "status": "diverged",
                "guard": evidence, "stopped_at_iteration": 8}
    write_record(tmp_path, diverged)
    assert row().kinds_done(ROW, "full", 0) == set()  # a stopped run's training is not done
    assert row().diverged(ROW, "full", 0).guard == evidence
    # Resumed to its end later: the newer, completed record wins.
    write_record(tmp_path, {**make_record("train"), "status": "completed", "guard": None})
    assert row().kinds_done(ROW, "full", 0) == {"train"}
    assert row().diverged(ROW, "full", 0) is None
    for change, key in [({"status": "stopped"}, "status"), ({"status": "diverged"}, "stopped_at_iteration"),
                        ({"guard": "diverged"}, "guard")]:
        with pytest.raises(NLBenchError, match=key):
            write_record(tmp_path, {**make_record("train"), **change})
    with pytest.raises(NLBenchError, match="only a train record can be diverged"):
        write_record(tmp_path, {**make_record("eval"), "status": "diverged", "stopped_at_iteration": 3})
