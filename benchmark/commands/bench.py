"""`nlbench bench`: Inf time (fps) and training Mem (GB) of a recipe."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from benchmark.commands.arguments import data_root_arguments, device_arguments, recipe_arguments
from benchmark.commands.console import warn
from benchmark.engine.bench import bench, format_bench
from benchmark.engine.settings import SETTING_NAMES, parse_settings
from benchmark.errors import NLBenchError
from benchmark.io.files import write_json
from benchmark.mmseg_checkpoint import resolve_checkpoint
from benchmark.recipe import data_root_origin, load_recipe, resolve_data_root


def bench_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)
    p.add_argument("--checkpoint", help="checkpoint to load (default: random weights; speed does not depend on them)")
    data_root_arguments(p)
    p.add_argument("--json", dest="json_out", help="write the figures as JSON")
    device_arguments(p)
    p.add_argument("--skip-mem", action="store_true", help="measure fps only")
    p.add_argument("--settings", default="published,fast", metavar="published,fast",
                   help="measurement settings, comma-separated (default both): published = as the table was "
                        "measured (explicit attention, fp32, no TF32, Mem inside DDP); fast = nlbench's fast path "
                        "(SDPA, bf16 where native, channels_last, TF32); see docs/BENCHMARKS.md")
    p.add_argument("--train-step", action="store_true",
                   help="also the median seconds per training iteration and its peak memory, at the recipe's "
                        "per-GPU batch and crop, in each setting")


def bench_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full", checkpoint: Optional[str] = None,
                  data_root: Optional[str] = None, json_out: Optional[str] = None, device: str = "auto",
                  skip_mem: bool = False, settings: str = ",".join(SETTING_NAMES), train_step: bool = False) -> int:
    """`nlbench bench`: print the figures; ``json_out`` (--json) also writes them to that file."""
    names = parse_settings(settings)
    if data_root is not None and not resolve_data_root(data_root).is_dir():  # asked for: not silently random images
        raise NLBenchError(f"data root not found{data_root_origin(data_root)} (leave --data-root out to time random "
                           "images of the test resolution when there is no dataset)", resolve_data_root(data_root),
                           "--data-root")
    resolved = load_recipe(recipe, overrides, profile)
    path = str(resolve_checkpoint(resolved, checkpoint)) if checkpoint else None
    result = bench(resolved, checkpoint=path, device=device, data_root=data_root, skip_mem=skip_mem,
                   settings=names, train_step=train_step, warn=warn)
    print(format_bench(result))
    if json_out:
        write_json(json_out, result)
        print(f"wrote {json_out}")
    return 0
