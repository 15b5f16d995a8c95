"""The smoke profile's final mIoUs across seeds, thread counts and CPU instruction sets (docs/SMOKE.md).

    python scripts/smoke_spread.py [--cells minimal|full] [--filter GLOB] [--parallel 2]

Each cell is one row trained and evaluated in the smoke profile with one seed, one
``runtime.cpu_threads`` and one instruction set: ``native`` (what the CPU offers) or ``avx2``
(``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, the cap oneDNN and ATen read at start-up).
The cells of one (instruction set, thread count) run as one ``nlbench run-all --profile smoke
--seeds N`` into ``WORK/<isa>-t<threads>`` (train -> eval -> eval ms+flip -> bench, as the demo runs
them); the mIoUs come from its result records. ``--cells minimal``: seeds 0..4 at 1 thread native,
seeds 0..4 at 1 thread AVX2, seed 0 at 2 threads native; ``full``: every seed at 1 and 2 threads in
both instruction sets.

Resumable: run-all skips rows already complete in its folder, and cells already in ``--out`` are not
run again; ``--collect-only`` adds what the folders hold without running anything (a measurement
stopped part-way through a group). ``--groups avx2:1:0-4,native:2:0`` names the groups instead of
``--cells``; two instances on different groups may run side by side (each merges the CSV on write).

``--out`` (default results/reference/smoke_spread.csv) holds one line per cell:
``recipe,seed,cpu_threads,isa,cpu,miou,miou_ms_flip`` (``cpu``: the model name from /proc/cpuinfo and
the instruction set torch reports; ``miou_ms_flip`` empty where the row publishes none).
``--table MD`` writes the spread table between the ``smoke-spread`` markers of MD. The baseline and its
bands are frozen from ``--out`` by ``make smoke-baseline SPREAD=FILE`` (benchmark/report/baseline.py),
the one place that turns a spread into a baseline.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.io.files import atomic_write_text  # noqa: E402

COLUMNS = ("recipe", "seed", "cpu_threads", "isa", "cpu", "miou", "miou_ms_flip")
ISA_ENV = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
SEEDS = (0, 1, 2, 3, 4)
BEGIN, END = "<!-- smoke-spread:begin -->", "<!-- smoke-spread:end -->"

Group = Tuple[str, int, Tuple[int, ...]]  # (isa, cpu_threads, seeds)


def groups(cells: str) -> List[Group]:
    """The (isa, threads, seeds) groups to run, in an order that covers every dimension early (seed 0
    in each instruction set and thread count first, then more seeds), so that a measurement cut short
    still has all of them. A group's cells already run by an earlier, smaller group are not run again."""
    first = [("native", 1, (0,)), ("avx2", 1, (0,)), ("native", 2, (0,))]
    more = [("native", 1, (0, 1, 2)), ("avx2", 1, (0, 1, 2)), ("native", 1, SEEDS), ("avx2", 1, SEEDS)]
    if cells == "minimal":
        return first + more
    return first + more + [("avx2", 2, (0,)), ("native", 2, SEEDS), ("avx2", 2, SEEDS)]


def parse_groups(spec: str) -> List[Group]:
    """'avx2:1:0-4,native:2:0' -> [("avx2", 1, (0, 1, 2, 3, 4)), ("native", 2, (0,))]."""
    out = []
    for part in spec.split(","):
        isa, threads, seeds = part.split(":")
        low, _, high = seeds.partition("-")
        if isa not in ISA_ENV:
            sys.exit(f"--groups: unknown instruction set {isa!r}; expected one of {', '.join(ISA_ENV)}")
        out.append((isa, int(threads), tuple(range(int(low), int(high or low) + 1))))
    return out


