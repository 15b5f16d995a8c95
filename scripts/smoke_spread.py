"""The smoke profile's final mIoUs across seeds, thread counts, CPU instruction sets and processors
(docs/SMOKE.md); `make smoke-spread` runs it.

    python scripts/smoke_spread.py [--cells minimal|full] [--filter GLOB] [--parallel 2] [--table docs/SMOKE.md]

Each cell is one row trained and evaluated in the smoke profile with one seed, one
``runtime.cpu_threads`` and one instruction-set cap (benchmark/report/spread.py: ``native``, ``avx2``,
``sse41``). The cells of one (cap, thread count) run as one ``nlbench run-all --profile smoke --seeds N``
into ``WORK/<cap>-t<threads>`` (train -> eval -> eval ms+flip -> bench, as the demo runs them); the
mIoUs, the processor and the configuration come from its result records.

The groups: ``native`` and a second instruction set, ``avx2`` on a machine whose native one is AVX-512
and ``sse41`` on any other, so that every machine measures two. ``--cells minimal``: seed 0 under each
cap and at 2 threads first, then seeds 0..4 at 1 thread under both caps; ``full``: also seeds 0..4 at 2
threads under both. ``--groups native:2:0-4,avx2:1:0`` names them instead.

Resumable: run-all skips rows already complete in its folder, and cells already in ``--out`` are not
run again; ``--collect-only`` adds what the folders hold without running anything. Cells of another
machine in ``--out`` are kept (the spread is over processors too); cells of a row's earlier smoke
configuration are dropped, with a line saying how many. ``--table MD`` writes the spread table between
the ``smoke-spread`` markers of MD. The baseline and its bands are frozen from ``--out`` by
``make smoke-baseline SPREAD=FILE`` (benchmark/report/baseline.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.engine.distributed import cpu_model  # noqa: E402
from benchmark.errors import NLBenchError  # noqa: E402
from benchmark.report import spread  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
Group = Tuple[str, int, Tuple[int, ...]]  # (instruction-set cap, cpu_threads, seeds)


def cap_environment(isa: str) -> Dict[str, str]:
    caps = {name for env in spread.ISA_CAPS.values() for name in env}
    env = {k: v for k, v in os.environ.items() if k not in caps}
    env.update(spread.ISA_CAPS[isa])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/demo.sh: idle threads sleep on shared cores
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def capability(isa: str) -> str:
    """The instruction set ATen dispatches to under ``isa``'s cap, as a fresh process sees it."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", probe], env=cap_environment(isa), check=True,
                          capture_output=True, text=True).stdout.strip()


def groups(cells: str) -> List[Group]:
    """The groups to run, in an order that covers every dimension early (seed 0 under each cap and at 2
    threads first, then more seeds), so that a measurement cut short still has all of them."""
    second = "avx2" if capability("native") == "AVX512" else "sse41"
    first = [("native", 1, (0,)), (second, 1, (0,)), ("native", 2, (0,))]
    more = [("native", 1, SEEDS), (second, 1, SEEDS)]
    return first + more + ([("native", 2, SEEDS), (second, 2, SEEDS)] if cells == "full" else [])


def parse_groups(spec: str) -> List[Group]:
    """'avx2:1:0-4,native:2:0' -> [("avx2", 1, (0, 1, 2, 3, 4)), ("native", 2, (0,))]."""
    out = []
    for part in spec.split(","):
        try:
            isa, threads, seeds = part.split(":")
            low, _, high = seeds.partition("-")
            group = (isa, int(threads), tuple(range(int(low), int(high or low) + 1)))
        except ValueError:
            raise NLBenchError(f"--groups: expected CAP:THREADS:SEEDS (e.g. avx2:1:0-4), got {part!r}") from None
        if isa not in spread.ISA_CAPS:
            raise NLBenchError(f"--groups: unknown instruction-set cap {isa!r}; expected one of "
                               f"{', '.join(spread.ISA_CAPS)}")
        out.append(group)
    return out


