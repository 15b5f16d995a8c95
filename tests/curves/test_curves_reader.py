"""The log reader on logs written in exactly the published formats, every trap of docs/CURVES.md, and
the checks on curves built from them (no training here: the logs are written as MMSeg wrote them)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import pytest
from conftest import mmseg_poly_lr

from benchmark.curves.checks import DIVERGED, DRIFTING, ON_TRACK, Settings, assess, eval_margins, one_sided_z
from benchmark.curves.reader import latest_iteration, read_curve
from benchmark.errors import NLBenchError

MAX_ITERS = 40000
ENV_INFO = ("sys.platform: linux\nPython: 3.7.7 (default, May  7 2020, 21:25:33) [GCC 7.3.0]\nCUDA available: True\n"
            "GPU 0,1,2,3: Tesla V100-SXM2-32GB\nPyTorch: 1.5.0\nMMCV: 0.6.2")
CONFIG = ("norm_cfg = dict(type='SyncBN', requires_grad=True)\ndata = dict(\n    samples_per_gpu=2,\n"
          "    workers_per_gpu=2)\ntotal_iters = 40000\nrunner = dict(type='IterBasedRunner', max_iters=40000)\n")


def published_lr(iteration: int, base: float = 0.01, max_iters: int = MAX_ITERS) -> float:
    """What a 0.x train line says at ``iteration``: the poly lr that iteration ran with, to 5 decimals."""
    return round(mmseg_poly_lr(base, 1e-4, 0.9, iteration, max_iters), 5)


def train_line(iteration: int, loss: float, lr=None, mode: str = "train", epoch: int = 1) -> str:
    """A 2020 NonLocal train line, keys in mmcv's order, floats rounded to 5 decimals."""
    decode, aux = loss / 1.4, loss * 0.4 / 1.4
    entry = OrderedDict([
        ("mode", mode), ("epoch", epoch), ("iter", iteration), ("lr", published_lr(iteration) if lr is None else lr),
        ("memory", 7390), ("data_time", 0.01252), ("decode.loss_seg", round(decode, 5)),
        ("decode.acc_seg", 71.2231), ("aux.loss_seg", round(aux, 5)), ("aux.acc_seg", 69.0011),
        ("loss", round(loss, 5)), ("time", 0.88411)])
    return json.dumps(entry)


def val_line(iteration: int, miou: float, mode: str = "val", images: int = 500) -> str:
    """A 0.x val line: ``iter`` counts validation images, the metrics are fractions."""
    entry = OrderedDict([("mode", mode), ("epoch", 11), ("iter", images), ("lr", published_lr(iteration)),
                         ("aAcc", 0.9501), ("mIoU", round(miou / 100, 4)), ("mAcc", 0.7823)])
    return json.dumps(entry)


def meta_line() -> str:
    return json.dumps({"env_info": ENV_INFO, "seed": 0, "exp_name": "nonlocal_r50-d8_512x1024_40k_cityscapes.py",
                       "config": CONFIG, "mmseg_version": "0.5.0+unknown"})


