"""`nlbench collect`: result records -> one pandas table, one row per (recipe, profile, checkpoint source).

Two steps, both plain functions so tables/plots/compare share them:
  runs(records)      per (recipe, profile, source, seed): the records of one resolved recipe (that of the newest
                     train record), the newest of each kind, joined: one row per seed (run/records.py
                     chosen_by_kind; what it left out or chose between is said in the warnings)
  summarize(runs)    mean, std, min, max and n over seeds for every metric, provenance kept

``checkpoint_source`` keeps results on MMSeg's released checkpoints ("released") apart from those on
checkpoints nlbench trained ("trained"); the two are never averaged together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import pandas as pd

from benchmark.errors import NLBenchError
from benchmark.run.records import Kind, Record, RecordStore, RowKey, chosen_by_kind

# Column name -> where it comes from: (record kind, path inside that record).
METRIC_SOURCES = {
    "miou": ("eval", ("metrics", "mIoU")),
    "miou_ms_flip": ("eval_ms_flip", ("metrics", "mIoU")),
    "aacc": ("eval", ("metrics", "aAcc")),
    "macc": ("eval", ("metrics", "mAcc")),
    "mem_gb": ("bench", ("mem_gb",)),
    "fps": ("bench", ("fps",)),
    # The bench record's fast setting (nlbench's fast path), and both settings' training step
    # (`nlbench bench --train-step`); the columns above are the published setting's.
    "mem_gb_fast": ("bench", ("fast", "mem_gb")),
    "fps_fast": ("bench", ("fast", "fps")),
    "train_step_s": ("bench", ("train_step_s",)),
    "train_step_s_fast": ("bench", ("fast", "train_step_s")),
    # The peak the train stage itself saw, measured the way the recipe trains (its attention, amp,
    # layout, world size): never the published setting, so it never fills Mem (GB) nor is gated.
    "train_mem_gb": ("train", ("mem_gb",)),
}
METRICS = list(METRIC_SOURCES)
STATS = ("mean", "std", "min", "max", "n")
# Provenance fields carried into the summary; where seeds disagree the distinct values are joined by "; ".
PROVENANCE = ["device_name", "device_count", "dtype", "git_commit", "git_dirty", "torch_version",
              "cuda_version", "cudnn_version", "recipe_hash", "hostname", "checkpoint_sha256"]
KEY = ["recipe", "profile", "checkpoint_source"]
TRAINED, RELEASED = "trained", "released"


def of_source(summary: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows of one checkpoint source (a summary or per-seed table)."""
    return summary[summary["checkpoint_source"] == source]


def _dig(record: Optional[Record], path: Iterable[str]) -> Any:
    node: Any = record
    for part in path:
        node = getattr(node, part, None)
    return node


def runs(records: Union[List[Record], Dict[RowKey, Dict[Kind, Record]]]) -> pd.DataFrame:
    """One row per (recipe, profile, checkpoint source, seed): the newest record of each kind of one
    resolved recipe, joined (``records``: a list, or already ``chosen_by_kind``'s choice)."""
    rows = []
    for (recipe, profile, source, seed), kinds in (records if isinstance(records, dict)
                                                   else chosen_by_kind(records)[0]).items():
        row: Dict[str, Any] = {"recipe": recipe, "profile": profile, "checkpoint_source": source.value, "seed": seed}
        for column, (kind, path) in METRIC_SOURCES.items():
            value = _dig(kinds.get(kind), path)
            row[column] = float(value) if value is not None else float("nan")
        train, bench = kinds.get(Kind.TRAIN), kinds.get(Kind.BENCH)
        # mem_kind says what Mem (GB) is: CUDA max allocated, or peak RSS on a CPU.
        row["mem_kind"] = bench.mem_kind if bench is not None and bench.mem_gb is not None else None
        row["iterations"] = train.iterations if train is not None else None
        row["train_wall_time_s"] = train.wall_time_s if train is not None else None
        row["gpu_hours"] = sum(float(r.gpu_hours or 0.0) for r in kinds.values())
        # Speed and memory describe the bench device; the rest describe the eval (or any) record.
        prov_source = bench or kinds.get(Kind.EVAL) or next(iter(kinds.values()))
        for field in PROVENANCE:
            row[field] = getattr(prov_source.provenance, field, None)
        row["kinds"] = ",".join(sorted(k.value for k in kinds))
        row["created_at"] = max(r.created_at for r in kinds.values())
        row["deviations"] = _deviations(kinds)
        rows.append(row)
    columns = ["recipe", "profile", "checkpoint_source", "seed", *METRICS, "mem_kind", "iterations",
               "train_wall_time_s", "gpu_hours", *PROVENANCE, "kinds", "created_at", "deviations"]
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values(["recipe", "profile", "checkpoint_source", "seed"], kind="stable").reset_index(drop=True)


DEVIATION_SEPARATOR = "; "


