"""The `nlbench` command line: one table of verbs, each mapped to a library function.

Each verb names the function that implements it (``module:function``, imported only when that verb
runs, so `nlbench list` does not pay for importing torch) and declares its arguments; argparse's
destination names are that function's keyword parameters, so library code never sees an argparse
Namespace. An NLBenchError anywhere becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from benchmark import __version__
from benchmark.errors import NLBenchError
from benchmark.launch.doctor import doctor_arguments

Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Verb:
    name: str
    target: str  # "module:function" called with the parsed arguments as keyword parameters
    help: str
    arguments: Arguments


def resolve_target(target: str) -> Callable[..., int]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


# --------------------------------------------------------------------------- shared arguments


def _recipe(p: argparse.ArgumentParser, profile: bool = True) -> None:
    p.add_argument("recipe", help="recipe name (see `nlbench list`) or path to a recipe YAML")
    _overrides(p, "override a recipe value, e.g. --set schedule.max_iters=100 (YAML-typed; repeatable)")
    if profile:
        p.add_argument("--profile", default="full",
                       help="recipe profile: full (default) or smoke (tiny model, synthetic data, few iterations)")


def _overrides(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=text)


def _results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default results/)")


def _data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="override the recipe's data root (a relative one resolves against "
                                       "$NLBENCH_DATA_BASE, else the current directory)")


def _device(p: argparse.ArgumentParser, text: str = "cpu, cuda or auto (default)") -> None:
    p.add_argument("--device", default="auto", help=text)


# --------------------------------------------------------------------------- per verb


def _predict_args(p: argparse.ArgumentParser) -> None:
    _recipe(p)
    p.add_argument("--checkpoint", required=True, help="MMSeg-format checkpoint file, or 'released'")
    p.add_argument("--image", required=True, help="input image (PNG/JPEG, any size)")
    p.add_argument("--out", required=True, help="output colour prediction PNG (dataset palette)")
    p.add_argument("--logits", help="also write float32 logits (C, H, W) at the image's resolution as .npy")
    _fast(p)
    _device(p, "cpu, cuda, cuda:N or auto (default)")


def _fast(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fast", action="store_true",
                   help="nlbench's fast setting instead of MMSeg's arithmetic: SDPA attention, channels_last, TF32, "
                        "bf16 autocast where native (test.amp; docs/FIDELITY.md; each also a recipe value for --set)")


def _prepare_args(p: argparse.ArgumentParser) -> None:
    prep = p.add_subparsers(dest="_dataset", metavar="DATASET", required=True)
    pc = prep.add_parser("cityscapes", help="make *_gtFine_labelTrainIds.png from *_gtFine_polygons.json")
    pc.set_defaults(_target="benchmark.data.prepare:prepare_cityscapes_command")
    pc.add_argument("--src", required=True, help="raw Cityscapes root (with gtFine/)")
    pc.add_argument("--dst", help="data root to write into (default: --src)")
    pv = prep.add_parser("voc", help="make SegmentationClassAug/*.png and aug.txt from SBD .mat files")
    pv.set_defaults(_target="benchmark.data.prepare:prepare_voc_command")
    pv.add_argument("--voc", required=True, help="VOCdevkit folder (containing VOC2012/)")
    pv.add_argument("--sbd", required=True, help="SBD benchmark_RELEASE/dataset folder (with cls/, train.txt, val.txt)")


def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["cityscapes", "ade20k", "voc"])
    p.add_argument("--out", required=True, help="data root to write")
    p.add_argument("--train", type=int, default=8, help="training images (default 8)")
    p.add_argument("--val", type=int, default=4, help="validation images (default 4)")
    p.add_argument("--size", default="64x128", help="image size HxW (default 64x128)")
    p.add_argument("--seed", type=int, default=0)


def _bench_data_args(p: argparse.ArgumentParser) -> None:
    _recipe(p)
    _data_root(p)
    p.add_argument("--workers", type=int, action="append",
                   help="worker count(s) to measure (repeatable; default 0 and the recipe's)")
    p.add_argument("--images", type=int, default=64, help="images per measurement")


def _train_args(p: argparse.ArgumentParser) -> None:
    _recipe(p)
    p.add_argument("--work-dir", help="checkpoints and logs (default work_dirs/<recipe>)")
    _data_root(p)
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    _device(p)


def _eval_args(p: argparse.ArgumentParser) -> None:
    _recipe(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or 'released' to download MMSeg's")
    p.add_argument("--ms-flip", action="store_true", help="multi-scale + flip test (the published mIoU(ms+flip))")
    _data_root(p)
    p.add_argument("--json", dest="json_out", help="write the metrics as JSON")
    _fast(p)
    _device(p)


def _bench_args(p: argparse.ArgumentParser) -> None:
    _recipe(p)
    p.add_argument("--checkpoint", help="checkpoint to load (default: random weights; speed does not depend on them)")
    _data_root(p)
    p.add_argument("--json", dest="json_out", help="write the figures as JSON")
    _device(p)
    p.add_argument("--skip-mem", action="store_true", help="measure fps only")
    p.add_argument("--settings", default="published,fast", metavar="published,fast",
                   help="measurement settings, comma-separated (default both): published = as the table was "
                        "measured (explicit attention, fp32, no TF32, Mem inside DDP); fast = nlbench's fast path "
                        "(SDPA, bf16 where native, channels_last, TF32); see docs/BENCHMARKS.md")
    p.add_argument("--train-step", action="store_true",
                   help="also the median seconds per training iteration and its peak memory, at the recipe's "
                        "per-GPU batch and crop, in each setting")


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", help="glob on recipe names")


def _run_all_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", help="glob on recipe names (default: all)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--cluster", help="SLURM profile, e.g. slurm/example.yaml")
    p.add_argument("--profile", default="full", help="full (default) or smoke")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds per row (default 1); the dry run says what interval N seeds give")
    p.add_argument("--checkpoint", choices=["trained", "released"], default="trained",
                   help="trained (default): train each row, then evaluate it; released: evaluate and benchmark "
                        "each row's released MMSeg checkpoint, no training (downloaded once into $NLBENCH_CACHE)")
    _results(p)
    p.add_argument("--data-root", help="data root of every row instead of each recipe's (a relative one resolves "
                                       "against $NLBENCH_DATA_BASE, else the current directory)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and GPU-hour estimate, run nothing")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm: return after submitting (default: wait for the array and print the status)")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="local, on a machine without GPUs: N jobs at a time, each in its own process (default 1; "
                        "pair it with --set runtime.cpu_threads=K so that N x K fits the cores; the smoke "
                        "profile's jobs use 1 thread each)")
    _overrides(p, "override a value in every recipe (repeatable)")


def _status_args(p: argparse.ArgumentParser) -> None:
    _results(p)
    p.add_argument("--watch", action="store_true",
                   help="refresh until every row is final (done, failed or diverged); exit 0 when all are done, "
                        "1 when one failed or diverged")
    p.add_argument("--interval", type=float, default=10.0, metavar="S",
                   help="--watch: seconds between refreshes (default 10)")


def _collect_args(p: argparse.ArgumentParser) -> None:
    _results(p)
    p.add_argument("--out", default=None, help="CSV to write (default RESULTS/summary.csv)")


def _tables_args(p: argparse.ArgumentParser) -> None:
    _results(p)
    p.add_argument("--readme", default="README.md", help="README to update between its marker comments")
    p.add_argument("--no-readme", action="store_true",
                   help="write RESULTS/tables.md only, no README (what `make demo` does: the checkout stays clean)")
    p.add_argument("--check", action="store_true", help="exit 1 if the README's tables are stale; write nothing")
    p.add_argument("--published", action="store_true", help="print the published tables alone")
    p.add_argument("--metafile", metavar="FILE",
                   help="write the reproduced results to FILE in MMSegmentation 1.x's metafile.yaml (model-index) "
                        "layout, one entry per row, instead of the markdown tables")


def _plots_args(p: argparse.ArgumentParser) -> None:
    _results(p)
    p.add_argument("--out", default=None, help="output folder (default RESULTS/plots)")
    p.add_argument("--reference", default="released", metavar="released|PATH",
                   help="reference curve of the overlays: released (default; published logs from the cache only) "
                        "or a log file (every row) / a folder of <recipe>.log.json files")


def _report_args(p: argparse.ArgumentParser) -> None:
    _results(p)
    p.add_argument("--out", default=None, help="output folder (default RESULTS/report): index.html and rows/")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="mIoU points a row may fall short before its verdict is 'regressed' (default 0.5, as compare)")


def _logs_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="_action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download each row's published training log into the cache (resumable; "
                                         "pinned by sha256 at the first download)")
    fetch.set_defaults(_target="benchmark.curves.reference:logs_fetch_command")
    fetch.add_argument("--filter", help="glob on recipe names (default: all)")
    _overrides(fetch, "override a value in every recipe, e.g. release.base_url for a mirror (repeatable)")


def _curves_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe name, recipe YAML, or a glob on recipe names ('*': every row with runs)")
    _overrides(p, "override a recipe value, e.g. --set guard.spread_floor=1.0 (YAML-typed; repeatable)")
    p.add_argument("--profile", default="full", help="profile of the runs: full (default) or smoke")
    _results(p)
    p.add_argument("--reference", default="released", metavar="released|PATH",
                   help="reference curve: released (the row's published log, downloaded once; in the smoke profile "
                        "results/reference/logs/smoke/<recipe>.log.json) or a log file / folder")
    p.add_argument("--out", default=None, help="folder for the overlay figures (default RESULTS/plots)")
    p.add_argument("--json", dest="json_out", help="write the checks and eval tables as JSON")


def _compare_args(p: argparse.ArgumentParser) -> None:
    _results(p)
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="mIoU points a row may fall short (default 0.5); a smoke row whose baseline carries a "
                        "measured band (results/reference/smoke.csv's miou_band) is held to that band instead")
    p.add_argument("--report", help="write a markdown report")
    p.add_argument("--junit", help="write a JUnit XML report (for CI)")
    p.add_argument("--reference", default=None, metavar="published|PATH.csv",
                   help="numbers to compare with (default: published for full-profile records, "
                        "results/reference/smoke.csv for smoke records)")
    p.add_argument("--method", choices=["tolerance", "ci"], default="tolerance",
                   help="tolerance (default): the mean over seeds within reference ± tolerance; ci: the 95%% "
                        "Student-t interval over seeds against that band (reproduced/below/above/inconclusive)")
    p.add_argument("--assumed-std", type=float, default=0.5,
                   help="ci: the seed std (mIoU) assumed for a row with one seed, to say how many seeds would "
                        "decide (default 0.5)")
    p.add_argument("--min-seeds", type=int, default=None, metavar="N",
                   help="ci: a trained row whose mIoU has fewer than N seeds fails (verdict too-few-seeds) instead "
                        "of being inconclusive; released checkpoints and missing rows are exempt")
    p.add_argument("--fail-on", choices=["inconclusive"], default=None,
                   help="ci: inconclusive verdicts fail the gate too (exit 1)")
    p.add_argument("--curves", action="store_true",
                   help="also check every row's training curves against its reference curve (as `nlbench curves "
                        "--reference released`); a diverged row fails")
    p.add_argument("--curves-reference", default="released", metavar="released|PATH",
                   help="with --curves: the reference curve, released (default; published logs from the cache only) "
                        "or a log file (every row) / a folder of <recipe>.log.json files (--reference is the numbers')")


def _gpu_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="gpu-report", help="folder for gpu_report.md and gpu_report.json")
    p.add_argument("--dry-run", action="store_true",
                   help="every part at tiny sizes (on the CPU when there is no GPU): checks the command")
    _device(p)
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds; the torch.compile part runs only if under half of it is spent (default 420)")
    p.add_argument("--skip-tests", action="store_true", help="leave out the gpu-marked tests")
    p.add_argument("--limit-s", type=float, default=480.0,
                   help="seconds the whole report may take: the gpu tests, the last part, are stopped (or left "
                        "out) to end within it (default 480)")


VERBS: Tuple[Verb, ...] = (
    Verb("predict", "benchmark.engine.predict:predict_command",
         "segment one image with a checkpoint and write a colour prediction PNG", _predict_args),
    Verb("prepare", "", "convert raw datasets into the layouts MMSeg reads", _prepare_args),
    Verb("synth", "benchmark.data.synthetic:synth_command",
         "write a small synthetic dataset in a real dataset's on-disk layout", _synth_args),
    Verb("bench-data", "benchmark.measure.loader_throughput:bench_data_command",
         "training-pipeline throughput (images/s) with N loader workers", _bench_data_args),
    Verb("train", "benchmark.engine.train:train_command", "train a recipe (iteration-based; resumable)", _train_args),
    Verb("eval", "benchmark.engine.evaluate:eval_command",
         "evaluate a checkpoint on the validation split (aAcc, mIoU, mAcc, per class)", _eval_args),
    Verb("bench", "benchmark.engine.bench:bench_command",
         "Inf time (fps) and training Mem (GB): as published, and nlbench's fast path beside", _bench_args),
    Verb("gpu-report", "benchmark.measure.gpu_report:gpu_report_command",
         "on one GPU: both settings' fps, Mem and training step for R-50/R-101, the attention alone, "
         "bf16 agreement, the gpu tests -> gpu_report.md/.json", _gpu_report_args),
    Verb("list", "benchmark.catalog:list_command", "list every recipe with its published numbers", _list_args),
    Verb("show", "benchmark.catalog:show_command", "print a fully resolved recipe", _recipe),
    Verb("run-all", "benchmark.report.campaign:run_all_command",
         "plan and run every row (train -> eval -> eval ms+flip -> bench; --checkpoint released: no training)",
         _run_all_args),
    Verb("doctor", "benchmark.launch.doctor:doctor_command",
         "pre-flight checks run-all makes before any job: data, pretrained backbone, setting against the "
         "published one, disk, SLURM profile; one line per finding, exit 1 on a problem", doctor_arguments),
    Verb("status", "benchmark.launch.status:status_command",
         "state of every planned row: pending/running/done/failed/requeued/diverged", _status_args),
    Verb("collect", "benchmark.report.collect:collect_command",
         "gather run records into one table (mean/std/min/max over seeds)", _collect_args),
    Verb("tables", "benchmark.report.tables:tables_command",
         "regenerate the markdown results tables (and the README's)", _tables_args),
    Verb("plots", "benchmark.report.plots:plots_command",
         "plots: reproduced vs published mIoU, mIoU vs fps, memory, training curves", _plots_args),
    Verb("compare", "benchmark.report.compare:compare_command",
         "compare reproduced with published numbers (--method tolerance|ci); exit 1 on a regression",
         _compare_args),
    Verb("report", "benchmark.report.html:report_command",
         "a static HTML report: the tables with verdicts, the plots, one page per row (no server, no JavaScript)",
         _report_args),
    Verb("curves", "benchmark.report.row_curves:curves_command",
         "training curves against the row's published log (a smoke reference in the smoke profile): schedule, "
         "batch, loss and mIoU checks with the guard's noise-model margins, overlay; exit 1 when a row diverged",
         _curves_args),
    Verb("logs", "", "published training logs: `logs fetch` downloads them into the cache", _logs_args),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlbench",
        description="Reproduce, track and gate MMSegmentation's NonLocal model-zoo table.",
    )
    parser.add_argument("--version", action="version", version=f"nlbench {__version__}")
    sub = parser.add_subparsers(dest="_verb", metavar="VERB", required=True)
    for verb in VERBS:
        p = sub.add_parser(verb.name, help=verb.help, description=verb.help)
        p.set_defaults(_target=verb.target)
        verb.arguments(p)
    return parser


def parameters(args: argparse.Namespace) -> Dict[str, Any]:
    """The parsed arguments a verb's function takes (names starting with '_' steer the parser)."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
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
