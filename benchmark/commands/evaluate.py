"""`nlbench eval` and `nlbench predict`: a checkpoint on the validation split, on one image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from benchmark.commands.arguments import data_root_arguments, device_arguments, fast_arguments, recipe_arguments
from benchmark.engine import distributed
from benchmark.engine.distributed import resolve_device
from benchmark.engine.evaluate import evaluate
from benchmark.engine.metrics import format_metrics
from benchmark.engine.predict import check_target, predict
from benchmark.engine.settings import fast_recipe
from benchmark.io.files import write_json
from benchmark.mmseg_checkpoint import resolve_checkpoint
from benchmark.recipe import load_recipe


def eval_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or 'released' to download MMSeg's")
    p.add_argument("--ms-flip", action="store_true", help="multi-scale + flip test (the published mIoU(ms+flip))")
    data_root_arguments(p)
    p.add_argument("--json", dest="json_out", help="write the metrics as JSON")
    fast_arguments(p)
    device_arguments(p)


def eval_command(recipe: str, checkpoint: str, overrides: Sequence[str] = (), profile: str = "full",
                 ms_flip: bool = False, data_root: Optional[str] = None, json_out: Optional[str] = None,
                 device: str = "auto", fast: bool = False) -> int:
    """`nlbench eval`: print the metrics; ``json_out`` (--json) also writes them to that file; ``fast``:
    the fast setting's inference choices (engine/settings.py), not MMSeg's arithmetic."""
    resolved = load_recipe(recipe, overrides, profile)
    if fast:
        resolved = fast_recipe(resolved, distributed.resolve_device(device))
    try:
        result = evaluate(resolved, checkpoint, ms_flip=ms_flip, data_root=data_root, device=device)
        is_main = distributed.get_rank() == 0
    except (Exception, KeyboardInterrupt) as exc:
        distributed.report_failure(exc)
        raise
    finally:
        distributed.cleanup()
    if not is_main:
        return 0
    mode = ("ms+flip" if ms_flip else "single scale") + (", fast setting" if fast else "")
    print(f"{resolved.name} [{resolved.profile}], {mode}, {result['num_images']} val images, "
          f"checkpoint {result['checkpoint']}")
    print(format_metrics(result))
    if json_out:
        write_json(json_out, {k: result[k] for k in ("aAcc", "mIoU", "mAcc", "per_class")})
        print(f"wrote {json_out}")
    return 0


def predict_arguments(p: argparse.ArgumentParser) -> None:
    recipe_arguments(p)
    p.add_argument("--checkpoint", required=True, help="MMSeg-format checkpoint file, or 'released'")
    p.add_argument("--image", required=True, help="input image (PNG/JPEG, any size)")
    p.add_argument("--out", required=True, help="output colour prediction PNG (dataset palette)")
    p.add_argument("--logits", help="also write float32 logits (C, H, W) at the image's resolution as .npy")
    fast_arguments(p)
    device_arguments(p, "cpu, cuda, cuda:N or auto (default)")


def predict_command(recipe: str, checkpoint: str, image: str, out: str, logits: Optional[str] = None,
                    overrides: Sequence[str] = (), profile: str = "full", device: str = "auto",
                    fast: bool = False) -> int:
    """`nlbench predict` (``fast``: the fast setting's inference choices, engine/settings.py)."""
    resolved = load_recipe(recipe, overrides, profile)
    dev = resolve_device(device)
    if fast:
        resolved = fast_recipe(resolved, dev)
    logits_out = Path(logits) if logits else None
    check_target(Path(out), "--out")
    if logits_out is not None:
        check_target(logits_out, "--logits")
    summary = predict(resolved, resolve_checkpoint(resolved, checkpoint), Path(image), Path(out), logits_out, dev)
    shape = f"{summary['classes']}x{summary['height']}x{summary['width']}"
    extra = f", logits {shape} -> {logits_out}" if logits_out else ""
    setting = "fast setting" if fast else "MMSeg's arithmetic"
    print(f"{image}: {summary['width']}x{summary['height']}, {resolved.test.mode} inference on {dev} ({setting}) "
          f"in {summary['seconds']:.2f} s -> {out}{extra}")
    return 0
