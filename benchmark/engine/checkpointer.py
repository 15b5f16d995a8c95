"""Training checkpoints: ``iter_N.pth`` (MMSeg's layout plus the optimizer, scaler and iteration)
and ``latest.pth``, a hard link to the newest complete one, replaced atomically (a copy where links
are not supported). Rank 0 writes; every rank waits until the file is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from benchmark import __version__
from benchmark.checkpoint import atomic_torch_save, check_state_dict, load_checkpoint
from benchmark.engine import distributed
from benchmark.engine.distributed import DistInfo
from benchmark.errors import NLBenchError
from benchmark.recipe import Recipe

LATEST = "latest.pth"
Log = Callable[[str], None]


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[Any],
                     iteration: int, recipe: Recipe) -> Dict[str, Any]:
    """What a training checkpoint holds: meta (as MMSeg's, plus the recipe hash), weights, optimizer."""
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
    state = {"meta": meta, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
             "iteration": iteration}
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


def read_resume_state(work_dir: Path, log: Log, info: DistInfo) -> Optional[Dict[str, Any]]:
    """The state in ``work_dir/latest.pth``, or None (with a note) when there is none yet."""
    latest = work_dir / LATEST
    if not latest.is_file():
        if info.is_main:
            log(f"resume: no {latest}; starting from iteration 0")
        return None
    state = load_checkpoint(latest)
    if "iteration" not in state or "optimizer" not in state:
        raise NLBenchError("not a training checkpoint (expected 'iteration' and 'optimizer')", latest)
    return state


def restore(state: Dict[str, Any], recipe: Recipe, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: Optional[Any], latest: Path) -> int:
    """Load a resume state into the training objects; returns the iteration to continue from."""
    saved_hash = (state.get("meta") or {}).get("recipe_hash")
    if saved_hash and saved_hash != recipe.hash:
        raise NLBenchError(f"written by a different recipe (hash {saved_hash[:12]}, this run {recipe.hash[:12]}): "
                           "resuming would mix two configurations; use another --work-dir", latest)
    check_state_dict(model, state["state_dict"], latest)
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return int(state["iteration"])


class Checkpointer:
    """Periodic saves every ``schedule.checkpoint_interval`` and at the end, and saves on request
    (preemption), each one the new ``latest.pth``."""

    def __init__(self, work_dir: Path, recipe: Recipe, info: DistInfo):
        self.work_dir, self.recipe, self.info = work_dir, recipe, info
        self.last_saved: Optional[Path] = None

    @property
    def latest(self) -> Path:
        return self.work_dir / LATEST

    def due(self, done: int) -> bool:
        sched = self.recipe.schedule
        return done % sched.checkpoint_interval == 0 or done == sched.max_iters

    def save(self, done: int, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[Any]) -> None:
        if self.info.is_main:
            path = self.work_dir / f"iter_{done}.pth"
            atomic_torch_save(checkpoint_state(model, optimizer, scaler, done, self.recipe), path)
            point_latest(self.work_dir, path)
            self.last_saved = path
        distributed.barrier()

    def final_path(self) -> Optional[str]:
        if self.latest.exists():
            return str(self.latest)
        return str(self.last_saved) if self.last_saved else None