def published_log(path: Path, losses=None, mious=(60.0, 70.0), meta: bool = True, every: int = 2000,
                  eval_every: int = 4000, start: int = 50, stop: int = 8000) -> Path:
    """A published-shape 0.x log: meta, a train line every ``every`` iterations (MMSeg: 50), a val line
    after the train line of each eval iteration."""
    lines = [meta_line()] if meta else []
    its = list(range(start, stop + 1, every)) if every != 50 else list(range(start, stop + 1, 50))
    for n, it in enumerate(its):
        lines.append(train_line(it, losses(it) if losses else 1.5 - n * 0.01))
        if it % eval_every == 0:
            lines.append(val_line(it, mious[it // eval_every - 1]))
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- 0.x traps


def test_published_0x_log_with_meta_line(tmp_path):
    curve = read_curve(published_log(tmp_path / "a.log.json", every=50))
    assert curve.format == "mmseg0x" and curve.warnings == ()
    assert [p.iteration for p in curve.train][:3] == [50, 100, 150] and len(curve.train) == 160
    first = curve.train[0]
    assert first.lr == 0.00999 and first.memory_mib == 7390 and first.time_s == 0.88411
    assert first.terms["decode.loss_seg"] == pytest.approx(1.5 / 1.4, abs=1e-5) and "aux.acc_seg" in first.terms
    # val lines: iter 500 is the number of val images; the training iteration is the train line's before.
    assert [(e.iteration, e.mIoU, e.aAcc, e.mAcc) for e in curve.evals] == [(4000, 60.0, 95.01, 78.23),
                                                                          (8000, 70.0, 95.01, 78.23)]
    # The meta line says the schedule (config text) and the batch (4 GPUs in env_info x samples_per_gpu 2).
    assert curve.max_iters == 40000 and curve.effective_batch == 8
    assert curve.peak_memory_mib == 7390


def test_log_without_meta_line_and_val_lines_written_as_train(tmp_path):
    # Some versions write val results with "mode": "train"; some logs have no meta line.
    path = tmp_path / "b.log.json"
    path.write_text("\n".join([train_line(50, 1.2), train_line(100, 1.1), val_line(100, 55.5, mode="train"),
                               train_line(150, 1.0)]) + "\n")
    curve = read_curve(path)
    assert [p.iteration for p in curve.train] == [50, 100, 150]
    assert [(e.iteration, e.mIoU) for e in curve.evals] == [(100, 55.5)]
    assert curve.max_iters is None and curve.effective_batch is None


def test_lr_as_a_dict_of_parameter_groups(tmp_path):
    path = tmp_path / "c.log.json"
    path.write_text(train_line(50, 1.0, lr={"backbone": 0.00999, "decode_head": 0.0999}) + "\n")
    assert read_curve(path).train[0].lr == 0.00999


def test_resumed_run_files_merge_by_iteration_later_file_winning(tmp_path):
    # The first file ran to 3000 (checkpoint at 2000), the resumed one continued from 2000: 2050-3000
    # are logged twice and the later file's lines win. The order the files are given in does not matter.
    first = tmp_path / "20200605_210748.log.json"
    first.write_text("\n".join([meta_line()] + [train_line(it, 2.0) for it in range(50, 3001, 50)]) + "\n")
    second = tmp_path / "20200606_101010.log.json"
    second.write_text("\n".join([meta_line()] + [train_line(it, 1.0) for it in range(2050, 4001, 50)]
                                + [val_line(4000, 61.0)]) + "\n")
    for order in ([first, second], [second, first]):
        curve = read_curve(order)
        by_it = {p.iteration: p.loss for p in curve.train}
        assert len(by_it) == 80 and by_it[2000] == 2.0 and by_it[2050] == 1.0 and by_it[3000] == 1.0
        assert curve.sources == (str(first), str(second))
        assert [(e.iteration, e.mIoU) for e in curve.evals] == [(4000, 61.0)]
    # A folder of one run's files reads the same.
    assert read_curve(tmp_path).train == read_curve([first, second]).train


def test_malformed_lines_warn_with_file_and_line(tmp_path):
    path = tmp_path / "d.log.json"
    path.write_text("\n".join([meta_line(), train_line(50, 1.0), '{"mode": "train", "iter": 10', "[1, 2]",
                               json.dumps({"mode": "train", "iter": "x", "lr": 0.01}), val_line(100, 1.0, images=500)
                               .replace('"mode": "val", ', ''), train_line(100, 0.9)]) + "\n")
    curve = read_curve(path)
    assert [p.iteration for p in curve.train] == [50, 100]
    assert len(curve.warnings) == 3, curve.warnings
    assert curve.warnings[0].startswith(f"{path}:line 3: skipped: not valid JSON")
    assert curve.warnings[1] == f"{path}:line 4: skipped: expected a JSON object, got list"
    assert curve.warnings[2].startswith(f"{path}:line 5: skipped: 'iter' is 'x'")
    # The val line without mode is recognised by its metrics, at the train line before it (50).
    assert [e.iteration for e in curve.evals] == [50]


def test_val_line_before_any_train_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "e.log.json"
    path.write_text("\n".join([val_line(4000, 60.0), train_line(4050, 1.0)]) + "\n")
    curve = read_curve(path)
    assert curve.evals == () and "training iteration is unknown" in curve.warnings[0]


@pytest.mark.parametrize("content, expected", [
    (None, "cannot read training log"),
    (b"\xff\xfe binary", "not UTF-8 text"),
    (b"", "no train or evaluation line"),
    (b"<html>404 Not Found</html>\n", "no train or evaluation line"),
])
def test_unreadable_file_is_one_clear_error(tmp_path, content, expected):
    path = tmp_path / "f.log.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NLBenchError) as err:
        read_curve(path)
    assert str(err.value).startswith(str(path)) and expected in str(err.value)


def test_a_folder_without_logs_is_an_error(tmp_path):
    with pytest.raises(NLBenchError, match="no training log here"):
        read_curve(tmp_path)


# ----------------------------------------------------------------------------- where an evaluation sits

EVALS_40K = list(range(4000, 40001, 4000))
CONFIG_WITH_EVALUATION = CONFIG + "evaluation = dict(interval=4000, metric='mIoU')\n"


def log_2020(path: Path, val_mode: str = "val", meta=None, start: int = 50, stop: int = MAX_ITERS,
             resumed_at=None) -> Path:
    """A log as mmcv < 1.3.11 wrote it (the published NonLocal logs): a train line every 50 iterations
    except at an evaluation iteration (every 4000), whose val line (``iter`` = 500 validation images)
    follows the 3950 line; the next train line is 4050. ``resumed_at``: the file of a run resumed from
    that checkpoint, which trains that iteration again and evaluates it again (no train line either)."""
    lines = [meta] if meta else []
    if resumed_at is not None:
        lines.append(val_line(resumed_at, 61.0 + resumed_at / 4000, mode=val_mode))
    for it in range(start, stop + 1, 50):
        if it % 4000:
            lines.append(train_line(it, 1.0))
        if it % 4000 == 0 and it != resumed_at:
            lines.append(val_line(it, 60.0 + it / 4000, mode=val_mode))
    path.write_text("\n".join(lines) + "\n")
    return path


def log_1311(path: Path, start: int = 50, stop: int = MAX_ITERS, first_alone: bool = False) -> Path:
    """A log as mmcv >= 1.3.11 writes it: the train line of 4000, then the val line (mode "val").
    ``first_alone``: a resumed file, whose first line is the checkpoint's iteration trained again."""
    lines = [meta_line()]
    its = ([start] if first_alone else []) + list(range(start + 50 if first_alone else start, stop + 1, 50))
    for it in its:
        lines.append(train_line(it, 1.0))
        if it % 4000 == 0:
            lines.append(val_line(it, 60.0 + it / 4000))
    path.write_text("\n".join(lines) + "\n")
    return path


def _meta_2020() -> str:
    """The 2020 logs' meta line: env_info, seed, exp_name; no config text."""
    return json.dumps({"env_info": ENV_INFO, "seed": 0, "exp_name": "nonlocal_r50-d8_512x1024_40k_cityscapes.py"})


@pytest.mark.parametrize("val_mode", ["val", "train"])
@pytest.mark.parametrize("interval_from", ["config text", "schedule", "the skipped train line"])
def test_2020_pattern_puts_each_evaluation_at_its_eval_iteration(tmp_path, val_mode, interval_from):
    meta = {"config text": json.dumps({"env_info": ENV_INFO, "seed": 0, "config": CONFIG_WITH_EVALUATION}),
            "schedule": _meta_2020(), "the skipped train line": _meta_2020()}[interval_from]
    path = log_2020(tmp_path / "a.log.json", val_mode=val_mode, meta=meta)
    lines = path.read_text().splitlines()
    assert '"iter": 3950' in lines[79] and '"iter": 500' in lines[80] and '"iter": 4050' in lines[81]
    schedule = {"eval_interval": 4000, "max_iters": MAX_ITERS} if interval_from == "schedule" else {}
    curve = read_curve(path, **schedule)
    assert [e.iteration for e in curve.evals] == EVALS_40K and curve.warnings == ()
    assert [e.mIoU for e in curve.evals] == [60.0 + k for k in range(1, 11)]
    assert 4000 not in {p.iteration for p in curve.train} and len(curve.train) == 790


def test_mmcv_1311_pattern_train_line_then_val_line(tmp_path):
    path = log_1311(tmp_path / "a.log.json")
    for schedule in ({}, {"eval_interval": 4000, "max_iters": MAX_ITERS}):
        curve = read_curve(path, **schedule)
        assert [e.iteration for e in curve.evals] == EVALS_40K and len(curve.train) == 800


def test_resumed_pairs_merge_with_the_evaluation_of_the_resumed_iteration(tmp_path):
    # 2020: the first file stopped after 17000 (last checkpoint 16000); the resumed file trains 16000
    # again and evaluates it again: it opens with that val line, then 16050.
    first = log_2020(tmp_path / "20200605_210748.log.json", meta=_meta_2020(), stop=17000)
    second = log_2020(tmp_path / "20200606_101010.log.json", meta=_meta_2020(), start=16050, resumed_at=16000)
    curve = read_curve([second, first])
    assert [e.iteration for e in curve.evals] == EVALS_40K and curve.warnings == ()
    assert curve.sources == (str(first), str(second))
    # mmcv >= 1.3.11: the resumed file's first line is 16000's train line (one iteration), then its val line.
    first = log_1311(tmp_path / "b1.log.json", stop=17000)
    second = log_1311(tmp_path / "b2.log.json", start=16000, first_alone=True)
    assert [e.iteration for e in read_curve([first, second]).evals] == EVALS_40K


def test_nlbench_smoke_reference_eval_interval_not_a_multiple_of_the_log_interval(tmp_path):
    # nlbench's own 0.x log states its interval (meta key and recipe YAML): an evaluation at 45 between
    # the train lines of 40 and 50, and the last one at the end (90) without its train line.
    meta = {"env_info": "", "seed": 0, "config": "schedule:\n  max_iters: 90\n  eval_interval: 45\n", "max_iters": 90}
    lines = [json.dumps(meta)] + [train_line(it, 1.0) for it in range(10, 41, 10)] + [val_line(45, 50.0, images=4)]
    lines += [train_line(it, 1.0) for it in range(50, 81, 10)] + [val_line(90, 55.0, images=4)]
    path = tmp_path / "smoke.log.json"
    path.write_text("\n".join(lines) + "\n")
    assert [(e.iteration, e.mIoU) for e in read_curve(path).evals] == [(45, 50.0), (90, 55.0)]


@pytest.mark.parametrize("pattern", ["mmcv1.3.11", "2020"])
def test_nlbench_0x_writer_in_either_pattern_reads_back_at_the_eval_iterations(tmp_path, pattern):
    from benchmark.engine.mmseg_log import MMSeg0xLogSink
    from benchmark.recipe import load_recipe

    recipe = load_recipe("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024", ["schedule.max_iters=12",
                         "schedule.eval_interval=4", "schedule.log_interval=2"], profile="smoke")
    sink = MMSeg0xLogSink(tmp_path / "train.log.json", recipe, fresh=True, pattern=pattern)
    sink.write({"event": "start", "iteration": 0, "max_iters": 12, "effective_batch": 2, "train_images": 4,
                "val_images": 2})
    for it in range(2, 13, 2):
        sink.write({"iteration": it, "lr": 0.01, "loss": 1.0, "loss_decode": 0.7, "loss_aux": 0.3, "time": 0.1})
        if it % 4 == 0:
            sink.write({"event": "eval", "iteration": it, "aAcc": 50.0, "mIoU": 5.39, "mAcc": 10.0})
    lines = [json.loads(line) for line in (tmp_path / "train.log.json").read_text().splitlines()]
    trains = [e["iter"] for e in lines if e.get("mode") == "train"]
    assert trains == ([2, 4, 6, 8, 10, 12] if pattern == "mmcv1.3.11" else [2, 6, 10])
    assert [e["iter"] for e in lines if e.get("mode") == "val"] == [2, 2, 2] and lines[0]["eval_interval"] == 4
    assert [(e.iteration, e.mIoU) for e in read_curve(tmp_path / "train.log.json").evals] == [
        (4, 5.39), (8, 5.39), (12, 5.39)]


def test_a_run_is_compared_at_every_eval_point_of_each_pattern(tmp_path):
    run = {"seed0": _run_log(tmp_path / "run.jsonl", stop=MAX_ITERS, mious=[60.0 + k for k in range(1, 11)])}
    for name, path in [("2020", log_2020(tmp_path / "a.log.json", meta=_meta_2020())),
                       ("2020 train", log_2020(tmp_path / "b.log.json", val_mode="train")),
                       ("1.3.11", log_1311(tmp_path / "c.log.json"))]:
        found = assess(run, read_curve(path), max_iters=MAX_ITERS)
        assert [r.iteration for r in found.evals] == EVALS_40K, name
        assert all(r.delta == 0.0 for r in found.evals) and found.verdict == ON_TRACK, (name, found.summary())


# ----------------------------------------------------------------------------- 1.x and nlbench


def test_mmengine_scalars_json(tmp_path):
    # 1.x: step is the training iteration everywhere; metrics in percent; memory's peak is reset every
    # interval, so the run's peak is the max over lines.
    lines = [{"lr": 0.00999, "base_lr": 0.00999, "data_time": 0.01, "loss": 1.5, "decode.loss_ce": 1.1,
              "decode.acc_seg": 70.1, "aux.loss_ce": 0.4, "aux.acc_seg": 68.0, "time": 0.9, "iter": 50,
              "memory": 7000, "step": 50},
             {"lr": 0.00998, "base_lr": 0.00998, "data_time": 0.01, "loss": 1.4, "decode.loss_ce": 1.0,
              "decode.acc_seg": 71.0, "aux.loss_ce": 0.4, "aux.acc_seg": 69.0, "time": 0.9, "iter": 100,
              "memory": 7400, "step": 100},
             {"aAcc": 95.1, "mIoU": 69.12, "mAcc": 78.23, "data_time": 0.02, "time": 0.3, "step": 100}]
    path = tmp_path / "vis_data" / "scalars.json"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    curve = read_curve(tmp_path)  # the run folder: its vis_data/scalars.json
    assert curve.format == "mmengine"
    assert [(p.iteration, p.lr, p.loss) for p in curve.train] == [(50, 0.00999, 1.5), (100, 0.00998, 1.4)]
    assert curve.train[0].terms["decode.loss_ce"] == 1.1
    assert [(e.iteration, e.mIoU, e.aAcc) for e in curve.evals] == [(100, 69.12, 95.1)]
    assert curve.peak_memory_mib == 7400


def test_nlbench_jsonl(tmp_path):
    path = tmp_path / "train.log.jsonl"
    lines = [{"event": "start", "iteration": 0, "max_iters": 100, "effective_batch": 2, "time": 1.0},
             {"iteration": 10, "lr": 0.0457, "loss": 3.1, "loss_decode": 2.2, "loss_aux": 0.9, "time": 0.1,
              "data_time": 0.01, "peak_mem_gb": 0.5, "mem_kind": "peak_rss"},
             {"event": "eval", "iteration": 10, "aAcc": 70.0, "mIoU": 40.5, "mAcc": 50.0},
             {"event": "end", "iteration": 100, "time": 2.0}]
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    curve = read_curve(path)
    assert curve.format == "nlbench" and curve.max_iters == 100 and curve.effective_batch == 2
    assert curve.train[0].memory_mib == 512.0 and curve.train[0].terms == {"loss_decode": 2.2, "loss_aux": 0.9}
    assert [(e.iteration, e.mIoU) for e in curve.evals] == [(10, 40.5)]



def test_an_nlbench_line_with_an_miou_is_an_evaluation_without_its_event_key(tmp_path):
    path = tmp_path / "train.log.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in ({"iteration": 4, "loss": 1.0}, {"iteration": 4, "mIoU": 14.0})))
    curve = read_curve(path)
    assert [(p.iteration, p.loss) for p in curve.train] == [(4, 1.0)]
    assert [(e.iteration, e.mIoU) for e in curve.evals] == [(4, 14.0)]


def test_latest_iteration_is_the_newest_line_that_names_one_event_lines_included(tmp_path):
    path = tmp_path / "train.log.jsonl"
    assert latest_iteration(path) is None  # no log yet
    path.write_text(json.dumps({"event": "start", "iteration": 0}) + "\n")
    assert latest_iteration(path) == 0  # started, nothing trained
    lines = [{"iteration": 30, "loss": 1.0}, {"event": "interrupted", "iteration": 37},
             {"event": "start", "iteration": 30}, {"iteration": 31, "loss": 1.0}, {"no": "iteration"}]
    path.write_text("x" * 70000 + "\n" + "\n".join(json.dumps(e) for e in lines) + "\nnot json\n")
    assert latest_iteration(path) == 31  # a resumed run is where it is now, not where it got before
    path.write_text("\n".join(json.dumps(e) for e in lines[:2]) + "\n")
    assert latest_iteration(path) == 37


# ----------------------------------------------------------------------------- checks


def _run_log(path: Path, base_lr: float = 0.01, every: int = 50, mious=(60.0, 70.0), loss=lambda it: 1.0,
             stop: int = 8000):
    """An nlbench run's train.log.jsonl: exact (unrounded) lr, loss means over its own interval."""
    lines = [{"event": "start", "iteration": 0, "max_iters": MAX_ITERS, "effective_batch": 8}]
    for it in range(every, stop + 1, every):
        lines.append({"iteration": it, "lr": mmseg_poly_lr(base_lr, 1e-4, 0.9, it, MAX_ITERS), "loss": loss(it)})
        if it % 4000 == 0:
            lines.append({"event": "eval", "iteration": it, "aAcc": 95.0, "mIoU": mious[it // 4000 - 1],
                          "mAcc": 80.0})
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    return read_curve(path)


def test_schedule_matches_to_five_decimals_and_a_wrong_lr_shows_at_the_first_logged_iteration(tmp_path):
    reference = read_curve(published_log(tmp_path / "ref.log.json", every=50, losses=lambda it: 1.0))
    good = assess({"seed0": _run_log(tmp_path / "good.jsonl")}, reference, max_iters=MAX_ITERS)
    assert good.schedule.ok and good.schedule.compared == 160 and good.schedule.first_iteration == 50
    assert good.verdict == ON_TRACK, good.summary()
    wrong = assess({"seed0": _run_log(tmp_path / "wrong.jsonl", base_lr=0.02)}, reference, max_iters=MAX_ITERS)
    assert wrong.schedule.mismatch[0] == 50 and wrong.schedule.mismatch[2] == 0.00999
    assert "lr at iteration 50 is 0.01998, the reference says 0.00999" in wrong.schedule.describe()
    # Beyond the printed rounding at an iteration of the reference's own schedule: certain, diverged there.
    assert wrong.schedule.certain and wrong.verdict == DIVERGED and wrong.diverged_at == 50
    assert wrong.reasons[0].startswith("schedule differs: lr at iteration 50 is 0.01998")
    # One printed unit off (a rounding tie) differs but is not certain: drifting.
    shifted = [p.__class__(**{**p.__dict__, "lr": p.lr + 0.00001}) if p.iteration == 100 else p
               for p in reference.train]
    tie = assess({"seed0": _run_log(tmp_path / "good2.jsonl")}, reference.__class__(
        **{**reference.__dict__, "train": tuple(shifted)}), max_iters=MAX_ITERS)
    assert tie.schedule.mismatch[0] == 100 and not tie.schedule.certain
    assert tie.verdict == DRIFTING and "schedule differs" in tie.reasons


def test_mIoU_margins_from_the_noise_model_and_two_consecutive_misses_diverge(tmp_path):
    # Two eval points (60, 70): no fluctuation to measure, so the spread is the floor, 0.5; one seed
    # against one: sigma 0.5 * sqrt(2); one point can end a stop (K - patience + 1 = 1) and it gets the
    # mIoU half of the 1% budget: z(0.005); drifting: z(0.1 / 2).
    reference = read_curve(published_log(tmp_path / "ref.log.json", every=50, losses=lambda it: 1.0))
    [m1, m2] = eval_margins([60.0, 70.0], [[], []], Settings())
    assert m1.spread == 0.5 and m1.sigma == pytest.approx(0.5 * math.sqrt(2))
    assert m1.stop == pytest.approx(one_sided_z(0.005) * 0.5 * math.sqrt(2))
    assert m1.stop == pytest.approx(2.5758 * 0.70711, abs=1e-4)  # z(0.995) from a normal table
    assert m1.drift == pytest.approx(1.6449 * 0.70711, abs=1e-4)  # z(0.95)
    fine = assess({"s0": _run_log(tmp_path / "a.jsonl", mious=(59.0, 69.5))}, reference, max_iters=MAX_ITERS)
    assert fine.verdict == ON_TRACK and [r.below for r in fine.evals] == [False, False]
    one = assess({"s0": _run_log(tmp_path / "b.jsonl", mious=(58.0, 69.5))}, reference, max_iters=MAX_ITERS)
    assert one.verdict == DRIFTING and [r.verdict for r in one.evals] == [DRIFTING, DRIFTING]
    assert [r.below for r in one.evals] == [True, False]  # one point below the stop margin is not a stop
    two = assess({"s0": _run_log(tmp_path / "c.jsonl", mious=(50.0, 60.0))}, reference, max_iters=MAX_ITERS)
    assert two.verdict == DIVERGED and two.diverged_at == 8000
    assert [r.verdict for r in two.evals] == [DRIFTING, DIVERGED]
    # Several seeds: judged by their mean, each seed listed; their own spread widens the margins.
    seeds = assess({"s0": _run_log(tmp_path / "d.jsonl", mious=(50.0, 60.0)),
                    "s1": _run_log(tmp_path / "e.jsonl", mious=(66.0, 80.0))}, reference, max_iters=MAX_ITERS)
    assert seeds.evals[1].seeds == {"s0": 60.0, "s1": 80.0} and seeds.evals[1].mean == 70.0
    assert seeds.evals[0].spread == pytest.approx(math.sqrt(128)) and seeds.verdict == ON_TRACK


def test_loss_band_over_the_published_interval_and_a_non_finite_loss(tmp_path):
    reference = read_curve(published_log(tmp_path / "ref.log.json", every=50, losses=lambda it: 1.0))
    # nlbench logs every 10 iterations: its points are averaged over each published 50-iteration window.
    wobble = _run_log(tmp_path / "a.jsonl", every=10, loss=lambda it: 1.1 if it % 20 else 0.9)
    ok = assess({"s0": wobble}, reference, max_iters=MAX_ITERS)
    assert ok.loss.ok and ok.loss.compared == 160 - 16  # the first 2% (800 iterations) is warm-up
    assert abs(ok.loss.worst[1] - 1.0) <= 0.021
    # 30% above from 6000 on: beyond the 15% band and the (here nil) noise, the stop rule fires within
    # one block of LOSS_BLOCK windows.
    high = assess({"s0": _run_log(tmp_path / "b.jsonl", loss=lambda it: 1.3 if it > 6000 else 1.0)}, reference,
                  max_iters=MAX_ITERS)
    assert high.verdict == DIVERGED and 6050 <= high.loss.failed_at <= 6250
    assert high.diverged_at == high.loss.failed_at
    assert "ABOVE THE REFERENCE at iteration" in high.loss.describe()
    # 30% below: out of the band (drifting), never a stop.
    low = assess({"s0": _run_log(tmp_path / "l.jsonl", loss=lambda it: 0.7 if it > 6000 else 1.0)}, reference,
                 max_iters=MAX_ITERS)
    assert low.verdict == DRIFTING and low.loss.failed_at is None and 6050 <= low.loss.drift_at <= 6250
    assert "OUT OF BAND from iteration" in low.loss.describe()
    single = assess({"s0": _run_log(tmp_path / "c.jsonl", loss=lambda it: 1.3 if it == 6000 else 1.0)}, reference,
                    max_iters=MAX_ITERS)
    assert single.loss.ok and single.loss.outside == (6000,)  # one noisy window alone does not count
    nan = assess({"s0": _run_log(tmp_path / "d.jsonl", loss=lambda it: math.nan if it >= 300 else 1.0)}, reference,
                 max_iters=MAX_ITERS)
    assert nan.verdict == DIVERGED and nan.loss.nonfinite == 300


def test_a_1x_reference_point_weighs_as_the_mean_of_its_last_10_iterations(tmp_path):
    # mmengine writes, every 50 iterations, the mean of the last 10 (LogProcessor window 10). A run
    # logging every 10 iterations: its point at each multiple of 50 covers exactly those 10 iterations.
    lines = [{"lr": 0.01, "base_lr": 0.01, "loss": 1.0, "time": 0.9, "iter": it, "step": it}
             for it in range(50, 8001, 50)]
    path = tmp_path / "vis_data" / "scalars.json"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    reference = read_curve(tmp_path)
    assert {p.span for p in reference.train} == {10}
    run = _run_log(tmp_path / "a.jsonl", every=10, loss=lambda it: 1.0 if it % 50 == 0 else 2.0)
    found = assess({"s0": run}, reference, max_iters=MAX_ITERS)
    assert found.loss.compared > 100 and found.loss.ok and found.loss.worst[1] == 1.0
    # The same numbers as a 0.x log (50-iteration means): the run's window mean is (4 x 2 + 1) / 5 = 1.8.
    zero_x = read_curve(published_log(tmp_path / "ref.log.json", every=50, losses=lambda it: 1.0))
    assert assess({"s0": run}, zero_x, max_iters=MAX_ITERS).loss.worst[1] == pytest.approx(1.8)


def test_effective_batch_differing_is_said_beside_the_verdict(tmp_path):
    reference = read_curve(published_log(tmp_path / "ref.log.json", every=50, losses=lambda it: 1.0))
    run = _run_log(tmp_path / "a.jsonl")
    small = assess({"s0": run.__class__(**{**run.__dict__, "effective_batch": 2})}, reference, max_iters=MAX_ITERS)
    assert small.batch_note == "effective batch 2, published 8"
    assert small.summary() == "on track [effective batch 2, published 8]"


def _poly(iteration: int, power: float, max_iters: int) -> float:
    """The lr iteration ``iteration`` (1-based, as a 0.x line says it) runs with: base 0.01, min 1e-4."""
    return mmseg_poly_lr(0.01, 1e-4, power, iteration, max_iters)


def _lr_run(path: Path, lr) -> object:
    lines = [{"event": "start", "iteration": 0, "max_iters": MAX_ITERS, "effective_batch": 8}]
    lines += [{"iteration": it, "lr": lr(it), "loss": 1.0} for it in range(50, 8001, 50)]
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    return read_curve(path)


@pytest.mark.parametrize("power, run_max_iters", [(1.0, MAX_ITERS), (0.9, 80000)])
def test_a_wrong_poly_power_or_max_iters_is_diverged_where_the_lr_is_beyond_the_rounding(tmp_path, power,
                                                                                         run_max_iters):
    # The reference: the published schedule (power 0.9, 40k), every lr printed to 5 decimals.
    lines = [meta_line()] + [json.dumps({"mode": "train", "epoch": 1, "iter": it,
                                         "lr": round(_poly(it, 0.9, MAX_ITERS), 5), "loss": 1.0})
                             for it in range(50, 8001, 50)]
    (tmp_path / "ref.log.json").write_text("\n".join(lines) + "\n")
    reference = read_curve(tmp_path / "ref.log.json")
    run = _lr_run(tmp_path / "run.jsonl", lambda it: _poly(it, power, run_max_iters))
    units = {it: abs(round(_poly(it, power, run_max_iters), 5) - round(_poly(it, 0.9, MAX_ITERS), 5)) / 1e-5
             for it in range(50, 8001, 50)}
    first = min(it for it, u in units.items() if u > 0.5)
    beyond = min(it for it, u in units.items() if u > 1.5)
    assert round(units[first]) == 1 and beyond > first  # it first differs by one unit: a rounding tie there
    assert max(units.values()) > 10  # and by many further on
    # The run states the reference's length (40k) while its lr follows another schedule.
    found = assess({"s0": run}, reference, max_iters=MAX_ITERS)
    assert found.schedule.mismatch[0] == first and found.schedule.certain_at[0] == beyond
    assert found.schedule.certain and found.verdict == DIVERGED and found.diverged_at == beyond
    assert found.diverged_by == "schedule" and f"lr at iteration {beyond} is" in found.reasons[0]
    assert [p.iteration for p in found.evals] == []


def test_the_check_that_made_a_run_diverged_is_named(tmp_path):
    from benchmark.engine.guard import Guard

    reference = read_curve(published_log(tmp_path / "ref.log.json", every=50, losses=lambda it: 1.0))
    miou = assess({"s0": _run_log(tmp_path / "m.jsonl", mious=(50.0, 60.0))}, reference, max_iters=MAX_ITERS)
    loss = assess({"s0": _run_log(tmp_path / "l.jsonl", loss=lambda it: 1.3 if it > 6000 else 1.0)}, reference,
                  max_iters=MAX_ITERS)
    nan = assess({"s0": _run_log(tmp_path / "n.jsonl", loss=lambda it: math.nan if it >= 300 else 1.0)}, reference,
                 max_iters=MAX_ITERS)
    lr = assess({"s0": _run_log(tmp_path / "r.jsonl", base_lr=0.02)}, reference, max_iters=MAX_ITERS)
    fine = assess({"s0": _run_log(tmp_path / "f.jsonl")}, reference, max_iters=MAX_ITERS)
    assert [a.diverged_by for a in (miou, loss, nan, lr, fine)] == ["mIoU", "loss", "loss not finite", "schedule",
                                                                    None]
    # The guard stops at a train line for the line checks only, whatever the reasons' wording.
    assert [Guard._by_line(a) for a in (miou, loss, nan, lr, fine)] == [False, True, True, True, False]
    reworded = miou.__class__(**{**miou.__dict__, "reasons": ("below the stop margin",)})
    assert not Guard._by_line(reworded)
    assert Guard._by_line(loss.__class__(**{**loss.__dict__, "reasons": ("mIoU-like wording",)}))


LAST_EVALS_CLOSE = {  # max_iters 45, an evaluation every 20 and at the end, a train line every 10
    "2020": ['{"env_info": "", "seed": 0, "config": "evaluation = dict(interval=20, metric=\'mIoU\')\\n'
             'runner = dict(type=\'IterBasedRunner\', max_iters=45)\\n"}',
             '{"mode": "train", "epoch": 1, "iter": 10, "lr": 0.0098, "loss": 1.2}',
             '{"mode": "val", "epoch": 1, "iter": 4, "lr": 0.00959, "aAcc": 0.5, "mIoU": 0.2, "mAcc": 0.3}',
             '{"mode": "train", "epoch": 1, "iter": 30, "lr": 0.00374, "loss": 1.1}',
             '{"mode": "val", "epoch": 2, "iter": 4, "lr": 0.00154, "aAcc": 0.5, "mIoU": 0.4, "mAcc": 0.3}',
             '{"mode": "val", "epoch": 2, "iter": 4, "lr": 0.00034, "aAcc": 0.5, "mIoU": 0.45, "mAcc": 0.3}'],
    "mmcv1.3.11": ['{"env_info": "", "seed": 0, "max_iters": 45, "eval_interval": 20}',
                   '{"mode": "train", "epoch": 1, "iter": 10, "lr": 0.0098, "loss": 1.2}',
                   '{"mode": "train", "epoch": 1, "iter": 20, "lr": 0.00959, "loss": 1.2}',
                   '{"mode": "val", "epoch": 1, "iter": 4, "lr": 0.00959, "aAcc": 0.5, "mIoU": 0.2, "mAcc": 0.3}',
                   '{"mode": "train", "epoch": 1, "iter": 30, "lr": 0.00374, "loss": 1.1}',
                   '{"mode": "train", "epoch": 1, "iter": 40, "lr": 0.00154, "loss": 1.1}',
                   '{"mode": "val", "epoch": 2, "iter": 4, "lr": 0.00154, "aAcc": 0.5, "mIoU": 0.4, "mAcc": 0.3}',
                   '{"mode": "val", "epoch": 2, "iter": 4, "lr": 0.00034, "aAcc": 0.5, "mIoU": 0.45, "mAcc": 0.3}'],
}


@pytest.mark.parametrize("pattern", sorted(LAST_EVALS_CLOSE))
def test_two_val_lines_without_a_train_line_between_them_are_two_evaluations(tmp_path, pattern):
    # The end of the schedule (45) is no multiple of the interval and comes within one log interval of
    # the evaluation at 40: its val line follows 40's with no train line between them.
    path = tmp_path / "a.log.json"
    path.write_text("\n".join(LAST_EVALS_CLOSE[pattern]) + "\n")
    curve = read_curve(path)
    assert [(e.iteration, e.mIoU) for e in curve.evals] == [(20, 20.0), (40, 40.0), (45, 45.0)]
    assert curve.warnings == ()


def test_one_rule_says_where_training_evaluates_and_one_constant_the_spread_floor():
    from benchmark.recipe import GuardConfig, ScheduleConfig
    from benchmark.stats import SEED_STD_MIOU

    sched = ScheduleConfig(max_iters=45, eval_interval=20, checkpoint_interval=20, log_interval=10)
    assert [it for it in range(1, 46) if sched.evaluates_at(it)] == [20, 40, 45]
    assert GuardConfig().spread_floor == Settings().spread_floor == SEED_STD_MIOU == 0.5
