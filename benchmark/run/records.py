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
from benchmark.recipe import REPO_ROOT, list_recipe_paths

SCHEMA = "nlbench.record/1"
# The stages of a job, in the order they run; a record's kind is the stage that wrote it.
KINDS = ("train", "eval", "eval_ms_flip", "bench")
EVAL_KINDS = ("eval", "eval_ms_flip")
# Where the evaluated weights came from: trained by nlbench (the job's own train stage) or MMSeg's
# released file. Eval, ms+flip and bench records say so in ``checkpoint_source``; a record without
# the field (older ones, train records) is "trained". Results of the two are never mixed.
CHECKPOINT_SOURCES = ("trained", "released")
RECORDS_SUBDIR = "records"

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _safe_component(value: Any) -> bool:
    """Usable as one folder name: recipe and profile names become path components."""
    return (
        isinstance(value, str)
        and value != ""
        and not value.startswith(".")
        and "/" not in value
        and "\\" not in value
        and "\0" not in value
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _identity_problems(record: Dict[str, Any]) -> List[str]:
    problems = []
    kind = record.get("kind")
    if kind not in KINDS:
        problems.append(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    for key in ("recipe", "profile"):
        if not _safe_component(record.get(key)):
            problems.append(f"{key}: expected a non-empty name without '/', got {record.get(key)!r}")
    seed = record.get("seed")
    if not (_is_count(seed) and seed >= 0):
        problems.append(f"seed: expected an integer >= 0, got {seed!r}")
    created = record.get("created_at")
    try:
        parsed = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        problems.append(f"created_at: expected an ISO-8601 time with a UTC offset, got {created!r}")
    return problems


def _figure_problems(record: Dict[str, Any]) -> List[str]:
    problems = []
    iterations = record.get("iterations")
    if iterations is not None and not _is_count(iterations):
        problems.append(f"iterations: expected an integer or null, got {iterations!r}")
    for key in ("wall_time_s", "gpu_hours", "mem_gb", "fps", "train_step_s", "train_step_mem_gb"):
        value = record.get(key)
        if value is not None and not _is_number(value):
            problems.append(f"{key}: expected a number or null, got {value!r}")
    attempts = record.get("attempts")
    if attempts is not None and not (_is_count(attempts) and attempts >= 1):
        problems.append(f"attempts: expected an integer >= 1 or null, got {attempts!r}")
    if record.get("kind") == "bench" and not _is_number(record.get("fps")):
        problems.append(f"fps: required (a number) for a bench record, got {record.get('fps')!r}")
    return problems


# A bench record's ``fast`` object: nlbench's fast-path figures and the setting that made them
# (benchmark/engine/settings.py); the top-level fps and mem_gb are the ``published`` setting's.
FAST_NUMBERS = ("mem_gb", "infer_mem_gb", "train_step_s", "train_step_mem_gb")
FAST_FLAGS = ("tf32", "cudnn_benchmark", "channels_last", "compile", "ddp", "grad_set_to_none", "softmax_in_timer")


def _fast_problems(record: Dict[str, Any]) -> List[str]:
    fast = record.get("fast")
    if fast is None:
        return []
    if not isinstance(fast, dict):
        return [f"fast: expected an object (the fast setting's figures) or null, got {type(fast).__name__}"]
    problems = [] if _is_number(fast.get("fps")) else [f"fast.fps: expected a number, got {fast.get('fps')!r}"]
    problems += [f"fast.{key}: expected a number or null, got {fast.get(key)!r}"
                 for key in FAST_NUMBERS if fast.get(key) is not None and not _is_number(fast.get(key))]
    if fast.get("attention") not in ("explicit", "sdpa"):
        problems.append(f"fast.attention: expected explicit or sdpa, got {fast.get('attention')!r}")
    if fast.get("amp") not in (None, "bf16", "fp16"):
        problems.append(f"fast.amp: expected null, bf16 or fp16, got {fast.get('amp')!r}")
    problems += [f"fast.{key}: expected true or false, got {fast.get(key)!r}"
                 for key in FAST_FLAGS if not isinstance(fast.get(key), bool)]
    measurement = (record.get("provenance") or {}).get("measurement") if isinstance(record.get("provenance"),
                                                                                   dict) else None
    if measurement is not None and not isinstance(measurement, dict):
        problems.append("provenance.measurement: expected an object of setting name -> setting")
    return problems


def _metrics_problems(record: Dict[str, Any]) -> List[str]:
    metrics, kind = record.get("metrics"), record.get("kind")
    if metrics is not None and not isinstance(metrics, dict):
        return [f"metrics: expected an object or null, got {type(metrics).__name__}"]
    if kind not in EVAL_KINDS:
        return []
    if metrics is None:
        return [f"metrics: required for a {kind} record"]
    problems = [f"metrics.{key}: expected a number (percent), got {metrics.get(key)!r}"
                for key in ("aAcc", "mIoU", "mAcc") if not _is_number(metrics.get(key))]
    per_class = metrics.get("per_class")
    if per_class is not None and not isinstance(per_class, dict):
        problems.append("metrics.per_class: expected an object of class -> {IoU, Acc}")
    return problems


TRAIN_STATUSES = ("completed", "diverged")  # a train record's ``status`` (absent in older records: completed)


def _guard_problems(record: Dict[str, Any]) -> List[str]:
    """``status`` and ``guard`` (the training guard's evidence) of train records."""
    problems = []
    status = record.get("status")
    if status is not None and status not in TRAIN_STATUSES:
        problems.append(f"status: expected one of {', '.join(TRAIN_STATUSES)} or null, got {status!r}")
    if status == "diverged" and record.get("kind") != "train":
        problems.append(f"status: only a train record can be diverged, this is a {record.get('kind')} record")
    guard = record.get("guard")
    if guard is not None and not isinstance(guard, dict):
        problems.append(f"guard: expected an object (the guard's evidence) or null, got {type(guard).__name__}")
    if status == "diverged" and not _is_count(record.get("stopped_at_iteration")):
        problems.append("stopped_at_iteration: required (an integer) for a diverged train record")
    return problems


def validate_record(record: Any) -> List[str]:
    """Problems with a record (empty list = valid). Each problem names the key and what was expected."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    if record.get("schema") != SCHEMA:
        # A foreign file: the rest of the checks would only add noise.
        return [f"schema: expected {SCHEMA!r}, got {record.get('schema')!r}"]
    problems = (_identity_problems(record) + _figure_problems(record) + _metrics_problems(record)
                + _fast_problems(record) + _guard_problems(record))
    if not isinstance(record.get("provenance"), dict):
        problems.append("provenance: expected an object (see records.provenance())")
    source = record.get("checkpoint_source")
    if source is not None and source not in CHECKPOINT_SOURCES:
        problems.append(f"checkpoint_source: expected one of {', '.join(CHECKPOINT_SOURCES)}, got {source!r}")
    elif source == "released" and record.get("kind") == "train":
        problems.append("checkpoint_source: a train record makes its own checkpoint, it cannot be 'released'")
    return problems


def checkpoint_source(record: Dict[str, Any]) -> str:
    """"trained" or "released" (a record without the field is "trained")."""
    return record.get("checkpoint_source") or "trained"


# ----------------------------------------------------------------------------- writing


def record_dir(results_dir: PathLike, recipe: str, profile: str, seed: int) -> Path:
    return Path(results_dir) / RECORDS_SUBDIR / recipe / profile / f"seed{seed}"


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
    folder = record_dir(results_dir, body["recipe"], body["profile"], body["seed"])
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


def load_records(
    results_dir: PathLike, known_recipes: Optional[Iterable[str]] = None
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """All valid records under ``RESULTS/records`` and one warning per skipped file.

    ``known_recipes`` defaults to the recipes folder's names; a record of any other recipe is skipped
    (pass a set to accept records of recipes loaded from elsewhere). Each returned record carries its
    file path under ``_path``. The order is by file path (deterministic).
    """
    root = Path(results_dir) / RECORDS_SUBDIR
    known = set(known_recipes) if known_recipes is not None else known_recipe_names()
    records: List[Dict[str, Any]] = []
    warnings: List[str] = []
    for path in sorted(_record_files(root)):
        try:
            with open(path, "r", encoding="utf-8") as fh:
                record = json.load(fh)
        except UnicodeDecodeError:
            warnings.append(f"{path}: skipped: not UTF-8 text")
            continue
        except json.JSONDecodeError as exc:
            warnings.append(f"{path}: skipped: not valid JSON (truncated or corrupt): {exc.msg} at line {exc.lineno}")
            continue
        except OSError as exc:
            warnings.append(f"{path}: skipped: cannot read: {exc.strerror or exc}")
            continue
        problems = validate_record(record)
        if problems:
            warnings.append(f"{path}: skipped: " + "; ".join(problems))
            continue
        if record["recipe"] not in known:
            warnings.append(f"{path}: skipped: recipe: unknown recipe {record['recipe']!r} (not in the recipes folder)")
            continue
        record["_path"] = str(path)
        records.append(record)
    return records, warnings


def row_records(results_dir: PathLike, recipe: str, profile: str, seed: int,
                recipe_hash: Optional[str] = None, source: str = "trained") -> List[Dict[str, Any]]:
    """The valid records of one (recipe, profile, seed) and checkpoint ``source``, oldest first; with
    ``recipe_hash``, only those made with exactly that resolved recipe. A corrupt or foreign file
    counts for nothing."""
    records = []
    folder = record_dir(results_dir, recipe, profile, seed)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue  # a writer's temporary file
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if validate_record(record) or (record["recipe"], record["profile"], record["seed"]) != (recipe, profile, seed):
            continue
        if recipe_hash is not None and record["provenance"].get("recipe_hash") != recipe_hash:
            continue
        if checkpoint_source(record) != source:
            continue
        records.append(record)
    return sorted(records, key=lambda r: r["created_at"])


def record_kinds(results_dir: PathLike, recipe: str, profile: str, seed: int,
                 recipe_hash: Optional[str] = None, source: str = "trained") -> set:
    """Kinds with a valid record for (recipe, profile, seed): what plan, job and status all count as done.

    Only that row's folder is read; a corrupt or foreign file counts for nothing (the stage runs again).
    With ``recipe_hash``, only records made with exactly that resolved recipe count, so a changed
    recipe or ``--set`` runs the stages again instead of reusing another configuration's results.
    Only records of checkpoint ``source`` count: a released checkpoint's eval never makes a trained
    row look done, nor the other way round. A train record of a run the guard stopped
    (``status: diverged``) does not make training done.
    """
    return {r["kind"] for r in row_records(results_dir, recipe, profile, seed, recipe_hash, source)
            if r.get("status") != "diverged"}


def diverged_record(results_dir: PathLike, recipe: str, profile: str, seed: int,
                    recipe_hash: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The newest train record of a run the guard stopped, unless a later one says training finished."""
    trains = [r for r in row_records(results_dir, recipe, profile, seed, recipe_hash) if r["kind"] == "train"]
    return trains[-1] if trains and trains[-1].get("status") == "diverged" else None
