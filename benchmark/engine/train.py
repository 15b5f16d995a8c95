"""Iteration-based training as MMSegmentation runs it, resumable to the bit.

One loop: SGD (lr, momentum, weight decay over all parameters), poly LR set before every
iteration, the segmentor's losses (decode + weighted auxiliary cross-entropy, ignore 255),
checkpoints every ``checkpoint_interval`` and at the end, evaluation on the val split every
``eval_interval`` and at the end (as mmengine's IterBasedTrainLoop does).

Exact resume. Everything random is a pure function of (seed, iteration, rank): the data loader
derives sample order and augmentation from it, and the global torch RNG (dropout) is re-seeded from
it before every iteration. A checkpoint holds the weights, the optimizer (momentum buffers), the
AMP scaler and the iteration count, so a run killed at any moment and resumed from ``latest.pth``
redoes the iterations after that checkpoint exactly as they ran the first time. On CPU the final
weights are bit-identical to an uninterrupted run.

Work dir layout: ``iter_{N}.pth`` (MMSeg format: meta, state_dict, optimizer, + iteration and
scaler), ``latest.pth`` (a hard link to the newest complete one, replaced atomically; a copy where
links are not supported), ``train.log.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from benchmark import __version__
from benchmark.checkpoint import atomic_torch_save, check_state_dict, load_checkpoint
from benchmark.engine import distributed
from benchmark.engine.distributed import DistInfo, PeakMemory, device_info
from benchmark.errors import NLBenchError, TrainingInterrupted
from benchmark.recipe import Recipe, load_recipe

LATEST = "latest.pth"
LOG_NAME = "train.log.jsonl"
Log = Callable[[str], None]
StepCallback = Callable[[int, nn.Module], None]


# ----------------------------------------------------------------------------- schedule and RNG


def poly_lr(base_lr: float, min_lr: float, power: float, iteration: int, max_iters: int) -> float:
    """LR of the 0-based ``iteration``: (base - min) * (1 - it / max_iters) ** power + min.

    As mmcv's PolyLrUpdaterHook (runner.iter = iterations already done) and mmengine's PolyLR, which
    gives the same values step by step: iteration 0 trains at base_lr, the last at just above min_lr.
    """
    return (base_lr - min_lr) * (1.0 - iteration / max_iters) ** power + min_lr


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """A 63-bit seed that depends only on (seed, iteration, rank), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, iteration, rank, 0x6E6C]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# ----------------------------------------------------------------------------- model wrapper


class _LossModel(nn.Module):
    """Puts ``model.losses`` behind ``forward`` so DistributedDataParallel's hooks see the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.losses(images, labels)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[Any],
                     iteration: int, recipe: Recipe) -> Dict[str, Any]:
    from benchmark.data.classes import CLASS_NAMES, PALETTES

    meta = {
        "iter": iteration,
        "seed": recipe.runtime.seed,
        "recipe": recipe.name,
        "profile": recipe.profile,
        "recipe_hash": recipe.hash,
        "nlbench_version": __version__,
        "torch_version": str(torch.__version__),  # a TorchVersion would need more than weights_only to load
        "CLASSES": list(CLASS_NAMES[recipe.data.dataset]),
        "PALETTE": [list(c) for c in PALETTES[recipe.data.dataset]],
    }
    state = {
        "meta": meta,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state


def point_latest(work_dir: Path, checkpoint: Path) -> Path:
    """Make ``work_dir/latest.pth`` the file ``checkpoint`` atomically (hard link, else a copy)."""
    latest = work_dir / LATEST
    tmp = work_dir / f".{LATEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(checkpoint, tmp)
    except OSError:  # file systems without hard links: a full copy, fsynced before the rename
        shutil.copyfile(checkpoint, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, latest)
    return latest


def save_training_checkpoint(work_dir: Path, state: Dict[str, Any]) -> Path:
    path = work_dir / f"iter_{state['iteration']}.pth"
    atomic_torch_save(state, path)
    point_latest(work_dir, path)
    return path


# ----------------------------------------------------------------------------- logging


class _JsonLog:
    """Append-only JSON lines; each line goes out in one write() so a kill never splits one."""

    def __init__(self, path: Path, fresh: bool, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                path.write_text("")

    def write(self, entry: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = (json.dumps(entry, allow_nan=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _progress(total: int, initial: int, enabled: bool):
    if not (enabled and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, desc="train")


# ----------------------------------------------------------------------------- the loop


def amp_autocast(recipe: Recipe, device: torch.device):
    """The recipe's autocast (runtime.amp: bf16 or fp16), or nothing for fp32."""
    amp = recipe.runtime.amp
    if amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _resume_state(work_dir: Path, log: Log, info: DistInfo) -> Optional[Dict[str, Any]]:
    latest = work_dir / LATEST
    if not latest.is_file():
        if info.is_main:
            log(f"resume: no {latest}; starting from iteration 0")
        return None
    state = load_checkpoint(latest)
    if "iteration" not in state or "optimizer" not in state:
        raise NLBenchError("not a training checkpoint (expected 'iteration' and 'optimizer')", latest)
    return state


