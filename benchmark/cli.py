"""The `nlbench` command line: one table of verbs, each dispatched to its module in benchmark/commands/.

A verb ``bench-data`` of module M has its argument builder ``M.bench_data_arguments`` beside its
command function ``M.bench_data_command`` (a verb with actions, such as ``prepare``, sets each action's
``module:function`` itself). Only the verb that runs has its module imported, so `nlbench list` does
not pay for importing torch. argparse's destination names are the command function's keyword
parameters, so no function sees an argparse Namespace. An NLBenchError anywhere becomes one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from benchmark import __version__
from benchmark.errors import NLBenchError


@dataclass(frozen=True)
class Verb:
    name: str
    module: str  # holds <name>_arguments(parser) and, unless the verb has actions, <name>_command
    help: str

    @property
    def stem(self) -> str:
        return self.name.replace("-", "_")

    @property
    def target(self) -> str:
        """``module:function`` called with the parsed arguments as keyword parameters."""
        return f"{self.module}:{self.stem}_command"

    def arguments(self) -> Callable[[argparse.ArgumentParser], None]:
        return getattr(importlib.import_module(self.module), f"{self.stem}_arguments")


def resolve_target(target: str) -> Callable[..., int]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


VERBS: Tuple[Verb, ...] = (
    Verb("predict", "benchmark.commands.evaluate",
         "segment one image with a checkpoint and write a colour prediction PNG"),
    Verb("prepare", "benchmark.commands.data", "convert raw datasets into the layouts MMSeg reads"),
    Verb("synth", "benchmark.commands.data", "write a small synthetic dataset in a real dataset's on-disk layout"),
    Verb("bench-data", "benchmark.commands.measure", "training-pipeline throughput (images/s) with N loader workers"),
    Verb("train", "benchmark.commands.train", "train a recipe (iteration-based; resumable)"),
    Verb("eval", "benchmark.commands.evaluate",
         "evaluate a checkpoint on the validation split (aAcc, mIoU, mAcc, per class)"),
    Verb("bench", "benchmark.commands.bench",
         "Inf time (fps) and training Mem (GB): as published, and nlbench's fast path beside"),
    Verb("gpu-report", "benchmark.commands.measure",
         "on one GPU: both settings' fps, Mem and training step for R-50/R-101, the attention alone, "
         "bf16 agreement, the gpu tests -> gpu_report.md/.json"),
    Verb("list", "benchmark.commands.catalog", "list every recipe with its published numbers"),
    Verb("show", "benchmark.commands.catalog", "print a fully resolved recipe"),
    Verb("run-all", "benchmark.commands.runs",
         "plan and run every row (train -> eval -> eval ms+flip -> bench; --checkpoint released: no training)"),
    Verb("doctor", "benchmark.commands.doctor",
         "pre-flight checks run-all makes before any job: data, pretrained backbone, setting against the "
         "published one, disk, SLURM profile; one line per finding, exit 1 on a problem"),
    Verb("status", "benchmark.commands.runs",
         "state of every planned row: pending/running/done/failed/requeued/diverged"),
    Verb("collect", "benchmark.commands.report", "gather run records into one table (mean/std/min/max over seeds)"),
    Verb("tables", "benchmark.commands.report", "regenerate the markdown results tables (and the README's)"),
    Verb("plots", "benchmark.commands.report",
         "plots: reproduced vs published mIoU, mIoU vs fps, memory, training curves"),
    Verb("compare", "benchmark.commands.compare",
         "compare reproduced with published numbers (--method tolerance|ci); exit 1 on a regression"),
    Verb("report", "benchmark.commands.report",
         "a static HTML report: the tables with verdicts, the plots, one page per row (no server, no JavaScript)"),
    Verb("curves", "benchmark.commands.report",
         "training curves against the row's published log (a smoke reference in the smoke profile): schedule, "
         "batch, loss and mIoU checks with the guard's noise-model margins, overlay; exit 1 when a row diverged"),
    Verb("logs", "benchmark.commands.logs", "published training logs: `logs fetch` downloads them into the cache"),
)


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """Every verb's parser; with ``only``, the other verbs are named but their arguments (and modules)
    left out, which parsing that one verb's command line does not need."""
    parser = argparse.ArgumentParser(
        prog="nlbench",
        description="Reproduce, track and gate MMSegmentation's NonLocal model-zoo table.",
    )
    parser.add_argument("--version", action="version", version=f"nlbench {__version__}")
    sub = parser.add_subparsers(dest="_verb", metavar="VERB", required=True)
    for verb in VERBS:
        p = sub.add_parser(verb.name, help=verb.help, description=verb.help)
        if only is None or only == verb.name:
            p.set_defaults(_target=verb.target)
            verb.arguments()(p)
    return parser


def parameters(args: argparse.Namespace) -> Dict[str, Any]:
    """The parsed arguments a verb's function takes (names starting with '_' steer the parser)."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def _verb_named(argv: List[str]) -> Optional[str]:
    """The verb of a command line (the first word not an option: the top level has no valued options)."""
    return next((word for word in argv if not word.startswith("-")), None)


def escape_unencodable_output() -> None:
    """A path the console's encoding cannot show (a surrogate from a non-UTF-8 name, a strict or
    ASCII locale) is printed escaped (``\\udcff``) rather than ending the command in a traceback."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Optional[List[str]] = None) -> int:
    escape_unencodable_output()
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_verb_named(words)).parse_args(words)
    try:
        code = resolve_target(args._target)(**parameters(args))
    except NLBenchError as exc:
        print(f"nlbench {args._verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"nlbench {args._verb}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
