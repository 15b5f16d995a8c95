"""Which training log a report shows for each seed of a row: the one of the configuration its figures
come from, so a seed's curves are never those of another resolved recipe than its mIoU.

A seed trained with several resolved recipes has several work dirs (io/layout.py: ``seed<k>-<hash12>``,
``seed<k>`` before the hash was in the name). The records chosen for the seed (run/records.py
``chosen_by_kind``: those of its newest train record's recipe hash) name the work dir; a seed with no
chosen record (a run still training, a results folder without records) shows its log written last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmark.io.layout import ResultsLayout
from benchmark.run.records import CheckpointSource, Kind, Record, RowKey

SeedRecords = Dict[int, Dict[Kind, Record]]  # seed -> {kind: the record chosen}, of one row


def row_seeds(chosen: Dict[RowKey, Dict[Kind, Record]], recipe: str, profile: str) -> SeedRecords:
    """The trained seeds of one row in ``chosen_by_kind``'s choice (``Collected.newest``)."""
    return {seed: kinds for (r, p, source, seed), kinds in chosen.items()
            if (r, p, source) == (recipe, profile, CheckpointSource.TRAINED)}


def seed_logs(results_dir: Path, profile: str, recipe: str, seeds: SeedRecords,
              names: Sequence[str]) -> Dict[int, Path]:
    """seed -> its training log (the first of ``names`` its work dir holds): of the work dir of its chosen
    records' resolved recipe, or, with no chosen record, of the one written last. A seed whose chosen
    configuration left no log has none (another configuration's would be shown beside its figures)."""
    layout = ResultsLayout.of(results_dir)
    folder = layout.row_work(profile, recipe)
    found: Dict[int, List[Path]] = {}
    for work in sorted(folder.iterdir()) if folder.is_dir() else []:
        seed = layout.seed_of(work.name)
        log = next((work / n for n in names if (work / n).is_file()), None)
        if seed is not None and log is not None:
            found.setdefault(seed, []).append(log)
    logs = {seed: _chosen_log(layout, profile, recipe, seed, found[seed], seeds.get(seed)) for seed in sorted(found)}
    return {seed: log for seed, log in logs.items() if log is not None}


def _chosen_log(layout: ResultsLayout, profile: str, recipe: str, seed: int, logs: List[Path],
                kinds: Optional[Dict[Kind, Record]]) -> Optional[Path]:
    if not kinds:
        return max(logs, key=lambda p: p.stat().st_mtime)  # by file time only where no record says
    recipe_hash = next(iter(kinds.values())).provenance.recipe_hash
    recipe_hash = str(recipe_hash) if recipe_hash else None
    # Its own work dir, else one from before the hash was part of the name (seed<k>/).
    for work in (layout.work_dir(profile, recipe, seed, recipe_hash=recipe_hash),
                 layout.work_dir(profile, recipe, seed)):
        log = next((p for p in logs if p.parent == work), None)
        if log is not None:
            return log
    return None
