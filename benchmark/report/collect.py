"""`nlbench collect`: result records -> one pandas table, one row per (recipe, profile, checkpoint source).

Two steps, both plain functions so tables/plots/compare share them:
  runs(records)      newest record per (recipe, profile, source, seed, kind), kinds joined: one row per seed
  summarize(runs)    mean, std, min, max and n over seeds for every metric, provenance kept

``checkpoint_source`` keeps results on MMSeg's released checkpoints ("released") apart from those on
checkpoints nlbench trained ("trained"); the two are never averaged together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import pandas as pd
from tabulate import tabulate

from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_text
from benchmark.io.layout import ResultsLayout
from benchmark.run.records import Kind, Record, RecordStore, RowKey, newest_by_kind

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
    """One row per (recipe, profile, checkpoint source, seed): the newest record of each kind, joined
    (``records``: a list, or already ``newest_by_kind``)."""
    rows = []
    for (recipe, profile, source, seed), kinds in (records if isinstance(records, dict)
                                                   else newest_by_kind(records)).items():
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
    """What ``collect`` found: the summary, the per-seed table it was made from, the newest record of
    each kind per seed (the report's row pages and the metafile read these), and what was skipped."""

    summary: pd.DataFrame  # one row per (recipe, profile, checkpoint source): see ``summarize``
    per_seed: pd.DataFrame  # one row per seed: see ``runs``
    newest: Dict[RowKey, Dict[Kind, Record]]
    warnings: List[str]  # one line per skipped record file
    records: int  # valid records read


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
    newest = store.newest_by_kind()
    per_seed = runs(newest)
    return Collected(summarize(per_seed), per_seed, newest, store.warnings, len(store.records))


def collect_or_warn(results: Union[str, Path, RecordStore]) -> Collected:
    """``collect`` for the CLI verbs: skipped-record warnings go to stderr, one line each."""
    collected = collect(results)
    print_warnings(collected.warnings)
    return collected


def print_warnings(warnings: List[str]) -> None:
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)


def format_stat(mean: float, std: float, n: int, digits: int) -> str:
    """'78.24', '78.24 ± 0.31' (several seeds) or '-' (nothing measured)."""
    if n == 0 or mean != mean:
        return "-"
    text = f"{mean:.{digits}f}"
    if n > 1 and std == std:
        text += f" ± {std:.{digits}f}"
    return text


def collect_command(results: str = "results", out: Optional[str] = None) -> int:
    """`nlbench collect`: write the summary CSV and print it."""
    collected = collect_or_warn(results)
    summary = collected.summary
    target = Path(out) if out else ResultsLayout.of(results).summary_csv
    atomic_write_text(target, summary.to_csv(index=False, float_format="%.6g"))
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            r["recipe"], r["profile"], int(r["n_seeds"]),
            format_stat(r["miou_mean"], r["miou_std"], r["miou_n"], 2),
            format_stat(r["miou_ms_flip_mean"], r["miou_ms_flip_std"], r["miou_ms_flip_n"], 2),
            format_stat(r["aacc_mean"], r["aacc_std"], r["aacc_n"], 2),
            format_stat(r["mem_gb_mean"], r["mem_gb_std"], r["mem_gb_n"], 2),
            format_stat(r["fps_mean"], r["fps_std"], r["fps_n"], 2),
            r["device_name"] or "-",
        ])
    headers = ["recipe", "profile", "seeds", "mIoU", "mIoU(ms+flip)", "aAcc", "Mem (GB)", "fps", "device"]
    if (summary["fps_fast_n"] > 0).any():  # bench records with the fast setting: its columns after fps
        headers[8:8] = ["Mem (fast)", "fps (fast)"]
        for row, (_, r) in zip(rows, summary.iterrows()):
            row[8:8] = [format_stat(r["mem_gb_fast_mean"], r["mem_gb_fast_std"], r["mem_gb_fast_n"], 2),
                        format_stat(r["fps_fast_mean"], r["fps_fast_std"], r["fps_fast_n"], 2)]
    if (summary["checkpoint_source"] != TRAINED).any():  # only then: the output of trained runs stays as it was
        headers.insert(2, "checkpoint")
        for row, source in zip(rows, summary["checkpoint_source"]):
            row.insert(2, source)
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    n_warn = len(collected.warnings)
    skipped = f", {n_warn} skipped (warnings above)" if n_warn else ""
    print(f"{collected.records} records{skipped} -> {len(summary)} rows -> {target}")
    return 0