def run_group(group: Group, work: Path, filter_glob: str, parallel: int) -> int:
    """One run-all of the group's seeds into its own results folder; the run-all's exit status."""
    isa, threads, seeds = group
    cmd = [sys.executable, "-m", "benchmark.cli", "run-all", "--profile", "smoke", "--launcher", "local",
           "--seeds", str(max(seeds) + 1), "--results", str(work / f"{isa}-t{threads}"),
           "--parallel", str(max(1, parallel // threads)), "--set", f"runtime.cpu_threads={threads}"]
    if filter_glob:
        cmd += ["--filter", filter_glob]
    print(f"smoke_spread: {isa}, {threads} thread(s), seeds {seeds[0]}..{seeds[-1]}: {' '.join(cmd[3:])}", flush=True)
    started = time.monotonic()
    code = subprocess.run(cmd, env=cap_environment(isa), cwd=REPO).returncode
    print(f"smoke_spread: run-all exit {code}, {time.monotonic() - started:.0f} s wall", flush=True)
    return code


def current(cells: List[spread.Cell]) -> List[spread.Cell]:
    """The cells of each row's smoke configuration as it is now; says how many others it dropped."""
    kept = [c for c in cells if c["config_hash"] == spread.smoke_config_hash(c["recipe"], int(c["cpu_threads"]))]
    if len(kept) < len(cells):
        print(f"smoke_spread: dropped {len(cells) - len(kept)} cell(s) of an earlier smoke configuration", flush=True)
    return kept


def measure(args: argparse.Namespace, recipes: Sequence[str]) -> int:
    work, out = (REPO / args.work).resolve(), (REPO / args.out).resolve()
    before = spread.read_cells(out)
    cells, failed = current(before), 0
    if len(cells) < len(before):
        spread.write_spread(out, cells)  # the file says only what counts, even if nothing runs below
    for isa, threads, seeds in parse_groups(args.groups) if args.groups else groups(args.cells):
        cpu = f"{cpu_model()} ({capability(isa)})"
        cells = spread.merge_cells(cells, spread.read_cells(out))  # another instance may have written
        have = {(c["recipe"], int(c["seed"])) for c in cells
                if (c["isa"], int(c["cpu_threads"]), c["cpu"]) == (isa, threads, cpu)}
        if all((r, s) in have for r in recipes for s in seeds):
            continue
        if not args.collect_only:
            failed |= run_group((isa, threads, seeds), work, args.filter, args.parallel) != 0
        new = [c for c in spread.cells_of_run(work / f"{isa}-t{threads}", isa, threads)
               if c["recipe"] in recipes and int(c["seed"]) in seeds]
        cells = spread.merge_cells(cells, new)
        spread.write_spread(out, cells)
        print(f"smoke_spread: {len(new)} cell(s) of {isa}, {threads} thread(s) in {out}", flush=True)
    if args.table:
        spread.write_table((REPO / args.table).resolve(), spread.spread_table(cells))
    return 1 if failed else 0


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", choices=["minimal", "full"], default="minimal")
    p.add_argument("--groups", help="instead of --cells: CAP:THREADS:SEEDS,... e.g. avx2:1:0-4,native:2:0")
    p.add_argument("--filter", default="", help="glob on recipe names (default: every row)")
    p.add_argument("--work", default="results/smoke-spread", help="run-all folders, one per (cap, threads)")
    p.add_argument("--out", default="results/reference/smoke_spread.csv")
    p.add_argument("--parallel", type=int, default=2, help="cores to use (jobs at a time x threads per job)")
    p.add_argument("--table", help="also write the spread table into this markdown file")
    p.add_argument("--collect-only", action="store_true",
                   help="run nothing: add the cells the groups' folders already hold, then --table")
    args = p.parse_args(list(argv) or None)
    from benchmark.catalog import select_recipe_paths

    try:
        recipes = [Path(r).stem for r in select_recipe_paths(args.filter or None)]
        return measure(args, recipes)
    except NLBenchError as exc:
        print(f"smoke_spread: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
