"""`nlbench bench-data` and `nlbench gpu-report`: measurements beside the table's."""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from benchmark.commands.arguments import data_root_arguments, device_arguments, recipe_arguments
from benchmark.data.layouts import build_dataset
from benchmark.data.transforms import TrainPipeline
from benchmark.engine.open_data import data_root as resolve_root
from benchmark.errors import NLBenchError
from benchmark.measure.gpu_report import gpu_report, markdown, stamped
from benchmark.measure.loader_throughput import measure
from benchmark.recipe import load_recipe


def bench_data_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)
    data_root_arguments(p)
    p.add_argument("--workers", type=int, action="append",
                   help="worker count(s) to measure (repeatable; default 0 and the recipe's)")
    p.add_argument("--images", type=int, default=64, help="images per measurement")


def bench_data_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full",
                       data_root: Optional[str] = None, workers: Optional[List[int]] = None, images: int = 64) -> int:
    """`nlbench bench-data`: training-pipeline images/s for each loader worker count."""
    resolved = load_recipe(recipe, overrides, profile)
    data = resolved.data
    counts: List[int] = workers or [0, data.workers_per_gpu]
    if any(n < 0 for n in counts):
        raise NLBenchError(f"--workers must be >= 0, got {counts}")
    if images <= 0:
        raise NLBenchError(f"--images must be positive, got {images}")
    root = resolve_root(data, data_root)
    dataset = build_dataset(data, "train", root)
    pipeline = TrainPipeline.from_config(data)
    print(f"bench-data: {resolved.name} [{resolved.profile}] {data.dataset} train, {len(dataset)} images at {root}; "
          f"crop {data.crop_size[0]}x{data.crop_size[1]}, {data.imgs_per_gpu} images per batch")
    for n in dict.fromkeys(counts):  # unique, in the order given
        rate = measure(dataset, pipeline, data.imgs_per_gpu, n, images, resolved.runtime.seed)
        print(f"  workers={n:<3d} {rate:9.1f} images/s")
    print(f"(the published run consumed {resolved.effective_batch} images per iteration over "
          f"{resolved.runtime.gpus} GPUs; multiply by iterations/s to compare)")
    return 0


def gpu_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="gpu-report", help="folder for gpu_report.md and gpu_report.json")
    p.add_argument("--dry-run", action="store_true",
                   help="every part at tiny sizes (on the CPU when there is no GPU): checks the command")
    device_arguments(p)
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds; the torch.compile part runs only if under half of it is spent (default 420)")
    p.add_argument("--skip-tests", action="store_true", help="leave out the gpu-marked tests")
    p.add_argument("--limit-s", type=float, default=480.0,
                   help="seconds the whole report may take: the gpu tests, the last part, are stopped (or left "
                        "out) to end within it (default 480)")


def gpu_report_command(out: str = "gpu-report", dry_run: bool = False, device: str = "auto",
                       budget_s: float = 420.0, skip_tests: bool = False, limit_s: float = 480.0) -> int:
    """`nlbench gpu-report`: measure, write OUT/gpu_report.{json,md} and print the markdown; exit 1 when
    a part failed."""
    report, folder = gpu_report(out, dry_run, device, budget_s, skip_tests, limit_s,
                                log=lambda line: print(stamped(line), flush=True))
    print(markdown(report))
    failed = [name for name, value in report.items() if isinstance(value, dict) and "error" in value]
    print(stamped(f"wrote {folder / 'gpu_report.md'} and gpu_report.json in {report['wall_time_s']:.0f} s"
                  + (f"; failed parts: {', '.join(failed)}" if failed else "")), flush=True)
    return 1 if failed else 0
