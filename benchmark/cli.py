"""The `nlbench` command line: parse arguments, call one function per verb, print, exit.

Each verb's implementation lives in its own module and is imported only when that verb runs, so
`nlbench list` does not pay for importing torch. Every handler takes the parsed arguments and
returns an exit code; an NLBenchError anywhere becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from benchmark import __version__
from benchmark.errors import NLBenchError


def _recipe_args(p: argparse.ArgumentParser, profile: bool = True) -> None:
    p.add_argument("recipe", help="recipe name (see `nlbench list`) or path to a recipe YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set schedule.max_iters=100 (YAML-typed; repeatable)")
    if profile:
        p.add_argument("--profile", default="full",
                       help="recipe profile: full (default) or smoke (tiny model, synthetic data, few iterations)")


# --------------------------------------------------------------------------- handlers (lazy imports)

def _predict(a):
    from benchmark import predict
    return predict.main(a)


def _prepare(a):
    from benchmark.data import prepare
    return prepare.main(a)


def _synth(a):
    from benchmark.data import synthetic
    return synthetic.main(a)


def _bench_data(a):
    from benchmark.data import throughput
    return throughput.main(a)


def _train(a):
    from benchmark.engine import train
    return train.main(a)


def _eval(a):
    from benchmark.engine import evaluate
    return evaluate.main(a)


def _bench(a):
    from benchmark.engine import bench
    return bench.main(a)


def _list(a):
    from benchmark.launch import catalog
    return catalog.main_list(a)


def _show(a):
    from benchmark.launch import catalog
    return catalog.main_show(a)


def _run_all(a):
    from benchmark.launch import run_all
    return run_all.main(a)


def _status(a):
    from benchmark.launch import status
    return status.main(a)


def _collect(a):
    from benchmark.report import collect
    return collect.main(a)


def _tables(a):
    from benchmark.report import tables
    return tables.main(a)


def _plots(a):
    from benchmark.report import plots
    return plots.main(a)


def _compare(a):
    from benchmark.report import compare
    return compare.main(a)


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlbench",
        description="Reproduce, track and gate MMSegmentation's NonLocal model-zoo table.",
    )
    parser.add_argument("--version", action="version", version=f"nlbench {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, handler: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    # -- model
    p = verb("predict", _predict, "segment one image with a checkpoint and write a colour prediction PNG")
    _recipe_args(p)
    p.add_argument("--checkpoint", required=True, help="MMSeg-format checkpoint file, or 'released'")
    p.add_argument("--image", required=True, help="input image (PNG/JPEG, any size)")
    p.add_argument("--out", required=True, help="output colour prediction PNG (dataset palette)")
    p.add_argument("--logits", help="also write float32 logits (C, H, W) at the image's resolution as .npy")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")

    # -- data
    p = verb("prepare", _prepare, "convert raw datasets into the layouts MMSeg reads")
    prep = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    pc = prep.add_parser("cityscapes", help="make *_gtFine_labelTrainIds.png from *_gtFine_polygons.json")
    pc.add_argument("--src", required=True, help="raw Cityscapes root (with gtFine/)")
    pc.add_argument("--dst", help="data root to write into (default: --src)")
    pv = prep.add_parser("voc", help="make SegmentationClassAug/*.png and aug.txt from SBD .mat files")
    pv.add_argument("--voc", required=True, help="VOCdevkit folder (containing VOC2012/)")
    pv.add_argument("--sbd", required=True, help="SBD benchmark_RELEASE/dataset folder (with cls/, train.txt, val.txt)")

    p = verb("synth", _synth, "write a small synthetic dataset in a real dataset's on-disk layout")
    p.add_argument("dataset", choices=["cityscapes", "ade20k", "voc"])
    p.add_argument("--out", required=True, help="data root to write")
    p.add_argument("--train", type=int, default=8, help="training images (default 8)")
    p.add_argument("--val", type=int, default=4, help="validation images (default 4)")
    p.add_argument("--size", default="64x128", help="image size HxW (default 64x128)")
    p.add_argument("--seed", type=int, default=0)

    p = verb("bench-data", _bench_data, "training-pipeline throughput (images/s) with N loader workers")
    _recipe_args(p)
    p.add_argument("--data-root", help="override the recipe's data root")
    p.add_argument("--workers", type=int, action="append", help="worker count(s) to measure (repeatable; default 0 and the recipe's)")
    p.add_argument("--images", type=int, default=64, help="images per measurement")

    # -- engine
    p = verb("train", _train, "train a recipe (iteration-based; resumable)")
    _recipe_args(p)
    p.add_argument("--work-dir", help="checkpoints and logs (default work_dirs/<recipe>)")
    p.add_argument("--data-root", help="override the recipe's data root")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")

    p = verb("eval", _eval, "evaluate a checkpoint on the validation split (aAcc, mIoU, mAcc, per class)")
    _recipe_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or 'released' to download MMSeg's")
    p.add_argument("--ms-flip", action="store_true", help="multi-scale + flip test (the published mIoU(ms+flip))")
    p.add_argument("--data-root", help="override the recipe's data root")
    p.add_argument("--json", help="write the metrics as JSON")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")

    p = verb("bench", _bench, "Inf time (fps) and training Mem (GB), measured as published")
    _recipe_args(p)
    p.add_argument("--checkpoint", help="checkpoint to load (default: random weights; speed does not depend on them)")
    p.add_argument("--data-root", help="override the recipe's data root")
    p.add_argument("--json", help="write the figures as JSON")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--skip-mem", action="store_true", help="measure fps only")

    # -- recipes and launchers
    p = verb("list", _list, "list every recipe with its published numbers")
    p.add_argument("--filter", help="glob on recipe names")

    p = verb("show", _show, "print a fully resolved recipe")
    _recipe_args(p)

    p = verb("run-all", _run_all, "plan and run every row (train -> eval -> eval ms+flip -> bench)")
    p.add_argument("--filter", help="glob on recipe names (default: all)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--cluster", help="SLURM profile, e.g. slurm/example.yaml")
    p.add_argument("--profile", default="full", help="full (default) or smoke")
    p.add_argument("--seeds", type=int, default=1, help="seeds per row (default 1)")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and GPU-hour estimate, run nothing")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm: return after submitting (default: wait for the array and print the status)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every recipe (repeatable)")

    p = verb("status", _status, "state of every planned row: pending/running/done/failed/requeued")
    p.add_argument("--results", default="results", help="results folder (default results/)")

    # -- results
    p = verb("collect", _collect, "gather run records into one table (mean/std/min/max over seeds)")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--out", default=None, help="CSV to write (default RESULTS/summary.csv)")

    p = verb("tables", _tables, "regenerate the markdown results tables (and the README's)")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--readme", default="README.md", help="README to update between its marker comments")
    p.add_argument("--check", action="store_true", help="exit 1 if the README's tables are stale; write nothing")
    p.add_argument("--published", action="store_true", help="print the published tables alone")

    p = verb("plots", _plots, "plots: reproduced vs published mIoU, mIoU vs fps, memory, training curves")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--out", default=None, help="output folder (default RESULTS/plots)")

    p = verb("compare", _compare, "compare reproduced with published numbers; exit 1 on a regression")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--tolerance", type=float, default=0.5, help="mIoU points a row may fall short (default 0.5)")
    p.add_argument("--report", help="write a markdown report")
    p.add_argument("--junit", help="write a JUnit XML report (for CI)")
    p.add_argument("--reference", default=None, metavar="published|PATH.csv",
                   help="numbers to compare with (default: published for full-profile records, "
                        "results/reference/smoke.csv for smoke records)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except NLBenchError as exc:
        print(f"nlbench {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"nlbench {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
