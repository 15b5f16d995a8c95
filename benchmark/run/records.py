"""Result records: one JSON file per finished stage (train, eval, eval ms+flip, bench).

Schema ``nlbench.record/1`` (docs/ARCHITECTURE.md). A record lives at
``RESULTS/records/<recipe>/<profile>/seed<seed>/<kind>-<UTC time>-<8 hex>.json``; the random suffix
and the write-to-temp-then-rename make concurrent writers (SLURM array tasks, DDP ranks on a shared
file system) safe without any locking. Reading is forgiving: a record that is corrupt, partial,
foreign (not ours) or of an unknown recipe is skipped with a warning naming the file.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from benchmark import __version__
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text, file_sha256, json_safe
from benchmark.io.jobenv import job_environment
from benchmark.io.layout import ResultsLayout, source_part
from benchmark.recipe import REPO_ROOT, list_recipe_paths
from benchmark.run.schema import (
    CHECKPOINT_SOURCES,
    KINDS,
    SCHEMA,
    CheckpointSource,
    Kind,
    Record,
    validate_record,
)

# The record's model, its kinds and checkpoint sources: run/schema.py. Eval, ms+flip and bench
# records of MMSeg's released checkpoints say so in ``checkpoint_source``; results of the two sources
# are never mixed.
__all__ = ["CHECKPOINT_SOURCES", "KINDS", "SCHEMA", "CheckpointSource", "Kind", "Record", "RecordStore",
           "RowKey", "chosen_by_kind", "load_records", "newest_by_kind", "provenance", "row_configuration",
           "validate_record", "write_record"]

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- writing


def write_record(results_dir: PathLike, record: Dict[str, Any]) -> Path:
    """Validate ``record``, stamp ``schema`` and ``created_at``, write it atomically, return its path.

    ``created_at`` is kept when the caller gives one (tests plant older records); otherwise it is now.
    The file name ends in 8 random hex digits, so writers never pick the same name.
    """
    if not isinstance(record, dict):
        raise NLBenchError(f"a record must be a dict, got {type(record).__name__}", results_dir)
    now = datetime.now(timezone.utc)
    body = dict(record)
    if body.get("schema", SCHEMA) != SCHEMA:
        raise NLBenchError(f"expected {SCHEMA!r}, got {body['schema']!r}", key="schema")
    body["schema"] = SCHEMA
    body.setdefault("created_at", now.isoformat(timespec="microseconds"))
    body = json_safe(body)  # a class absent from the split has a NaN IoU: null
    problems = validate_record(body)
    if problems:
        raise NLBenchError("invalid record: " + "; ".join(problems), results_dir)
    # Field order of the schema first, anything extra after.
    order = ["schema", "kind", "recipe", "profile", "seed", "created_at", "iterations", "wall_time_s",
             "gpu_hours", "metrics", "mem_gb", "fps", "provenance"]
    ordered = {k: body.get(k) for k in order}
    ordered.update({k: v for k, v in body.items() if k not in ordered})
    folder = ResultsLayout.of(results_dir).record_dir(body["recipe"], body["profile"], body["seed"])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            path = folder / f"{body['kind']}-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}.json"
            if not path.exists():
                break
        atomic_write_text(path, json.dumps(ordered, indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise NLBenchError(f"cannot write record: {exc.strerror or exc}", folder) from None
    return path


# ----------------------------------------------------------------------------- provenance


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def provenance(recipe, device=None, dtype: str = "float32", checkpoint: Optional[PathLike] = None) -> Dict[str, Any]:
    """Where, how and from what a result was made.

    ``recipe`` is a loaded Recipe (its hash is recorded); ``device`` a torch.device or string (default:
    CUDA when available, else CPU); ``checkpoint`` a file whose sha256 is recorded. Every probe that
    can fail (no git, no CUDA) gives None rather than an error.
    """
    import torch  # here, not at module level: reading records must not pay for importing torch

    from benchmark.engine.distributed import device_info

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    facts = device_info(dev)
    env = job_environment()
    checkpoint_sha = None
    if checkpoint is not None:
        try:
            checkpoint_sha = file_sha256(checkpoint)
        except OSError as exc:
            raise NLBenchError(f"cannot hash checkpoint: {exc.strerror or exc}", checkpoint) from None
    return {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(status.strip()) if status is not None else None,
        "nlbench_version": __version__,
        "torch_version": facts["torch_version"],
        "cuda_version": facts["cuda_version"],
        "cudnn_version": facts["cudnn_version"],
        "device_name": facts["device_name"],
        "device_count": facts["device_count"],
        # CPU float sums depend on the thread count (recipe runtime.cpu_threads): part of a CPU result.
        "cpu_threads": facts.get("cpu_threads"),
        # The processor and the instruction set ATen ran on: a CPU result's rounding, and so the smoke
        # profile's numbers, depend on both (docs/SMOKE.md).
        "cpu_model": facts.get("cpu_model"),
        "cpu_capability": facts.get("cpu_capability"),
        "world_size": env.world_size,
        "dtype": dtype,
        # TF32 (CUDA matmuls and cuDNN convolutions) as the run set it: recipe runtime.tf32, off by
        # default as on the published V100s; the bench's settings record their own in `measurement`.
        "tf32": recipe.runtime.tf32,
        "hostname": env.hostname,
        "slurm_job_id": env.slurm_job_id,
        "slurm_array_job_id": env.slurm_array_job_id,
        "slurm_array_task_id": env.slurm_array_task_id,
        "recipe_hash": recipe.hash,
        "config_hash": recipe.config_hash,  # the same for every seed of one configuration
        "checkpoint_sha256": checkpoint_sha,
    }


# ----------------------------------------------------------------------------- reading


def known_recipe_names() -> set:
    return {p.stem for p in list_recipe_paths()}


def _record_files(root: Path) -> Iterable[Path]:
    """Every ``*.json`` under ``root``; temp files of writers in flight (dot-prefixed) are not records."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.name.endswith(".json"):
                yield Path(entry.path)


