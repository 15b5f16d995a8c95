"""Training: poly LR, the smoke run learns, exact resume after SIGKILL, and a 2-process gloo run.

Every run here is the real thing (real readers on synthetic sets in the real layout, real model,
real torch.distributed); the schedules are shrunk with --set so the file stays within its budget.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CITY_ROW as ROW
from conftest import cli_command, cli_env

from benchmark.cli import main as cli_main
from benchmark.engine.train import iteration_seed, poly_lr, train
from benchmark.mmseg_checkpoint import load_checkpoint
from benchmark.recipe import load_recipe

# ----------------------------------------------------------------------------- schedule


def test_poly_lr_matches_mmengine_step_by_step():
    # mmengine's PolyLR updates the lr recursively from the previous step's value; the closed form
    # used here must give the same numbers at every iteration.
    base, eta_min, power, total = 0.01, 1e-4, 0.9, 50
    lr = base
    for step in range(total):
        if step > 0:
            lr = (lr - eta_min) * (1 - 1 / (total - step + 1)) ** power + eta_min
        assert poly_lr(base, eta_min, power, step, total) == pytest.approx(lr, rel=1e-12)
    assert poly_lr(base, eta_min, power, 0, total) == base
    assert poly_lr(base, eta_min, power, total, total) == pytest.approx(eta_min)


def test_iteration_seed_is_a_pure_function_of_seed_iteration_rank():
    assert iteration_seed(0, 5, 0) == iteration_seed(0, 5, 0)
    seeds = {iteration_seed(s, it, r) for s in range(2) for it in range(50) for r in range(4)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)


# ----------------------------------------------------------------------------- training learns


@pytest.mark.slow
def test_smoke_training_learns_and_its_checkpoint_evaluates_the_same(tmp_path, capsys):
    # 4 images a batch: the smoke profile's 8 is this row's published batch (4 GPUs x 2), and the
    # warning about a batch other than the published one is part of what is checked.
    recipe = load_recipe(ROW, ["data.imgs_per_gpu=4"], profile="smoke")
    data_root = tmp_path / "cityscapes"
    work = tmp_path / "work"
    lines = []
    summary = train(recipe, work, device="cpu", data_root=str(data_root), log=lines.append)

    # 6 classes in the synthetic scenes; predicting the most frequent one everywhere gives ~5 mIoU.
    assert summary["iterations"] == recipe.schedule.max_iters
    assert summary["metrics"]["mIoU"] > 35.0, summary["metrics"]
    print(f"smoke mIoU after {summary['iterations']} iterations: {summary['metrics']['mIoU']:.2f}")
    assert summary["effective_batch"] == recipe.data.imgs_per_gpu
    assert any("warning: the published run used 4 GPUs" in line for line in lines)

    # Checkpoints every interval + latest.pth (the same bytes as the newest one), MMSeg format.
    interval = recipe.schedule.checkpoint_interval
    names = sorted(p.name for p in work.glob("iter_*.pth"))
    assert names == sorted(f"iter_{n}.pth" for n in range(interval, recipe.schedule.max_iters + 1, interval))
    latest = load_checkpoint(work / "latest.pth")
    assert {"meta", "state_dict", "optimizer", "iteration"} <= set(latest)
    assert latest["iteration"] == recipe.schedule.max_iters
    assert (work / "latest.pth").read_bytes() == (work / f"iter_{recipe.schedule.max_iters}.pth").read_bytes()

    # The JSON-lines log: loss terms, lr, timings, memory, and eval lines with mIoU.
    entries = [json.loads(line) for line in (work / "train.log.jsonl").read_text().splitlines()]
    steps = [e for e in entries if "loss" in e]
    assert steps and {"iteration", "loss", "loss_decode", "loss_aux", "lr", "time", "data_time",
                      "peak_mem_gb"} <= set(steps[0])
    assert steps[-1]["loss"] < steps[0]["loss"]
    evals = [e for e in entries if e.get("event") == "eval"]
    every = recipe.schedule.eval_interval
    assert [e["iteration"] for e in evals] == list(range(every, recipe.schedule.max_iters + 1, every))

    # `nlbench eval --checkpoint latest.pth` scores the saved model exactly as training did.
    out_json = tmp_path / "metrics.json"
    code = cli_main(["eval", ROW, "--profile", "smoke", "--checkpoint", str(work / "latest.pth"),
                     "--data-root", str(data_root), "--json", str(out_json), "--device", "cpu"])
    assert code == 0
    body = json.loads(out_json.read_text())
    assert set(body) == {"aAcc", "mIoU", "mAcc", "per_class"}
    assert body["mIoU"] == pytest.approx(summary["metrics"]["mIoU"], abs=1e-9)
    assert set(body["per_class"]["road"]) == {"IoU", "Acc"}
    assert body["per_class"]["rider"] == {"IoU": None, "Acc": None}  # absent class: NaN -> null
    assert "mIoU:" in capsys.readouterr().out


# ----------------------------------------------------------------------------- exact resume


def _train_cmd(work: Path, data_root: Path, max_iters: int, resume: bool = False):
    cmd = cli_command("train", ROW, "--profile", "smoke", "--device", "cpu", "--work-dir", work,
                      "--data-root", data_root, "--set", f"schedule.max_iters={max_iters}",
                      "--set", "schedule.checkpoint_interval=5", "--set", f"schedule.eval_interval={max_iters}",
                      "--set", "schedule.log_interval=5")
    return cmd + (["--resume"] if resume else [])


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    data_root = tmp_path / "cityscapes"
    max_iters = 20
    # Uninterrupted reference run (also writes the synthetic set once).
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref, data_root, max_iters), check=True, env=cli_env(), capture_output=True)
    # `nlbench train` keeps the resolved recipe beside the run, --set values applied, as run-all's jobs do.
    saved_text = (ref / "recipe.yaml").read_text()
    saved = yaml.safe_load(saved_text)
    assert saved["name"] == ROW and saved["profile"] == "smoke" and saved["schedule"]["max_iters"] == max_iters
    assert "--set schedule.max_iters=20" in saved_text.splitlines()[0]

    # The same run, killed with SIGKILL as soon as its second checkpoint file exists (latest.pth may
    # still name the first: the kill can land between the two renames, which resume must survive).
    work = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(work, data_root, max_iters), env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (work / "iter_10.pth").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    reached = load_checkpoint(work / "latest.pth")["iteration"]
    assert 5 <= reached < max_iters, "the kill did not land mid-way"

    resumed = subprocess.run(_train_cmd(work, data_root, max_iters, resume=True), env=cli_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"continuing from {work / 'latest.pth'} at iteration {reached}" in resumed.stdout

    a = load_checkpoint(ref / "latest.pth")
    b = load_checkpoint(work / "latest.pth")
    assert a["iteration"] == b["iteration"] == max_iters
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    momenta_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momenta_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(momenta_a) == len(momenta_b) > 0
    assert all(torch.equal(x, y) for x, y in zip(momenta_a, momenta_b))


def test_resume_without_a_checkpoint_starts_from_zero(tmp_path):
    from benchmark.engine.distributed import DistInfo
    from benchmark.engine.train_checkpoints import read_resume_state as _resume_state

    said = []
    info = DistInfo(0, 1, 0, torch.device("cpu"), None)
    assert _resume_state(tmp_path, said.append, info) is None
    assert "starting from iteration 0" in said[0]


# ----------------------------------------------------------------------------- 2-process gloo

_WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from benchmark.engine.train import train
    from benchmark.recipe import load_recipe

    out, work, data_root = sys.argv[1], sys.argv[2], sys.argv[3]
    recipe = load_recipe("%s", ["schedule.max_iters=6", "schedule.checkpoint_interval=6",
                                "schedule.eval_interval=6", "schedule.log_interval=1"], profile="smoke")
    sums = []

    def record(iteration, model):
        # Exact fingerprint of every parameter after this optimizer step.
        flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        sums.append([iteration, flat.sum().item(), (flat * flat).sum().item(), flat[::997].tolist()])

    summary = train(recipe, work, device="cpu", data_root=data_root, step_callback=record)
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"steps": sums, "metrics": summary["metrics"], "world_size": summary["world_size"],
                   "effective_batch": summary["effective_batch"], "loss": summary["final_loss"]}, fh)
""" % ROW)


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights_after_every_step(tmp_path):
    from benchmark.data.synthetic import ensure_dataset
    from benchmark.engine.evaluate import evaluate

    recipe = load_recipe(ROW, profile="smoke")
    data_root = tmp_path / "cityscapes"
    ensure_dataset(recipe.data, data_root)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path), str(work), str(data_root)],
        env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "plain BatchNorm" in proc.stdout  # SyncBN needs CUDA: said, not hidden

    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["effective_batch"] == 2 * recipe.data.imgs_per_gpu
    assert [s[0] for s in r0["steps"]] == list(range(1, 7))
    assert r0["steps"] == r1["steps"]  # identical parameters after each of the 6 steps
    assert r0["steps"][0][1:] != r0["steps"][-1][1:]  # ... and they did change
    # Sharded evaluation: each rank scored half the val set; the summed areas give both ranks the
    # same figures, equal to scoring the saved checkpoint in one process.
    assert r0["metrics"] == r1["metrics"]
    single = evaluate(recipe, str(work / "latest.pth"), data_root=str(data_root), device="cpu", progress=False)
    assert single["mIoU"] == pytest.approx(r0["metrics"]["mIoU"], abs=1e-9)
    assert single["num_images"] == r0["metrics"]["num_images"] == recipe.data.synthetic.val == 16
