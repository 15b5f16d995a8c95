"""The training guard on smoke runs with planted faults and on healthy seeds (docs/CURVES.md).

Each case trains one smoke run of ROW with ``guard.reference: released`` (the row's committed smoke
reference log, frozen from seed 0) and ``guard.action: stop``, and reports the iteration of the
guard's first warning (a schedule warning, or a line or evaluation whose verdict is not "on track"),
the iteration where it stopped the run, or that it did not, and the verdict at the end:

  healthy seed k     runtime.seed=k, nothing planted (must never be stopped)
  shuffled labels    seed 0 with every training image given another image's label
  lr x10, lr / 10    seed 0 with schedule.lr multiplied or divided by 10

Run it again after any change to the smoke profile, training or the guard (it takes a few minutes on
one core; the machine may be shared, so it runs niced):

    nice -n 10 python scripts/guard_faults.py [--row ROW] [--seeds 1 2 3] [--out table.md]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmark.curves.reader import read_curve
from benchmark.curves.reference import reference_curve
from benchmark.data.layouts import SegDataset
from benchmark.engine.train import train
from benchmark.errors import RunDiverged
from benchmark.recipe import load_recipe

ROW = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"
WARNING = re.compile(r"guard: WARNING: the schedule is not the reference's: lr at iteration (\d+)|"
                     r"guard: iter (\d+): .*verdict (drifting|diverged)")


class ShuffledLabels:
    """While active, training images read another image's label (a fixed derangement: i -> i + 1)."""

    def __enter__(self):
        self.original = SegDataset.read_label
        original = self.original

        def read_label(dataset: SegDataset, i: int):
            if dataset.split != "train" or len(dataset) < 2:
                return original(dataset, i)
            return original(dataset, (i + 1) % len(dataset))

        SegDataset.read_label = read_label
        return self

    def __exit__(self, *exc) -> None:
        SegDataset.read_label = self.original


def first_warning(said: Sequence[str]) -> Optional[str]:
    for line in said:
        match = WARNING.search(line)
        if match:
            it = match.group(1) or match.group(2)
            what = "schedule" if match.group(1) else match.group(3)
            return f"{it} ({what})"
    return None


def run_case(row: str, name: str, overrides: List[str], work: Path, data_root: Path,
             shuffled: bool = False) -> Dict[str, str]:
    recipe = load_recipe(row, ["guard.reference=released", "guard.action=stop", *overrides], profile="smoke")
    said: List[str] = []
    started = time.perf_counter()
    stopped, verdict = "none", ""
    try:
        if shuffled:
            with ShuffledLabels():
                summary = train(recipe, work, device="cpu", data_root=str(data_root), log=said.append)
        else:
            summary = train(recipe, work, device="cpu", data_root=str(data_root), log=said.append)
        verdict = (summary.get("guard") or {}).get("verdict", "")
    except RunDiverged as exc:
        stopped = f"{exc.iteration} ({exc})"
        verdict = exc.evidence.get("verdict", "diverged")
    return {"case": name, "first warning": first_warning(said) or "none", "stop": stopped,
            "verdict at the end": verdict, "iterations": str(recipe.schedule.max_iters),
            "wall s": f"{time.perf_counter() - started:.0f}"}


def seed_spread(row: str, healthy: Sequence[Path]) -> str:
    """The smoke seed-to-seed mIoU std at each eval point (the reference seed and the healthy seeds):
    what ``guard.spread_floor`` of the smoke profile should be at least (docs/CURVES.md)."""
    recipe = load_recipe(row, profile="smoke")
    sched = recipe.schedule
    curves = [reference_curve(recipe)] + [read_curve(p / "train.log.jsonl") for p in healthy]
    parts = []
    for point in curves[0].evals:
        values = [e.mIoU for c in curves for e in c.evals if e.iteration == point.iteration]
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        parts.append(f"at {point.iteration}: {', '.join(f'{v:.2f}' for v in values)} (std {std:.2f})")
    return (f"smoke mIoU of the reference seed and the healthy seeds (schedule {sched.max_iters} iterations) "
            f"{'; '.join(parts)}; the smoke profile's guard.spread_floor is {recipe.guard.spread_floor}")


def table(rows: Sequence[Dict[str, str]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", default=ROW)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3], help="healthy seeds (0 is the reference)")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    base_lr = load_recipe(args.row, profile="smoke").schedule.lr
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work or tmp)
        data_root = root / "data"
        cases = [(f"healthy seed {k}", [f"runtime.seed={k}"], False) for k in args.seeds]
        cases += [("shuffled labels", [], True), ("lr x10", [f"schedule.lr={base_lr * 10:g}"], False),
                  ("lr / 10", [f"schedule.lr={base_lr / 10:g}"], False)]
        rows = []
        for name, overrides, shuffled in cases:
            work = root / name.replace(" ", "_").replace("/", "div")
            rows.append(run_case(args.row, name, overrides, work, data_root, shuffled))
            print(f"{name}: first warning {rows[-1]['first warning']}; stop {rows[-1]['stop']}", flush=True)
        spread = seed_spread(args.row, [root / f"healthy_seed_{k}" for k in args.seeds])
    text = (f"{args.row} [smoke], guard.reference released (the smoke reference log), action stop\n\n{table(rows)}\n\n"
            f"{spread}\n")
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