def _load_pretrained(model: nn.Module, source: str, info: DistInfo, log: Log) -> None:
    """Backbone from ImageNet weights; rank 0 downloads, the others read the cached file."""
    from benchmark.models.pretrained import load_backbone_weights, resolve_pretrained

    path = resolve_pretrained(source) if info.is_main else None
    distributed.barrier()
    path = path or resolve_pretrained(source)
    dropped = load_backbone_weights(model.backbone, path)
    if info.is_main:
        log(f"backbone initialised from {source} ({path}); ignored {len(dropped)} classifier keys")


def train(
    recipe: Recipe,
    work_dir: os.PathLike | str,
    resume: bool = False,
    device: str = "auto",
    data_root: Optional[str] = None,
    log: Log = print,
    step_callback: Optional[StepCallback] = None,
    stop_requested: Optional[Callable[[], bool]] = None,
) -> Dict[str, Any]:
    """Train ``recipe`` into ``work_dir``; returns a summary (iterations, wall time, last metrics, ...).

    Runs as one rank of a torch.distributed job when the environment says so (see distributed.py).
    ``step_callback(iteration_done, model)`` is called on every rank after each optimizer step.
    ``stop_requested()`` is asked after each step (any rank saying yes stops every rank at the same
    iteration): the state is saved as ``iter_N.pth``/``latest.pth`` and TrainingInterrupted raised.
    """
    from benchmark.data.datasets import build_dataset
    from benchmark.data.loader import train_batches
    from benchmark.data.synthetic import ensure_dataset
    from benchmark.data.transforms import build_train_pipeline
    from benchmark.engine.evaluate import evaluate_model
    from benchmark.models.segmentor import build_segmentor

    started = time.perf_counter()
    info = distributed.init_distributed(device)
    dev = info.device
    work_dir = Path(work_dir)
    sched, rt, data = recipe.schedule, recipe.runtime, recipe.data
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    root = ensure_dataset(data, data_root) if info.is_main else None
    distributed.barrier()  # other ranks wait until rank 0 has written a synthetic set
    root = ensure_dataset(data, data_root) if root is None else root
    train_set = build_dataset(data, "train", root)
    val_set = build_dataset(data, "val", root)

    effective = info.world_size * data.imgs_per_gpu
    if info.is_main:
        log(f"train {recipe.name} [{recipe.profile}] on {info.world_size} x {dev} "
            f"({info.backend or 'single process'}); effective batch {effective} = {info.world_size} x "
            f"{data.imgs_per_gpu} images per rank")
        if effective != recipe.effective_batch:
            log(f"warning: the published run used {rt.gpus} GPUs x {data.imgs_per_gpu} = "
                f"{recipe.effective_batch} images per iteration; this run uses {effective}")

    # Same initial weights everywhere (DDP would broadcast rank 0's anyway).
    torch.manual_seed(rt.seed)
    model = build_segmentor(recipe.model)
    if recipe.model.pretrained and not (resume and (work_dir / LATEST).exists()):
        _load_pretrained(model, recipe.model.pretrained, info, log)
    model = distributed.convert_sync_bn(model, info, rt.sync_bn, log)
    memory_format = torch.channels_last if rt.channels_last else torch.contiguous_format
    model.to(device=dev, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=sched.lr, momentum=sched.momentum,
                                weight_decay=sched.weight_decay)
    scaler = torch.amp.GradScaler(dev.type) if rt.amp == "fp16" else None

    start_iter = 0
    state = _resume_state(work_dir, log, info) if resume else None
    if state is not None:
        latest = work_dir / LATEST
        saved_hash = (state.get("meta") or {}).get("recipe_hash")
        if saved_hash and saved_hash != recipe.hash:
            raise NLBenchError(f"written by a different recipe (hash {saved_hash[:12]}, this run {recipe.hash[:12]}): "
                               "resuming would mix two configurations; use another --work-dir", latest)
        check_state_dict(model, state["state_dict"], latest)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start_iter = int(state["iteration"])
        if info.is_main:
            log(f"resume: continuing from {work_dir / LATEST} at iteration {start_iter}")
    del state

    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = rt.cudnn_benchmark
    wrapped: nn.Module = _LossModel(model)
    if info.world_size > 1:
        wrapped = DistributedDataParallel(wrapped, device_ids=[dev.index] if dev.type == "cuda" else None)

    jlog = _JsonLog(work_dir / LOG_NAME, fresh=not resume, enabled=info.is_main)
    jlog.write({"event": "start", "iteration": start_iter, "max_iters": sched.max_iters, "recipe": recipe.name,
                "profile": recipe.profile, "world_size": info.world_size, "effective_batch": effective,
                "device": str(dev), "resumed": bool(resume and start_iter > 0), "time": time.time()})
    mem = PeakMemory(dev)
    train_peak = 0.0  # peaks of earlier stretches of training; evaluation's own peak is left out
    bar = _progress(sched.max_iters, start_iter, info.is_main)
    say: Log = bar.write if bar is not None else log

    batches: Iterator[Tuple[int, torch.Tensor, torch.Tensor]] = train_batches(
        train_set, build_train_pipeline(data), data.imgs_per_gpu, rt.seed, info.rank, info.world_size, start_iter,
        data.workers_per_gpu)
    window: Dict[str, list] = {"loss": [], "loss_decode": [], "loss_aux": [], "time": [], "data_time": []}
    last_metrics: Optional[Dict[str, Any]] = None
    last_loss: Optional[float] = None
    checkpoint_path: Optional[Path] = None
    model.train()
    tick = time.perf_counter()
    for it in range(start_iter, sched.max_iters):
        batch_it, images, labels = next(batches)
        if batch_it != it:
            raise RuntimeError(f"data loader gave iteration {batch_it} for iteration {it}")
        images = images.to(dev, non_blocking=True, memory_format=memory_format)
        labels = labels.to(dev, non_blocking=True)
        data_time = time.perf_counter() - tick

        lr = poly_lr(sched.lr, sched.min_lr, sched.power, it, sched.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(iteration_seed(rt.seed, it, info.rank))  # dropout: a function of (seed, it, rank)
        with amp_autocast(recipe, dev):
            losses = wrapped(images, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            losses["loss"].backward()
            optimizer.step()
        done = it + 1

        values = {k: float(losses[k].detach()) for k in ("loss", "loss_decode", "loss_aux") if k in losses}
        if not np.isfinite(values["loss"]):
            raise NLBenchError(f"loss is {values['loss']} at iteration {done}; lower schedule.lr or check the data",
                               recipe.source, "schedule.lr")
        last_loss = values["loss"]
        now = time.perf_counter()
        for k, v in values.items():
            window[k].append(v)
        window["time"].append(now - tick)
        window["data_time"].append(data_time)
        if step_callback is not None:
            step_callback(done, model)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")

        if done % sched.log_interval == 0 or done == sched.max_iters:
            entry = {"iteration": done, "lr": lr}
            entry.update({k: float(np.mean(v)) for k, v in window.items() if v})
            entry.update({"peak_mem_gb": max(train_peak, mem.peak_gb()), "mem_kind": mem.kind})
            jlog.write(entry)
            if bar is None and info.is_main:
                eta = (sched.max_iters - done) * entry["time"]
                say(f"iter {done}/{sched.max_iters}  loss {entry['loss']:.4f}  lr {lr:.3e}  "
                    f"{entry['time']:.3f} s/it (data {entry['data_time']:.3f})  "
                    f"{entry['peak_mem_gb']:.2f} GB {entry['mem_kind']}  eta {_hms(eta)}")
            window = {k: [] for k in window}

        saved_now = done % sched.checkpoint_interval == 0 or done == sched.max_iters
        if saved_now:
            if info.is_main:
                checkpoint_path = save_training_checkpoint(work_dir, checkpoint_state(model, optimizer, scaler,
                                                                                       done, recipe))
            distributed.barrier()
        # A preempted job saves here, at an iteration boundary, rather than losing everything since
        # the last periodic checkpoint (up to a tenth of the run).
        if (stop_requested is not None and done < sched.max_iters
                and distributed.all_reduce_max(float(stop_requested()), dev) > 0):
            if not saved_now:
                if info.is_main:
                    save_training_checkpoint(work_dir, checkpoint_state(model, optimizer, scaler, done, recipe))
                distributed.barrier()
            jlog.write({"event": "interrupted", "iteration": done, "time": time.time()})
            if bar is not None:
                bar.close()
            if info.is_main:
                log(f"stop requested: checkpoint saved at iteration {done}; a resume continues from here")
            raise TrainingInterrupted(done)

        if done % sched.eval_interval == 0 or done == sched.max_iters:
            distributed.broadcast_buffers(model)
            train_peak = max(train_peak, mem.peak_gb())
            model.eval()
            last_metrics = evaluate_model(model, val_set, recipe, info, progress=False)
            model.train()
            mem.reset()
            jlog.write({"event": "eval", "iteration": done, "aAcc": last_metrics["aAcc"],
                        "mIoU": last_metrics["mIoU"], "mAcc": last_metrics["mAcc"]})
            if info.is_main:
                say(f"eval at iter {done}: aAcc {last_metrics['aAcc']:.2f}  mIoU {last_metrics['mIoU']:.2f}  "
                    f"mAcc {last_metrics['mAcc']:.2f}")
        tick = time.perf_counter()

    if bar is not None:
        bar.close()
    wall = time.perf_counter() - started
    peak = distributed.all_reduce_max(max(train_peak, mem.peak_gb()), dev)
    jlog.write({"event": "end", "iteration": sched.max_iters, "wall_time_s": wall, "time": time.time()})
    latest = work_dir / LATEST
    return {
        "iterations": sched.max_iters,
        "start_iteration": start_iter,
        "wall_time_s": wall,
        "final_loss": last_loss,
        "metrics": last_metrics,
        "checkpoint": str(latest) if latest.exists() else (str(checkpoint_path) if checkpoint_path else None),
        "work_dir": str(work_dir),
        "world_size": info.world_size,
        "effective_batch": effective,
        "peak_mem_gb": peak,
        "mem_kind": mem.kind,
        **device_info(dev, amp=rt.amp),
    }


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def main(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides, args.profile)
    work_dir = args.work_dir or os.path.join("work_dirs", recipe.name)
    try:
        summary = train(recipe, work_dir, resume=args.resume, device=args.device, data_root=args.data_root)
        is_main = distributed.get_rank() == 0
    finally:
        distributed.cleanup()
    if is_main:
        metrics = summary.get("metrics") or {}
        print(f"done: {summary['iterations']} iterations in {summary['wall_time_s']:.1f} s; "
              f"mIoU {metrics.get('mIoU', float('nan')):.2f}; checkpoint {summary['checkpoint']}")
    return 0
