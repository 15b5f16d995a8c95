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

The loop below reads top to bottom over named parts: building (``build_training``), resuming
(``train_checkpoints.restore``), one step (``steps.train_step``, shared with bench), checkpoints
(``train_checkpoints.Checkpointer``), logging and progress (``train_log.TrainLogger``) and the periodic
evaluation (``evaluate.evaluate_model``).

Work dir layout: ``iter_{N}.pth`` (MMSeg format: meta, state_dict, optimizer, + iteration and
scaler), ``latest.pth`` (the newest complete one), ``checkpoints.sha256`` (their hashes, checked on
resume), ``attempts.json`` (wall time, GPU-hours and peak memory of each attempt), ``train.log.jsonl``
and its MMSeg 0.x form ``train.log.json`` (``mmseg_log.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from benchmark.data.layouts import SegDataset
from benchmark.data.loader import train_batches
from benchmark.data.transforms import build_train_pipeline
from benchmark.engine import distributed
from benchmark.engine.attempts import AttemptLedger
from benchmark.engine.distributed import DistInfo, PeakMemory, device_info
from benchmark.engine.evaluate import evaluate_model
from benchmark.engine.guard import Guard
from benchmark.engine.mmseg_log import MMSEG_LOG_NAME, MMSeg0xLogSink
from benchmark.engine.open_data import open_split
from benchmark.engine.pretrained import load_backbone_weights, resolve_pretrained
from benchmark.engine.steps import build_loss_model, make_optimizer, make_scaler, train_step
from benchmark.engine.tensorboard_sink import tensorboard_sink
from benchmark.engine.train_checkpoints import LATEST, Checkpointer, has_checkpoint, read_resume_state, restore
from benchmark.engine.train_log import LOG_NAME, JsonLinesSink, LogSink, TrainLogger, last_evaluation
from benchmark.errors import NLBenchError, RunDiverged, TrainingInterrupted
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import Recipe, published_recipe

__all__ = ["LATEST", "iteration_seed", "poly_lr", "train"]
Log = Callable[[str], None]
StepCallback = Callable[[int, nn.Module], None]
Batches = Iterator[Tuple[int, torch.Tensor, torch.Tensor]]


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


# ----------------------------------------------------------------------------- building


@dataclass
class Training:
    """Everything the loop works with, built once."""

    model: nn.Module
    loss_model: nn.Module  # the model's losses, in DDP when there are several ranks, compiled on request
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    train_set: SegDataset
    val_set: SegDataset
    start_iter: int
    memory_format: torch.memory_format
    effective_batch: int  # images per iteration over all ranks


def _load_pretrained(model: nn.Module, source: str, info: DistInfo, log: Log) -> None:
    """Backbone from ImageNet weights; rank 0 downloads, the others read the cached file."""
    path = resolve_pretrained(source) if info.is_main else None
    distributed.barrier()
    path = path or resolve_pretrained(source)
    dropped = load_backbone_weights(model.backbone, path)
    if info.is_main:
        log(f"backbone initialised from {source} ({path}); ignored {len(dropped)} classifier keys")


def _build_model(recipe: Recipe, info: DistInfo, resuming: bool, log: Log) -> Tuple[nn.Module, torch.memory_format]:
    torch.manual_seed(recipe.runtime.seed)  # same initial weights everywhere (DDP would broadcast rank 0's anyway)
    model = build_segmentor(recipe.model)
    if recipe.model.pretrained and not resuming:
        _load_pretrained(model, recipe.model.pretrained, info, log)
    model = distributed.convert_sync_bn(model, info, recipe.runtime.sync_bn, log)
    memory_format = torch.channels_last if recipe.runtime.channels_last else torch.contiguous_format
    model.to(device=info.device, memory_format=memory_format)
    return model, memory_format


def build_training(recipe: Recipe, work_dir: Path, resume: bool, data_root: Optional[str], info: DistInfo,
                   log: Log) -> Training:
    """Data, model, optimizer and scaler, restored from ``latest.pth`` (verified; see train_checkpoints)
    when resuming."""
    _make_work_dir(work_dir, info)
    train_set = open_split(recipe.data, "train", data_root)
    val_set = open_split(recipe.data, "val", data_root)
    effective = _announce(recipe, info, log)
    model, memory_format = _build_model(recipe, info, resume and has_checkpoint(work_dir), log)
    optimizer = make_optimizer(model, recipe.schedule)
    scaler = make_scaler(recipe.runtime.amp, info.device)
    start_iter = 0
    point = read_resume_state(work_dir, log, info) if resume else None
    if point is not None:
        start_iter = restore(point.state, recipe, model, optimizer, scaler, point.path)
        if info.is_main:
            log(f"resume: continuing from {point.path} at iteration {start_iter}")
    del point
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = recipe.runtime.cudnn_benchmark
    losses = build_loss_model(model, info.device, ddp=info.world_size > 1, compile=recipe.runtime.compile)
    return Training(model, losses, optimizer, scaler, train_set, val_set, start_iter, memory_format, effective)


def _make_work_dir(work_dir: Path, info: DistInfo) -> None:
    if work_dir.exists() and not work_dir.is_dir():
        raise NLBenchError("expected a folder for checkpoints and logs (the work dir), found a file", work_dir)
    if info.is_main:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NLBenchError(f"cannot create the work dir: {exc.strerror or exc}", work_dir) from None


def _attempt_ledger(work_dir: Path, run: Training, info: DistInfo, started: float, peak: TrainingPeak,
                    log: Log) -> AttemptLedger:
    """This attempt's entry in ``attempts.json`` (see engine/attempts.py)."""
    ledger = AttemptLedger(work_dir, run.start_iter, started, peak.gb, peak.kind, info.world_size, info.device.type,
                           writer=info.is_main)
    if ledger.warning is not None:
        log(f"warning: {ledger.warning}")
    return ledger


def _announce(recipe: Recipe, info: DistInfo, log: Log) -> int:
    """Say where training runs and with which effective batch; returns that batch."""
    data = recipe.data
    effective = info.world_size * data.imgs_per_gpu
    if info.is_main:
        log(f"train {recipe.name} [{recipe.profile}] on {info.world_size} x {info.device} "
            f"({info.backend or 'single process'}); effective batch {effective} = {info.world_size} x "
            f"{data.imgs_per_gpu} images per rank")
        published = published_recipe(recipe)
        if effective != published.effective_batch:
            log(f"warning: the published run used {published.runtime.gpus} GPUs x {published.data.imgs_per_gpu} "
                f"= {published.effective_batch} images per iteration; this run uses {effective}")
    return effective


def _batches(recipe: Recipe, run: Training, info: DistInfo) -> Batches:
    data, rt = recipe.data, recipe.runtime
    return train_batches(run.train_set, build_train_pipeline(data), data.imgs_per_gpu, rt.seed, info.rank,
                         info.world_size, run.start_iter, data.workers_per_gpu,
                         pin_memory=info.device.type == "cuda")  # then _next_batch's copies are asynchronous


# ----------------------------------------------------------------------------- one iteration


def _next_batch(batches: Batches, it: int, run: Training, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    batch_it, images, labels = next(batches)
    if batch_it != it:
        raise RuntimeError(f"data loader gave iteration {batch_it} for iteration {it}")
    images = images.to(device, non_blocking=True, memory_format=run.memory_format)
    return images, labels.to(device, non_blocking=True)


def _iteration(recipe: Recipe, run: Training, it: int, images: torch.Tensor, labels: torch.Tensor,
               info: DistInfo) -> Tuple[float, Dict[str, torch.Tensor]]:
    """Set the poly lr, seed dropout from (seed, it, rank), take one step; returns (lr, loss terms).

    The loss terms stay on the device, unsynchronised: the logger reads them at log intervals, before
    checkpoints and evaluations, and stops the run on a non-finite loss (train_log.TrainLogger)."""
    sched = recipe.schedule
    lr = poly_lr(sched.lr, sched.min_lr, sched.power, it, sched.max_iters)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(iteration_seed(recipe.runtime.seed, it, info.rank))
    losses = train_step(run.loss_model, images, labels, run.optimizer, run.scaler, recipe.runtime.amp,
                        info.device)
    return lr, {k: losses[k].detach() for k in ("loss", "loss_decode", "loss_aux") if k in losses}


def _stop_now(stop_requested: Optional[Callable[[], bool]], done: int, max_iters: int) -> bool:
    """Whether any rank was asked to stop (all ranks stop at the same iteration). Agreed on the
    host (distributed.any_rank): asking every iteration never waits for the device."""
    if stop_requested is None or done >= max_iters:
        return False
    return distributed.any_rank(stop_requested())


class TrainingPeak:
    """Peak memory of the training iterations alone: what a periodic evaluation allocates is left out."""

    def __init__(self, device: torch.device):
        self.mem = PeakMemory(device)
        self.kind = self.mem.kind
        self._before = 0.0

    def gb(self) -> float:
        return max(self._before, self.mem.peak_gb())

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        self._before = self.gb()
        yield
        self.mem.reset()


def _evaluate(recipe: Recipe, run: Training, info: DistInfo) -> Dict[str, Any]:
    """The periodic evaluation on the val split, with every rank holding rank 0's BN statistics."""
    distributed.broadcast_buffers(run.model)
    run.model.eval()
    metrics = evaluate_model(run.model, run.val_set, recipe, info, progress=False)
    run.model.train()
    return metrics


# ----------------------------------------------------------------------------- the loop


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
    The guard (recipe ``guard``) may stop a diverged run at a train line or evaluation: saved, RunDiverged.
    """
    started = time.perf_counter()
    info = distributed.init_distributed(device)
    distributed.use_runtime(recipe.runtime, info.device)
    work_dir, sched = Path(work_dir), recipe.schedule
    run = build_training(recipe, work_dir, resume, data_root, info, log)
    logger, guard = _start_log(recipe, run, info, work_dir, resume, log)
    peak = TrainingPeak(info.device)
    checkpoints = Checkpointer(work_dir, recipe, info, _attempt_ledger(work_dir, run, info, started, peak, log))
    metrics: Optional[Dict[str, Any]] = None
    loss: Optional[torch.Tensor] = None  # on the device; read once, at the end
    batches = _batches(recipe, run, info)
    run.model.train()
    tick = time.perf_counter()
    for it in range(run.start_iter, sched.max_iters):
        images, labels = _next_batch(batches, it, run, info.device)
        data_time = time.perf_counter() - tick
        lr, losses = _iteration(recipe, run, it, images, labels, info)
        done, loss = it + 1, losses["loss"]
        if step_callback is not None:
            step_callback(done, run.model)
        logger.step(done, lr, losses, time.perf_counter() - tick, data_time, peak.gb(), peak.kind)
        saved = checkpoints.due(done)
        if saved:
            checkpoints.save(done, run.model, run.optimizer, run.scaler)
        _guard_line(done, saved, run, checkpoints, logger, guard)  # schedule or loss: may stop a run early
        # A preempted job saves at an iteration boundary rather than losing up to a tenth of the run.
        if _stop_now(stop_requested, done, sched.max_iters):
            _interrupt(done, saved, run, checkpoints, logger, log if info.is_main else None)
        if sched.evaluates_at(done):
            metrics = _periodic_eval(recipe, run, info, peak, logger, guard, checkpoints, done, saved)
        tick = time.perf_counter()
    logger.close()
    wall = time.perf_counter() - started
    logger.event("end", iteration=sched.max_iters, wall_time_s=wall)
    return {
        "iterations": sched.max_iters, "start_iteration": run.start_iter, "wall_time_s": wall,
        "final_loss": None if loss is None else float(loss), "metrics": metrics or last_evaluation(work_dir / LOG_NAME),
        "checkpoint": checkpoints.final_path(), "guard": guard.evidence(),
        "work_dir": str(work_dir), "world_size": info.world_size, "effective_batch": run.effective_batch,
        "peak_mem_gb": (mem := distributed.all_reduce_max(peak.gb(), info.device)), "mem_kind": peak.kind,
        **device_info(info.device, amp=recipe.runtime.amp), **checkpoints.ended(sched.max_iters, "done", mem),
    }


def log_sinks(recipe: Recipe, work_dir: Path, resume: bool, log: Log = print) -> List[LogSink]:
    """Where rank 0's training log goes: ``train.log.jsonl``, its MMSeg 0.x form ``train.log.json``, and
    TensorBoard event files in the work dir when the tensorboard package is installed (``log`` says
    once when it is not)."""
    sinks: List[LogSink] = [JsonLinesSink(work_dir / LOG_NAME, fresh=not resume),
                            MMSeg0xLogSink(work_dir / MMSEG_LOG_NAME, recipe, fresh=not resume)]
    tensorboard = tensorboard_sink(work_dir, log)
    if tensorboard is not None:
        sinks.append(tensorboard)
    return sinks


def _start_log(recipe: Recipe, run: Training, info: DistInfo, work_dir: Path, resume: bool,
               log: Log) -> Tuple[TrainLogger, Guard]:
    """The logger (rank 0 writes) and the guard, which reads the same lines as one more sink."""
    sched = recipe.schedule
    guard = Guard(recipe, work_dir, info, log, resume)
    sinks = log_sinks(recipe, work_dir, resume, log) if info.is_main else []
    sinks += [guard.sink] if guard.sink is not None else []
    logger = TrainLogger(sinks, enabled=info.is_main, max_iters=sched.max_iters, start_iter=run.start_iter,
                         log_interval=sched.log_interval, log=log,
                         read_every=(sched.checkpoint_interval, sched.eval_interval), source=recipe.source)
    guard.say = logger.note
    logger.event("start", iteration=run.start_iter, max_iters=sched.max_iters, recipe=recipe.name,
                 profile=recipe.profile, world_size=info.world_size, effective_batch=run.effective_batch,
                 device=str(info.device), resumed=bool(resume and run.start_iter > 0),
                 train_images=len(run.train_set), val_images=len(run.val_set))
    return logger, guard


def _periodic_eval(recipe: Recipe, run: Training, info: DistInfo, peak: TrainingPeak, logger: TrainLogger,
                   guard: Guard, checkpoints: Checkpointer, done: int, saved: bool) -> Dict[str, Any]:
    """The evaluation every ``eval_interval`` (its memory kept out of the training peak); then the
    guard, which may stop a diverged run here: state saved (a resume continues), RunDiverged raised."""
    with peak.excluded():
        metrics = _evaluate(recipe, run, info)
    logger.evaluation(done, metrics)
    if guard.should_stop(done):
        _stop_diverged(done, saved, run, checkpoints, logger, guard)
    return metrics


def _guard_line(done: int, saved: bool, run: Training, checkpoints: Checkpointer, logger: TrainLogger,
                guard: Guard) -> None:
    """After a train line (every log interval, on every rank): the guard's schedule and loss checks."""
    if done % logger.log_interval == 0 and guard.should_stop_at_line(done):
        _stop_diverged(done, saved, run, checkpoints, logger, guard)


def _stop_diverged(done: int, saved: bool, run: Training, checkpoints: Checkpointer, logger: TrainLogger,
                   guard: Guard) -> None:
    """The guard stopped the run at ``done``: state saved (a resume continues), RunDiverged raised."""
    if not saved:
        checkpoints.save(done, run.model, run.optimizer, run.scaler)
    evidence = guard.evidence(stopped_at=done)
    logger.event("diverged", iteration=done, **(evidence or {}))
    logger.note(f"guard: stopped at iteration {done} (guard.action stop); state saved, --resume continues")
    checkpoints.ended(done, "diverged")
    logger.close()
    raise RunDiverged(done, guard.message(), evidence or {})


def _interrupt(done: int, saved: bool, run: Training, checkpoints: Checkpointer, logger: TrainLogger,
               log: Optional[Log]) -> None:
    """Save the state where training stands (unless just saved) and raise TrainingInterrupted."""
    logger.read_losses()  # a non-finite loss since the last read fails the run here, before the save
    if not saved:
        checkpoints.save(done, run.model, run.optimizer, run.scaler)
    checkpoints.ended(done, "interrupted")
    logger.event("interrupted", iteration=done)
    logger.close()
    if log is not None:
        log(f"stop requested: checkpoint saved at iteration {done}; a resume continues from here")
    raise TrainingInterrupted(done)

