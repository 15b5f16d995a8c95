"""`nlbench logs fetch`: the published training logs into the cache."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from benchmark.commands.arguments import overrides_arguments
from benchmark.curves.reference import fetch_logs, log_cache_dir


def logs_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="_action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download each row's published training log into the cache (resumable; "
                                         "pinned by sha256 at the first download)")
    fetch.set_defaults(_target="benchmark.commands.logs:logs_fetch_command")
    fetch.add_argument("--filter", help="glob on recipe names (default: all)")
    overrides_arguments(fetch, "override a value in every recipe, e.g. release.base_url for a mirror (repeatable)")


def logs_fetch_command(filter: Optional[str] = None, overrides: Sequence[str] = ()) -> int:
    """`nlbench logs fetch`."""
    fetched = fetch_logs(filter, overrides, log=print)
    print(f"{len(fetched)} published training log(s) in {log_cache_dir()}")
    return 0
