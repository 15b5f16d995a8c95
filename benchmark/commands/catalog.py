"""`nlbench list` and `nlbench show`: the recipes and their published numbers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence

import pandas as pd
from tabulate import tabulate

from benchmark.catalog import load_published, select_recipe_paths
from benchmark.commands.arguments import recipe_arguments
from benchmark.recipe import load_recipe


def list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", help="glob on recipe names")


def list_command(filter: Optional[str] = None) -> int:
    """`nlbench list`: every recipe with its published numbers."""
    published = load_published()
    rows = [_list_row(path, published) for path in select_recipe_paths(filter)]
    headers = ["recipe", "GPUs x imgs", "test", "Mem (GB)", "Inf time (fps)", "mIoU", "mIoU(ms+flip)"]
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    return 0


def _list_row(path: Path, published: pd.DataFrame) -> List[str]:
    r = load_recipe(path)
    pub = published.loc[r.name] if r.name in published.index else None
    figures = ["mem_gb_text", "fps_text", "miou_text", "miou_ms_flip_text"]
    return [r.name, f"{r.runtime.gpus}x{r.data.imgs_per_gpu}",
            r.test.mode + ("+ms/flip" if r.test.ms_flip_published else ""),
            *("" if pub is None else pub[f] for f in figures)]


def show_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)


def show_command(recipe: str, overrides: Sequence[str] = (), profile: str = "full") -> int:
    """`nlbench show`: the fully resolved recipe as YAML."""
    resolved = load_recipe(recipe, overrides, profile=profile)
    print(f"# {resolved.source} (profile {resolved.profile}, hash {resolved.hash[:12]})")
    print(resolved.to_yaml(), end="")
    return 0