def _deviations(kinds: Dict[Kind, Record]) -> Optional[str]:
    """The seed's deviations from the published setting (run/deviations.py), its eval record's first,
    joined by "; "; None when no record says (written before records carried them)."""
    order = [Kind.EVAL, Kind.EVAL_MS_FLIP, Kind.TRAIN, Kind.BENCH]
    lists = [kinds[k].deviations for k in order if k in kinds and kinds[k].deviations is not None]
    if not lists:
        return None
    return DEVIATION_SEPARATOR.join(dict.fromkeys(phrase for phrases in lists for phrase in phrases))


def _union(values: pd.Series) -> Optional[str]:
    """Every seed's deviations, each phrase once, in order (None when no seed's records say)."""
    texts = [v for v in values.tolist() if isinstance(v, str)]
    if not texts:
        return None
    return DEVIATION_SEPARATOR.join(dict.fromkeys(p for t in texts for p in t.split(DEVIATION_SEPARATOR) if p))


def _distinct(values: pd.Series) -> Any:
    seen = [v for v in dict.fromkeys(values.tolist()) if v is not None and not (isinstance(v, float) and v != v)]
    if not seen:
        return None
    if len(seen) == 1:
        return seen[0]
    return "; ".join(str(v) for v in seen)


def summarize(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per (recipe, profile, checkpoint_source): ``<metric>_{mean,std,min,max,n}`` over seeds (std with ddof=1, NaN for
    one seed), ``n_seeds``, ``seeds``, summed ``gpu_hours``, the provenance columns and ``deviations``
    (every seed's ways of differing from the published setting, "; "-joined; empty for older records)."""
    grouped = per_seed.groupby(KEY, sort=True)
    stats = grouped[METRICS].agg(["mean", "std", "min", "max", "count"])
    stats.columns = [f"{metric}_{'n' if stat == 'count' else stat}" for metric, stat in stats.columns]
    out = stats
    out["n_seeds"] = grouped["seed"].count()
    out["seeds"] = grouped["seed"].agg(lambda s: ",".join(str(v) for v in sorted(s)))
    out["iterations"] = grouped["iterations"].agg(_distinct)
    out["gpu_hours"] = grouped["gpu_hours"].sum()
    for field in ["mem_kind", *PROVENANCE]:
        out[field] = grouped[field].agg(_distinct)
    out["created_at"] = grouped["created_at"].max()
    out["deviations"] = grouped["deviations"].agg(_union)
    return out.reset_index()


@dataclass(frozen=True)
class Collected:
    """What ``collect`` found: the summary, the per-seed table it was made from, the record of each kind
    used per seed (the report's row pages and the metafile read these), and what was skipped or chosen."""

    summary: pd.DataFrame  # one row per (recipe, profile, checkpoint source): see ``summarize``
    per_seed: pd.DataFrame  # one row per seed: see ``runs``
    newest: Dict[RowKey, Dict[Kind, Record]]
    warnings: List[str]  # one line per skipped record file
    records: int  # valid records read
    # One line per choice among valid records: records of another resolved recipe left out of a row,
    # or two records of one kind (which was used and why); printed with the warnings.
    choices: List[str] = dataclasses.field(default_factory=list)


def collect(results: Union[str, Path, RecordStore], known_recipes: Optional[Iterable[str]] = None) -> Collected:
    """The summary of every valid record under ``results`` (a results folder, or its records already
    read). Raises NLBenchError when there is nothing to collect."""
    store = results if isinstance(results, RecordStore) else RecordStore.read(results, known_recipes)
    if not store.records:
        if store.warnings:  # one line still: the first skipped file and why
            raise NLBenchError(f"no result records to collect: {len(store.warnings)} file(s) there were skipped, "
                               f"the first: {store.warnings[0]}", store.where)
        raise NLBenchError("no result records to collect (the folder has none); run `nlbench run-all` first",
                           store.where)
    newest, choices = store.chosen_by_kind()
    per_seed = runs(newest)
    return Collected(summarize(per_seed), per_seed, newest, store.warnings, len(store.records), choices)


Warn = Callable[[str], None]  # told each warning line (the commands print them to stderr)


def collect_or_warn(results: Union[str, Path, RecordStore], warn: Warn) -> Collected:
    """``collect`` for the CLI verbs: each skipped record and each choice among records is one warning
    line for ``warn``."""
    collected = collect(results)
    for line in [*collected.warnings, *collected.choices]:
        warn(f"warning: {line}")
    return collected


def format_stat(mean: float, std: float, n: int, digits: int) -> str:
    """'78.24', '78.24 ± 0.31' (several seeds) or '-' (nothing measured)."""
    if n == 0 or mean != mean:
        return "-"
    text = f"{mean:.{digits}f}"
    if n > 1 and std == std:
        text += f" ± {std:.{digits}f}"
    return text