def merged(old: List[Dict[str, str]], new: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """The union of two lists of cells; a cell of ``new`` replaces the same cell of ``old``."""
    cells = {(c["recipe"], c["seed"], c["cpu_threads"], c["isa"]): c for c in old}
    cells.update({(c["recipe"], c["seed"], c["cpu_threads"], c["isa"]): c for c in new})
    return list(cells.values())


def isa_environment(isa: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISA_ENV["avx2"]}
    env.update(ISA_ENV[isa])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/demo.sh: idle threads sleep on shared cores
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def cpu_name(isa: str) -> str:
    """'<model name> (<torch's CPU capability>)' as a process under ``isa``'s environment sees it."""
    from benchmark.report.freeze import cpu_model

    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    capability = subprocess.run([sys.executable, "-c", probe], env=isa_environment(isa), check=True,
                                capture_output=True, text=True).stdout.strip()
    return f"{cpu_model()} ({capability})"


def read_cells(path: Path) -> List[Dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and tuple(rows[0].keys()) != COLUMNS:
        sys.exit(f"{path}: expected the columns {','.join(COLUMNS)}")
    return rows


def write_cells(path: Path, rows: Iterable[Dict[str, str]]) -> None:
    order = {name: i for i, name in enumerate(("native", "avx2"))}
    rows = sorted(rows, key=lambda r: (r["recipe"], order.get(r["isa"], 9), int(r["cpu_threads"]), int(r["seed"])))
    lines = [",".join(COLUMNS)] + [",".join(_csv_field(r[c]) for c in COLUMNS) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_field(value: str) -> str:
    return f'"{value}"' if "," in value or '"' in value else value


def run_group(group: Group, work: Path, filter_glob: str, parallel: int, python: str) -> int:
    """One run-all of the group's seeds into its own results folder; the run-all's exit status."""
    isa, threads, seeds = group
    cmd = [python, "-m", "benchmark.cli", "run-all", "--profile", "smoke", "--launcher", "local",
           "--seeds", str(max(seeds) + 1), "--results", str(work / f"{isa}-t{threads}"),
           "--parallel", str(max(1, parallel // threads)), "--set", f"runtime.cpu_threads={threads}"]
    if filter_glob:
        cmd += ["--filter", filter_glob]
    print(f"smoke_spread: {isa}, {threads} thread(s), seeds {seeds[0]}..{seeds[-1]}: {' '.join(cmd[2:])}", flush=True)
    started = time.monotonic()
    code = subprocess.run(cmd, env=isa_environment(isa), cwd=REPO).returncode
    print(f"smoke_spread: run-all exit {code}, {time.monotonic() - started:.0f} s wall", flush=True)
    return code


def group_cells(group: Group, work: Path, cpu: str) -> List[Dict[str, str]]:
    """The group's cells from the newest eval and eval ms+flip record of each (row, seed)."""
    from benchmark.recipe import load_recipe
    from benchmark.run.records import load_records

    isa, threads, seeds = group
    records, _ = load_records(work / f"{isa}-t{threads}")
    hashes: Dict[Tuple[str, int], str] = {}  # only records of the recipes as they are now count
    ms_flip: Dict[str, bool] = {}
    newest: Dict[Tuple[str, int, str], Dict] = {}
    for rec in records:
        recipe, seed = rec.recipe, rec.seed
        if (recipe, seed) not in hashes:  # run-all sets runtime.seed, which is part of the hash
            resolved = load_recipe(recipe, [f"runtime.cpu_threads={threads}", f"runtime.seed={seed}"], profile="smoke")
            hashes[recipe, seed], ms_flip[recipe] = resolved.hash, resolved.test.ms_flip_published
        current = rec.provenance.recipe_hash == hashes[recipe, seed]
        key = (recipe, seed, rec.kind.value)
        if current and rec.profile == "smoke" and rec.kind.value in ("eval", "eval_ms_flip") and seed in seeds:
            if key not in newest or rec.created_at > newest[key].created_at:
                newest[key] = rec
    cells = []
    for (recipe, seed, kind), rec in sorted(newest.items()):
        if kind != "eval":
            continue
        ms = newest.get((recipe, seed, "eval_ms_flip"))
        if ms_flip[recipe] and ms is None:
            continue  # not finished: the cell is added once both numbers are there
        cells.append({"recipe": recipe, "seed": str(seed), "cpu_threads": str(threads), "isa": isa, "cpu": cpu,
                      "miou": f"{rec.metrics.mIoU:.4f}",
                      "miou_ms_flip": f"{ms.metrics.mIoU:.4f}" if ms else ""})
    return cells


def _stats(values: Sequence[float]) -> Tuple[float, float, float]:
    return sum(values) / len(values), min(values), max(values)


def _range_within(rows: List[Dict[str, str]], column: str, vary: str) -> float:
    """The largest max-min of ``column`` over cells that differ only in ``vary`` (0 when none do)."""
    fixed = [c for c in ("seed", "cpu_threads", "isa") if c != vary]
    buckets: Dict[Tuple[str, ...], List[float]] = {}
    for r in rows:
        if r[column]:
            buckets.setdefault(tuple(r[c] for c in fixed), []).append(float(r[column]))
    spans = [max(v) - min(v) for v in buckets.values() if len(v) > 1]
    return max(spans) if spans else float("nan")


def spread_table(cells: List[Dict[str, str]]) -> str:
    """Markdown: per row and metric, the cells' count, mean, min, max, max-min, and the largest
    max-min along one dimension with the others fixed (seeds; 1 against 2 threads; native against AVX2)."""
    lines = ["| row | metric | cells | mean | min | max | max-min | seeds | threads | ISA |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_row: Dict[str, List[Dict[str, str]]] = {}
    for c in cells:
        by_row.setdefault(c["recipe"], []).append(c)
    for recipe in sorted(by_row):
        rows = by_row[recipe]
        for column, label in (("miou", "mIoU"), ("miou_ms_flip", "mIoU(ms+flip)")):
            values = [float(r[column]) for r in rows if r[column]]
            if not values:
                continue
            mean, low, high = _stats(values)
            dims = [_range_within(rows, column, d) for d in ("seed", "cpu_threads", "isa")]
            lines.append(f"| {recipe} | {label} | {len(values)} | {mean:.2f} | {low:.2f} | {high:.2f} | "
                         f"**{high - low:.2f}** | " + " | ".join("n/a" if d != d else f"{d:.2f}" for d in dims) + " |")
    return "\n".join(lines)


def write_table(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        sys.exit(f"{path}: expected the markers {BEGIN} and {END}")
    head, rest = text.split(BEGIN, 1)
    atomic_write_text(path, f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", choices=["minimal", "full"], default="minimal")
    p.add_argument("--groups", help="instead of --cells: ISA:THREADS:SEEDS,... e.g. avx2:1:0-4,native:2:0")
    p.add_argument("--filter", default="", help="glob on recipe names (default: every row)")
    p.add_argument("--work", default="results/smoke-spread", help="run-all folders, one per (isa, threads)")
    p.add_argument("--out", default="results/reference/smoke_spread.csv")
    p.add_argument("--parallel", type=int, default=2, help="cores to use (jobs at a time x threads per job)")
    p.add_argument("--table", help="also write the spread table into this markdown file")
    p.add_argument("--collect-only", action="store_true",
                   help="run nothing: add the cells the groups' folders already hold (a measurement cut short), "
                        "then --table")
    args = p.parse_args(list(argv) or None)
    from benchmark.catalog import select_recipe_paths

    work, out = (REPO / args.work).resolve(), (REPO / args.out).resolve()
    recipes = [Path(r).stem for r in select_recipe_paths(args.filter or None)]
    cells = read_cells(out)
    failed = 0
    for group in parse_groups(args.groups) if args.groups else groups(args.cells):
        isa, threads, seeds = group
        cells = merged(cells, read_cells(out))  # another instance may have added cells meanwhile
        have = {(c["recipe"], int(c["seed"])) for c in cells if c["isa"] == isa and int(c["cpu_threads"]) == threads}
        if all((r, s) in have for r in recipes for s in seeds):
            continue
        if not args.collect_only:
            failed |= run_group(group, work, args.filter, args.parallel, sys.executable) != 0
        new = [c for c in group_cells(group, work, cpu_name(isa)) if (c["recipe"], int(c["seed"])) not in have]
        cells = merged(read_cells(out), new)
        write_cells(out, cells)
        print(f"smoke_spread: {len(new)} cell(s) added to {out}", flush=True)
    if args.table:
        write_table((REPO / args.table).resolve(), spread_table(cells))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
