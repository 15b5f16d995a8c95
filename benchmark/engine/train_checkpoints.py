"""Training checkpoints: ``iter_N.pth`` (MMSeg's layout plus the optimizer, scaler and iteration)
and ``latest.pth``, a hard link to the newest complete one, replaced atomically (a copy where links
are not supported). Rank 0 writes; every rank waits until the file is complete.

Every ``iter_N.pth`` has its sha256 in ``checkpoints.sha256`` in the work dir (``sha256sum``'s
format, so ``sha256sum -c checkpoints.sha256`` checks them by hand). The hash is taken of the
bytes as they are written and recorded, atomically, after the file is complete and before
``latest.pth`` points at it. A resume verifies ``latest.pth`` against it (torch's zip reader checks
no CRC: a checkpoint with a zeroed block loads without a word); when it does not match or cannot be
read, the newest intact ``iter_N.pth`` is used instead, with a warning naming both, and ``latest.pth``
is pointed at it again (a run whose final checkpoint is the intact one has nothing left to train and
would otherwise leave the corrupt file to every later stage); when none is intact the resume is one
clear error. A work dir from before hashes were recorded (no
``checkpoints.sha256``) resumes as before, from the first of those files that loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from benchmark import __version__
from benchmark.data.classes import CLASS_NAMES, PALETTES
from benchmark.engine import distributed
from benchmark.engine.attempts import AttemptLedger
from benchmark.engine.distributed import DistInfo
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text, file_sha256
from benchmark.mmseg_checkpoint import check_state_dict, load_checkpoint, torch_save_sha256
from benchmark.recipe import Recipe

LATEST = "latest.pth"
MANIFEST = "checkpoints.sha256"
Log = Callable[[str], None]
_ITER_NAME = re.compile(r"iter_(\d+)\.pth")


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[Any],
                     iteration: int, recipe: Recipe) -> Dict[str, Any]:
    """What a training checkpoint holds: meta (as MMSeg's, plus the recipe hash), weights, optimizer."""
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
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(checkpoint, tmp)
        except OSError:  # file systems without hard links: a full copy, fsynced before the rename
            shutil.copyfile(checkpoint, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, latest)
    except OSError as exc:  # e.g. ENOSPC while copying: latest.pth still names the previous checkpoint
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise NLBenchError(f"cannot point {LATEST} at {checkpoint.name}: {exc.strerror or exc}", latest) from None
    return latest


# ----------------------------------------------------------------------------- recorded hashes


def read_manifest(work_dir: Path) -> Dict[str, str]:
    """File name -> recorded sha256 from ``work_dir/checkpoints.sha256`` ({} when there is none)."""
    try:
        text = (work_dir / MANIFEST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    entries = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            entries[name.strip()] = digest.lower()
    return entries


def record_sha256(work_dir: Path, name: str, digest: str) -> None:
    """Add (or replace) ``name``'s line in the manifest; the whole file is rewritten atomically."""
    entries = read_manifest(work_dir)
    entries[name] = digest
    order = sorted(entries, key=lambda n: (_iteration_of(n) or 0, n))
    atomic_write_text(work_dir / MANIFEST, "".join(f"{entries[n]}  {n}\n" for n in order))


def _iteration_of(name: str) -> Optional[int]:
    match = _ITER_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _newest_first(work_dir: Path) -> List[Path]:
    found = [(_iteration_of(p.name), p) for p in work_dir.glob("iter_*.pth")]
    return [p for n, p in sorted((n, p) for n, p in found if n is not None)[::-1]]


def _hash_problem(path: Path, manifest: Dict[str, str]) -> Optional[str]:
    """Why ``path`` is not the file whose hash was recorded (None when it is, or nothing is recorded)."""
    if not manifest:
        return None  # a work dir from before hashes were recorded: loading is the only check
    try:
        digest = file_sha256(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if path.name == LATEST:
        return None if digest in manifest.values() else f"matches no sha256 recorded in {MANIFEST} (corrupt?)"
    if path.name not in manifest:
        return f"has no sha256 in {MANIFEST}"
    return None if manifest[path.name] == digest else f"does not match its sha256 in {MANIFEST} (corrupt?)"


def _load_training_state(path: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    try:
        state = load_checkpoint(path)
    except NLBenchError as exc:
        return None, f"cannot be loaded ({exc})"
    if "iteration" not in state or "optimizer" not in state:
        return None, "is not a training checkpoint (expected 'iteration' and 'optimizer')"
    return state, None


# ----------------------------------------------------------------------------- resuming


@dataclass
class ResumePoint:
    """The checkpoint a resume continues from, and what it holds."""

    path: Path
    state: Dict[str, Any]


def has_checkpoint(work_dir: Path) -> bool:
    """Whether ``work_dir`` holds anything a resume could continue from."""
    return (Path(work_dir) / LATEST).exists() or bool(_newest_first(Path(work_dir)))


def choose_resume_checkpoint(work_dir: Path, log: Log, is_main: bool = True) -> Optional[ResumePoint]:
    """``latest.pth`` when it is intact, else the newest intact ``iter_N.pth`` (with a warning naming
    both; also when ``latest.pth`` is missing, e.g. the first save could not point it); None when
    there is no checkpoint at all. One NLBenchError when none is intact."""
    latest = work_dir / LATEST
    if latest.exists() and not latest.is_file():
        raise NLBenchError("expected a checkpoint file, found a folder", latest)
    candidates = ([latest] if latest.is_file() else []) + _newest_first(work_dir)
    if not candidates:
        return None
    manifest = read_manifest(work_dir)
    if not manifest and (work_dir / MANIFEST).exists() and is_main:
        log(f"warning: resume: {work_dir / MANIFEST} holds no hashes; checkpoints are loaded unverified")
    problems: List[str] = [] if latest.is_file() else ["is missing"]
    for path in candidates:
        problem = _hash_problem(path, manifest)
        state = None
        if problem is None:
            state, problem = _load_training_state(path)
        if state is not None:
            if path != latest and is_main:
                log(f"warning: resume: {latest} {problems[0]}; resuming from {path}, the newest intact checkpoint")
            return ResumePoint(path, state)
        problems.append(problem)
    older = f"; and no intact iter_N.pth ({len(problems) - 1} checked)" if len(problems) > 1 else "; and no iter_N.pth"
    raise NLBenchError(f"cannot resume: {LATEST} {problems[0]}{older}", latest)


def verify_checkpoint(path: Path) -> Path:
    """``path`` (in a work dir), checked against the work dir's recorded hashes: the evaluation and
    bench stages score a trained ``latest.pth`` only when it is the file training wrote."""
    problem = _hash_problem(path, read_manifest(path.parent))
    if problem is not None:
        raise NLBenchError(f"{path.name} {problem}; train again with --resume, which continues from the newest "
                           "intact checkpoint", path)
    return path


def repair_latest(work_dir: Path, intact: Path, log: Log) -> None:
    """Point ``latest.pth`` (corrupt or missing) at ``intact`` again, atomically. Without this a resume
    from the final ``iter_N.pth`` has nothing left to train, saves nothing, and leaves the corrupt
    file for every later stage (eval, bench) to fail on. A repair that cannot be written (a full disk)
    is a warning: the resume itself goes on, and the next save points ``latest.pth`` again."""
    try:
        point_latest(work_dir, intact)
    except NLBenchError as exc:
        log(f"warning: resume: {exc}; the next checkpoint saved points it again")
        return
    log(f"resume: {work_dir / LATEST} now names {intact.name} again (replaced atomically)")


def read_resume_state(work_dir: Path, log: Log, info: DistInfo) -> Optional[ResumePoint]:
    """Where a resume continues from (see ``choose_resume_checkpoint``), or None (with a note) when
    there is nothing to resume. Rank 0 verifies and chooses; every rank loads what it chose."""
    latest = work_dir / LATEST
    chosen = None
    if info.is_main:
        chosen = choose_resume_checkpoint(work_dir, log)
        if chosen is None:
            log(f"resume: no {latest} and no iter_N.pth; starting from iteration 0")
        elif chosen.path != latest:
            repair_latest(work_dir, chosen.path, log)
    if info.world_size == 1:
        return chosen
    name = distributed.broadcast_object(chosen.path.name if chosen is not None else None)
    if info.is_main or name is None:
        return chosen
    state, problem = _load_training_state(work_dir / name)
    if state is None:
        raise NLBenchError(f"rank {info.rank}: {problem}", work_dir / name)
    return ResumePoint(work_dir / name, state)


def restore(state: Dict[str, Any], recipe: Recipe, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: Optional[Any], latest: Path) -> int:
    """Load a resume state into the training objects; returns the iteration to continue from."""
    saved_hash = (state.get("meta") or {}).get("recipe_hash")
    # A work dir renamed into place (launch/plan.py adopt_old_work_dirs) keeps checkpoints hashed by an
    # earlier rule: the same configuration under its earlier hash resumes.
    if saved_hash and saved_hash not in (recipe.hash, *recipe.earlier_hashes):
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
    (preemption), each one hashed into ``checkpoints.sha256`` and then the new ``latest.pth``.
    With an ``AttemptLedger``, every save also brings this attempt's entry in ``attempts.json`` up
    to date."""

    def __init__(self, work_dir: Path, recipe: Recipe, info: DistInfo, ledger: Optional[AttemptLedger] = None):
        self.work_dir, self.recipe, self.info, self.ledger = work_dir, recipe, info, ledger
        self.last_saved: Optional[Path] = None

    @property
    def latest(self) -> Path:
        return self.work_dir / LATEST

    def due(self, done: int) -> bool:
        sched = self.recipe.schedule
        return done % sched.checkpoint_interval == 0 or done == sched.max_iters

    def save(self, done: int, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[Any]) -> None:
        if self.info.is_main:
            # Order matters for a crash at any point: the file is complete before its hash is
            # recorded, and its hash is recorded before latest.pth names it.
            path = self.work_dir / f"iter_{done}.pth"
            digest = torch_save_sha256(checkpoint_state(model, optimizer, scaler, done, self.recipe), path)
            record_sha256(self.work_dir, path.name, digest)
            point_latest(self.work_dir, path)
            self.last_saved = path
            if self.ledger is not None:
                self.ledger.update(done)
        distributed.barrier()

    def ended(self, done: int, outcome: str, peak_mem_gb: Optional[float] = None) -> Dict[str, Any]:
        """Close this attempt's ledger entry (``done``, ``interrupted`` or ``diverged``); returns the run's totals."""
        if self.ledger is None:
            return {}
        self.ledger.update(done, outcome, peak_mem_gb)
        return self.ledger.totals()

    def final_path(self) -> Optional[str]:
        if self.latest.exists():
            return str(self.latest)
        return str(self.last_saved) if self.last_saved else None
