"""Arguments several verbs declare alike."""

from __future__ import annotations

import argparse


def recipe_arguments(p: argparse.ArgumentParser, profile: bool = True) -> None:
    p.add_argument("recipe", help="recipe name (see `nlbench list`) or path to a recipe YAML")
    overrides_arguments(p, "override a recipe value, e.g. --set schedule.max_iters=100 (YAML-typed; repeatable)")
    if profile:
        p.add_argument("--profile", default="full",
                       help="recipe profile: full (default) or smoke (tiny model, synthetic data, few iterations)")


def overrides_arguments(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=text)


def results_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default results/)")


def data_root_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="override the recipe's data root (a relative one resolves against "
                                       "$NLBENCH_DATA_BASE, else the current directory)")


def device_arguments(p: argparse.ArgumentParser, text: str = "cpu, cuda or auto (default)") -> None:
    p.add_argument("--device", default="auto", help=text)


def fast_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fast", action="store_true",
                   help="nlbench's fast setting instead of MMSeg's arithmetic: SDPA attention, channels_last, TF32, "
                        "bf16 autocast where native (test.amp; docs/FIDELITY.md; each also a recipe value for --set)")
