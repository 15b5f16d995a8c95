"""`nlbench list` and `nlbench show`: what recipes exist, their published numbers, a resolved recipe."""

from __future__ import annotations

import fnmatch

from tabulate import tabulate

from benchmark.errors import NLBenchError
from benchmark.recipe import list_recipe_paths, load_recipe
from benchmark.report.published import load_published


def main_list(args) -> int:
    published = load_published()
    rows = []
    for path in list_recipe_paths():
        if args.filter and not fnmatch.fnmatch(path.stem, args.filter):
            continue
        r = load_recipe(path)
        pub = published.loc[r.name] if r.name in published.index else None
        rows.append([
            r.name,
            f"{r.runtime.gpus}x{r.data.imgs_per_gpu}",
            r.test.mode + ("+ms/flip" if r.test.ms_flip_published else ""),
            "" if pub is None else pub["mem_gb_text"],
            "" if pub is None else pub["fps_text"],
            "" if pub is None else pub["miou_text"],
            "" if pub is None else pub["miou_ms_flip_text"],
        ])
    if not rows:
        raise NLBenchError(f"no recipe matches --filter {args.filter!r}")
    headers = ["recipe", "GPUs x imgs", "test", "Mem (GB)", "Inf time (fps)", "mIoU", "mIoU(ms+flip)"]
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    return 0


def main_show(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides, profile=args.profile)
    print(f"# {recipe.source} (profile {recipe.profile}, hash {recipe.hash[:12]})")
    print(recipe.to_yaml(), end="")
    return 0