def read_record(path: Path) -> Tuple[Optional[Record], Optional[str]]:
    """(the record, None), or (None, why it is skipped). The one place a record file is opened."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON (truncated or corrupt): {exc.msg} at line {exc.lineno}"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    record, problems = Record.parse(data)
    return (record.located(str(path)), None) if record is not None else (None, "; ".join(problems))


RowKey = Tuple[str, str, CheckpointSource, int]  # (recipe, profile, checkpoint source, seed)


class RecordStore:
    """The valid records of a results folder, read once; every question about them is answered here.

    ``read`` takes every record (the report verbs, run-all's plan and its end); ``read_row`` one row's
    folder (a job deciding, under its lock, which stages are left). A file that is corrupt, partial,
    foreign or of an unknown recipe is left out with a warning naming it (``warnings``).
    """

    def __init__(self, records: List[Record], warnings: List[str], where: Path):
        self.records = sorted(records, key=lambda r: r.path or "")  # by file path: deterministic
        self.warnings = warnings
        self.where = where  # the folder read: errors about the records name it

    @classmethod
    def read(cls, results_dir: PathLike, known_recipes: Optional[Iterable[str]] = None) -> "RecordStore":
        """Every record under ``RESULTS/records``. ``known_recipes`` defaults to the recipes folder's
        names; a record of any other recipe is skipped (pass a set to accept recipes loaded elsewhere)."""
        root = ResultsLayout.of(results_dir).records
        known = set(known_recipes) if known_recipes is not None else known_recipe_names()
        records, warnings = [], []
        for path in sorted(_record_files(root)):
            record, why = read_record(path)
            if record is not None and record.recipe not in known:
                why = f"recipe: unknown recipe {record.recipe!r} (not in the recipes folder)"
            if why is not None:
                warnings.append(f"{path}: skipped: {why}")
            else:
                records.append(record)
        return cls(records, warnings, root)

    @classmethod
    def read_row(cls, results_dir: PathLike, recipe: str, profile: str, seed: int) -> "RecordStore":
        """The records of one (recipe, profile, seed) folder; a record naming another row counts for nothing."""
        folder = ResultsLayout.of(results_dir).record_dir(recipe, profile, seed)
        records = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name.startswith("."):
                continue  # a writer's temporary file
            record, _ = read_record(path)
            if record is not None and (record.recipe, record.profile, record.seed) == (recipe, profile, seed):
                records.append(record)
        return cls(records, [], folder)

    def row(self, recipe: str, profile: str, seed: int, recipe_hash: Optional[str] = None,
            source: str = CheckpointSource.TRAINED) -> List[Record]:
        """The records of one (recipe, profile, seed) and checkpoint ``source``, oldest first; with
        ``recipe_hash``, only those made with exactly that resolved recipe."""
        found = [r for r in self.records if (r.recipe, r.profile, r.seed, r.source) == (recipe, profile, seed, source)
                 and (recipe_hash is None or r.provenance.recipe_hash == recipe_hash)]
        return sorted(found, key=lambda r: r.created_at)

    def kinds_done(self, recipe: str, profile: str, seed: int, recipe_hash: Optional[str] = None,
                   source: str = CheckpointSource.TRAINED) -> set:
        """Kinds with a valid record for (recipe, profile, seed): what plan, job and status all count as done.

        With ``recipe_hash``, only records made with exactly that resolved recipe count, so a changed
        recipe or ``--set`` runs the stages again instead of reusing another configuration's results.
        Only records of checkpoint ``source`` count: a released checkpoint's eval never makes a trained
        row look done, nor the other way round. A train record of a run the guard stopped
        (``status: diverged``) does not make training done.
        """
        return {r.kind for r in self.row(recipe, profile, seed, recipe_hash, source) if not r.diverged}

    def diverged(self, recipe: str, profile: str, seed: int, recipe_hash: Optional[str] = None) -> Optional[Record]:
        """The newest train record of a run the guard stopped, unless a later one says training finished."""
        trains = [r for r in self.row(recipe, profile, seed, recipe_hash) if r.kind == Kind.TRAIN]
        return trains[-1] if trains and trains[-1].diverged else None

    def newest_by_kind(self) -> Dict[RowKey, Dict[Kind, Record]]:
        return newest_by_kind(self.records)

    def chosen_by_kind(self) -> Tuple[Dict[RowKey, Dict[Kind, Record]], List[str]]:
        return chosen_by_kind(self.records)


def newest_by_kind(records: Iterable[Record]) -> Dict[RowKey, Dict[Kind, Record]]:
    """(recipe, profile, checkpoint source, seed) -> {kind: the newest record of that kind} (by
    created_at, then path)."""
    newest: Dict[Tuple[RowKey, Kind], Record] = {}
    for rec in records:
        key = (rec.row, rec.kind)
        held = newest.get(key)
        if held is None or (rec.created, rec.path or "") > (held.created, held.path or ""):
            newest[key] = rec
    by_seed: Dict[RowKey, Dict[Kind, Record]] = {}
    for (row, kind), rec in newest.items():
        by_seed.setdefault(row, {})[kind] = rec
    return by_seed


def _newest(records: Iterable[Record]) -> Record:
    return max(records, key=lambda r: (r.created, r.path or ""))


def _short(recipe_hash: Any) -> str:
    return str(recipe_hash)[:12] if recipe_hash else "none"


def _row_name(row: RowKey) -> str:
    recipe, profile, source, seed = row
    return f"{profile}/{recipe}/{source_part(source.value)}seed{seed}"


def row_configuration(records: List[Record]) -> Any:
    """The resolved recipe (hash) a row's figures come from: that of its newest train record (what was
    trained last), or, with none (a released checkpoint; a run still training), of its newest record."""
    trains = [r for r in records if r.kind == Kind.TRAIN]
    return _newest(trains or records).provenance.recipe_hash


def chosen_by_kind(records: Iterable[Record]) -> Tuple[Dict[RowKey, Dict[Kind, Record]], List[str]]:
    """(recipe, profile, checkpoint source, seed) -> {kind: the record used}, and one line for every
    choice made: records of another resolved recipe than the row's (``row_configuration``) are left
    out, never joined with it; of two records of one kind and recipe the newest is used, and both are
    named. Nothing is chosen silently."""
    by_row: Dict[RowKey, List[Record]] = {}
    for rec in records:
        by_row.setdefault(rec.row, []).append(rec)
    chosen: Dict[RowKey, Dict[Kind, Record]] = {}
    notes: List[str] = []
    for row, found in sorted(by_row.items(), key=lambda item: _row_name(item[0])):
        config = row_configuration(found)
        mine = [r for r in found if r.provenance.recipe_hash == config]
        other: Dict[Any, List[str]] = {}
        for rec in found:
            if rec.provenance.recipe_hash != config:
                other.setdefault(rec.provenance.recipe_hash, []).append(rec.kind.value)
        for recipe_hash, kinds in other.items():
            notes.append(f"{_row_name(row)}: {len(kinds)} record(s) of another resolved recipe (hash "
                         f"{_short(recipe_hash)}: {', '.join(sorted(kinds))}) left out; the row's figures are those "
                         f"of hash {_short(config)}, its newest train record's (or newest record's)")
        kinds_of: Dict[Kind, List[Record]] = {}
        for rec in mine:
            kinds_of.setdefault(rec.kind, []).append(rec)
        chosen[row] = {kind: _newest(recs) for kind, recs in kinds_of.items()}
        for kind, recs in kinds_of.items():
            if len(recs) > 1:
                used = chosen[row][kind]
                rest = [r.path or "?" for r in recs if r is not used]
                notes.append(f"{_row_name(row)}: {len(recs)} {kind.value} records of one resolved recipe (hash "
                             f"{_short(config)}): used {used.path} (the newest, {used.created_at}); not "
                             f"{', '.join(rest)}")
    return _one_configuration_per_row(chosen, notes), notes


def _one_configuration_per_row(chosen: Dict[RowKey, Dict[Kind, Record]],
                               notes: List[str]) -> Dict[RowKey, Dict[Kind, Record]]:
    """Seeds are averaged only over one configuration (``provenance.config_hash``: the recipe hash
    without the seed; older records have none and are kept): a row's is that of its newest train
    record over all seeds; a seed of another one is left out, and said in ``notes``."""
    by_row: Dict[Tuple[str, str, CheckpointSource], List[Record]] = {}
    for (recipe, profile, source, _), kinds in chosen.items():
        by_row.setdefault((recipe, profile, source), []).extend(kinds.values())
    config = {}
    for row, recs in by_row.items():
        known = [r for r in recs if r.provenance.config_hash]
        trains = [r for r in known if r.kind == Kind.TRAIN]
        config[row] = _newest(trains or known).provenance.config_hash if known else None
    kept = {}
    for key, kinds in chosen.items():
        mine = config[key[:3]]
        other = {r.provenance.config_hash for r in kinds.values()} - {None, mine}
        if mine is not None and other:
            notes.append(f"{_row_name(key)}: left out of the row's figures: it ran another configuration (config "
                         f"hash {_short(sorted(other)[0])}) than the row's newest training ({_short(mine)})")
        else:
            kept[key] = kinds
    return kept


def load_records(results_dir: PathLike,
                 known_recipes: Optional[Iterable[str]] = None) -> Tuple[List[Record], List[str]]:
    """All valid records under ``RESULTS/records`` (by file path) and one warning per skipped file."""
    store = RecordStore.read(results_dir, known_recipes)
    return store.records, store.warnings
