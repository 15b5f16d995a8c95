"""`nlbench gpu-report`: one command that measures what the fast path is for, on one GPU, and writes
``gpu_report.md`` and ``gpu_report.json``.

Parts, in order (each one's failure is recorded and the next runs):
  1. R-50 and R-101 at Cityscapes 512x1024: fps (whole 1024x2048 image) and Mem, the training step's
     seconds per iteration and peak memory at the per-GPU batch of 2, in both measurement settings
     (``nlbench bench --train-step``; engine/settings.py);
  2. the attention alone, SDPA against the explicit N x N matrix, at N = 8192 (batch 2, forward and
     backward, a 512x1024 training crop) and N = 32768 (batch 1, forward, a whole 1024x2048 image):
     time, memory and which SDPA kernel ran; and flash attention alone (``sdpa_kernel``) at head
     dimension 256, forward and backward, against an fp32 reference;
  3. bf16 against fp32 argmax agreement of whole-image inference on synthetic Cityscapes val images;
  4. the fast setting with ``runtime.compile`` (R-50), while the time budget allows;
  5. the ``gpu``-marked tests, stopped so that the report ends within ``--limit-s`` (default 480 s:
     the report's 8 minutes); parts 1-4 are sized to leave them time, and are not cut short.
Both files are rewritten after each part, so a report cut off part-way keeps what it measured.
The GPU goals of docs/BENCHMARKS.md are shown met or not; nothing here asserts them.

``--dry-run`` runs every part at tiny sizes (smoke-profile models, short sequences, few images), on
the CPU when there is no GPU: it checks the command, not the figures. Run from a checkout (the tests
are part of the report). The figures need no network and no dataset: images are synthetic.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

from benchmark.data.layouts import build_dataset
from benchmark.data.synthetic import write_synthetic
from benchmark.engine.bench import bench, time_calls
from benchmark.engine.distributed import device_info, resolve_device
from benchmark.engine.inference import infer, to_input_tensor
from benchmark.engine.settings import PUBLISHED, SETTING_NAMES, backend_flags
from benchmark.errors import check_number
from benchmark.io.files import atomic_write_text, json_safe
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import REPO_ROOT, load_recipe

ROWS = ("nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024", "nonlocal_r101-d8_4xb2-40k_cityscapes-512x1024")
HEAD_DIM = 256  # the non-local block's C' = 512 / 2
GOAL_SPEEDUP, GOAL_MEMORY, GOAL_FPS, GOAL_AGREEMENT = 2.0, 0.5, 70.0, 99.9


@dataclass(frozen=True)
class Sizes:
    """How much a report measures: the full one, or the dry run's tiny sizes."""

    profile: str
    overrides: Tuple[str, ...]
    attention: Tuple[Tuple[int, int, bool], ...]  # (batch, N, with backward)
    agreement_images: int
    agreement_hw: Tuple[int, int]
    attention_repeats: int


FULL = Sizes("full", ("bench.warmup_images=5", "bench.total_images=35", "bench.mem_iters=5",
                      "bench.train_step_warmup=3", "bench.train_step_iters=10"),
             ((2, 8192, True), (1, 32768, False)), 8, (1024, 2048), 10)
DRY = Sizes("smoke", ("bench.warmup_images=1", "bench.total_images=2", "bench.mem_iters=1",
                      "bench.train_step_warmup=1", "bench.train_step_iters=1"),
            ((2, 256, True), (1, 1024, False)), 2, (64, 128), 2)


Log = Callable[[str], None]  # where the report's progress lines go (the command prints them stamped)


def stamped(message: str) -> str:
    """A progress line as `nlbench gpu-report` shows it: its tool and the time of day first."""
    return f"[gpu-report {time.strftime('%H:%M:%S')}] {message}"


def _part(report: Dict[str, Any], name: str, run: Callable[[], Any], log: Log) -> None:
    """``report[name] = run()``; an exception is recorded (type and message) instead, and the report goes on."""
    started = time.perf_counter()
    log(f"{name} ...")
    try:
        report[name] = run()
    except Exception as exc:  # one part failing must not lose the others' figures
        report[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    report.setdefault("part_seconds", {})[name] = time.perf_counter() - started
    log(f"{name} done in {report['part_seconds'][name]:.1f} s")
    if device_of(report).type == "cuda":
        torch.cuda.empty_cache()


def device_of(report: Dict[str, Any]) -> torch.device:
    return torch.device(report["device"]["device"])


# ----------------------------------------------------------------------------- 1. models


def model_figures(sizes: Sizes, device: str) -> List[Dict[str, Any]]:
    """``nlbench bench --train-step`` of each row in both settings (synthetic 1024x2048 images)."""
    out = []
    for row in ROWS:
        recipe = load_recipe(row, sizes.overrides, sizes.profile)
        out.append(bench(recipe, device=device, settings=SETTING_NAMES, train_step=True,
                         data_root=str(Path(tempfile.gettempdir()) / "nlbench-no-data")))
    return out


def compiled_figures(sizes: Sizes, device: str) -> Dict[str, Any]:
    """The fast setting of R-50 with ``runtime.compile: true``."""
    recipe = load_recipe(ROWS[0], [*sizes.overrides, "runtime.compile=true"], sizes.profile)
    result = bench(recipe, device=device, settings=("fast",), train_step=True,
                   data_root=str(Path(tempfile.gettempdir()) / "nlbench-no-data"))
    return {"recipe": ROWS[0], "fast": result["fast"], "wall_time_s": result["wall_time_s"]}


# ----------------------------------------------------------------------------- 2. attention

_KERNELS = {  # profiler op name (substring) -> what ran
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_attention_math": "math",
}


def _kernel(run: Callable[[], Any]) -> str:
    """Which SDPA implementation ``run`` dispatched to, read from the profiler's op names."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    names = {event.key for event in prof.key_averages()}
    for op, label in _KERNELS.items():
        if any(op in name and not name.endswith(op + "_backward") for name in names):
            return label
    return "none found"


def _time_and_peak(run: Callable[[], Any], device: torch.device, repeats: int) -> Tuple[float, Optional[float]]:
    """Median seconds of ``run`` (after 2 warm-up calls) and its peak memory above what was allocated
    before, in GiB (CUDA only)."""
    time_calls(run, 2, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    seconds = time_calls(run, repeats, device)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 1024**3 if device.type == "cuda" else None
    return float(np.median(seconds)), peak


def _attention_call(impl: str, q, k, v, backward: bool) -> Callable[[], Any]:
    scale = HEAD_DIM**-0.5

    def run():
        with torch.set_grad_enabled(backward):
            if impl == "sdpa":
                out = F.scaled_dot_product_attention(q, k, v, scale=scale)
            else:
                out = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v
            if backward:
                out.float().sum().backward()
        return out
    return run


def attention_figures(sizes: Sizes, device: torch.device) -> List[Dict[str, Any]]:
    """SDPA against the explicit matrix, per (batch, N, backward), dtype and implementation."""
    rows = []
    dtypes = [torch.float32, torch.bfloat16]
    for batch, n, backward in sizes.attention:
        for dtype in dtypes:
            gen = torch.Generator(device=device).manual_seed(n)
            q, k, v = (torch.randn(batch, 1, n, HEAD_DIM, device=device, dtype=dtype, generator=gen,
                                   requires_grad=backward) for _ in range(3))
            for impl in ("sdpa", "explicit"):
                run = _attention_call(impl, q, k, v, backward)
                try:
                    seconds, peak = _time_and_peak(run, device, sizes.attention_repeats)
                    kernel = _kernel(run) if impl == "sdpa" else "explicit N x N matrix"
                except torch.OutOfMemoryError:
                    seconds, peak, kernel = math.nan, None, "out of memory"
                rows.append({"batch": batch, "n": n, "head_dim": HEAD_DIM, "backward": backward,
                             "dtype": str(dtype).replace("torch.", ""), "impl": impl, "ms": seconds * 1000,
                             "peak_gb": peak, "kernel": kernel})
            del q, k, v
    return rows


def flash_head_dim_256(sizes: Sizes, device: torch.device) -> Dict[str, Any]:
    """Flash attention alone (``sdpa_kernel(FLASH_ATTENTION)``), bf16, head dim 256, forward and
    backward, against fp32 math; an error says flash refused."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch, n, _ = sizes.attention[0]
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, 1, n, HEAD_DIM, device=device, generator=gen) for _ in range(3))
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=HEAD_DIM**-0.5).float()
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        run = _attention_call("sdpa", qb, kb, vb, backward=True)
        out = run()
        kernel = _kernel(run)
    error = float((out.detach().float() - ref).norm() / ref.norm())
    return {"batch": batch, "n": n, "head_dim": HEAD_DIM, "dtype": "bfloat16", "kernel": kernel,
            "backward_ok": qb.grad is not None and bool(torch.isfinite(qb.grad).all()),
            "relative_error_vs_fp64": error}


# ----------------------------------------------------------------------------- 3. bf16 vs fp32


def _calibrated_model(recipe, device: torch.device, image: np.ndarray):
    """A random-weight model whose predictions vary (MMSeg's init gives near-flat logits): norm
    scales and shifts drawn, the classifier's weights at unit scale, and norm statistics set from
    one training-mode pass over ``image`` so that activations stay O(1)."""
    torch.manual_seed(0)
    model = build_segmentor(recipe.model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
            m.momentum = None  # a cumulative average: one pass sets the statistics
        model.decode_head.conv_seg.weight.normal_(0, 1.0)
        model.to(device).train()
        model(to_input_tensor(image, device))
    return model.eval()


def agreement_figures(sizes: Sizes, device: torch.device) -> Dict[str, Any]:
    """Share of pixels whose argmax is the same with bf16 autocast as in fp32 (TF32 off), R-50
    whole-image inference on synthetic Cityscapes val images."""
    recipe = load_recipe(ROWS[0], [f"data.img_scale=[{sizes.agreement_hw[1]},{sizes.agreement_hw[0]}]"],
                         sizes.profile)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic("cityscapes", Path(tmp) / "cityscapes", train=1, val=sizes.agreement_images,
                               size_hw=sizes.agreement_hw)
        dataset = build_dataset(recipe.data, "val", root)
        images = [dataset.read_image(i) for i in range(len(dataset))]
    model = _calibrated_model(recipe, device, images[0])
    same = total = 0
    with backend_flags(PUBLISHED), torch.inference_mode():  # fp32 without TF32 as the reference
        for image in images:
            x = to_input_tensor(image, device)
            fp32 = infer(model, x, recipe).argmax(1)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                bf16 = infer(model, x, recipe).argmax(1)
            same += int((fp32 == bf16).sum())
            total += fp32.numel()
    return {"recipe": ROWS[0], "images": len(images), "image_hw": list(sizes.agreement_hw), "pixels": total,
            "agreement_percent": 100.0 * same / total, "weights": "random, calibrated (see gpu_report.py)"}


# ----------------------------------------------------------------------------- 5. tests


def gpu_tests(timeout_s: int = 300) -> Dict[str, Any]:
    """``pytest -m gpu`` over the test files that hold gpu-marked tests, stopped after ``timeout_s``
    (the whole process group: ranks or loader workers it started cannot keep the report waiting)."""
    files = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe: nothing to drain after a kill
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                 *files], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
        out.seek(0)
        lines = out.read().strip().splitlines()
    summary = lines[-1] if lines else ""
    if returncode is None:
        summary = f"stopped after {timeout_s} s (the report's --limit-s); last line: {summary}"
    return {"files": files, "returncode": returncode, "summary": summary, "tail": lines[-30:]}


# ----------------------------------------------------------------------------- goals and the report


def _goal(text: str, value: str, met: Optional[bool]) -> Dict[str, Any]:
    return {"goal": text, "value": value, "met": met}


def goals(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """docs/BENCHMARKS.md's GPU goals against the report's figures: met, not met, or None (not measured
    or not on a GPU of the class the goal names)."""
    on_gpu = report["device"]["device_type"] == "cuda"
    hopper = any(name in report["device"]["device_name"] for name in ("H100", "H200"))
    out = []
    for result in report["models"] if isinstance(report.get("models"), list) else []:
        fast = result.get("fast") or {}
        if result.get("train_step_s") and fast.get("train_step_s"):
            speedup = result["train_step_s"] / fast["train_step_s"]
            memory = fast["train_step_mem_gb"] / result["train_step_mem_gb"]
            out.append(_goal(f"{result['recipe']}: fast training step >= {GOAL_SPEEDUP:g}x the published one at "
                             f"<= {GOAL_MEMORY:g}x its peak memory", f"{speedup:.2f}x at {memory:.2f}x",
                             (speedup >= GOAL_SPEEDUP and memory <= GOAL_MEMORY) if on_gpu else None))
        if result["recipe"] == ROWS[0] and fast.get("fps"):
            out.append(_goal(f"fast whole-image R-50 1024x2048 inference >= {GOAL_FPS:g} fps on an H100-class GPU",
                             f"{fast['fps']:.1f} fps", fast["fps"] >= GOAL_FPS if hopper else None))
    agreement = report.get("agreement") or {}
    if "agreement_percent" in agreement:
        out.append(_goal(f"bf16 vs fp32 argmax agreement >= {GOAL_AGREEMENT:g}%",
                         f"{agreement['agreement_percent']:.3f}%",
                         agreement["agreement_percent"] >= GOAL_AGREEMENT if on_gpu else None))
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return tabulate([[_fmt(c) for c in r] for r in rows], headers=headers, tablefmt="github", disable_numparse=True)


NOT_YET = "(not measured: the report stopped before this part)"


def _model_section(models: Any) -> List[str]:
    if models is None:
        return [NOT_YET]
    if not isinstance(models, list):
        return [f"error: {models.get('error')}"]
    rows = []
    for result in models:
        for name, figures in (("published", result), ("fast", result.get("fast") or {})):
            rows.append([result["recipe"], name, figures.get("fps"), figures.get("mem_gb"),
                         figures.get("train_step_s"), figures.get("train_step_mem_gb"), figures.get("infer_mem_gb")])
    return [_table(["recipe", "setting", "fps (1024x2048)", "Mem (GB)", "train s/iter (batch 2)",
                    "train peak (GB)", "inference peak (GB)"], rows)]


def _json_or_not_yet(part: Any) -> str:
    return NOT_YET if part is None else json.dumps(part)


def markdown(report: Dict[str, Any]) -> str:
    """The report for people: device, each part's table, the goals."""
    dev = report["device"]
    parts = ["# nlbench GPU report", "",
             f"{'**Dry run** (tiny sizes: checks the command, not the figures). ' if report['dry_run'] else ''}"
             f"{dev['device_name']} ({dev['device']}), torch {dev['torch_version']}, CUDA {dev['cuda_version']}, "
             f"cuDNN {dev['cudnn_version']}; {report['wall_time_s']:.0f} s in all.", "",
             "## Models: published and fast settings", "", *_model_section(report.get("models")), ""]
    settings = next((m["measurement"] for m in report.get("models") or [] if isinstance(m, dict)), {})
    parts += [f"- `{name}`: {json.dumps(s)}" for name, s in settings.items()] + [""]
    compiled = report.get("compiled") or {}
    if "fast" in compiled:
        c = compiled["fast"]
        parts += [f"With `runtime.compile: true` ({compiled['recipe']}, fast): {_fmt(c['fps'])} fps, training step "
                  f"{_fmt(c.get('train_step_s'))} s/iter, peak {_fmt(c.get('train_step_mem_gb'))} GB.", ""]
    elif compiled:
        parts += [f"compile: {compiled.get('error') or compiled.get('skipped')}", ""]
    attention = report.get("attention")
    parts += ["## The attention alone (head dim 256)", ""]
    parts += [_table(["batch", "N", "backward", "dtype", "impl", "ms", "peak (GB)", "kernel"],
                     [[a["batch"], a["n"], a["backward"], a["dtype"], a["impl"], a["ms"], a["peak_gb"], a["kernel"]]
                      for a in attention]) if isinstance(attention, list) else
              NOT_YET if attention is None else f"error: {attention}", ""]
    parts += [f"Flash alone (`sdpa_kernel(FLASH_ATTENTION)`): {_json_or_not_yet(report.get('flash_head_dim_256'))}",
              "", f"## bf16 vs fp32 argmax agreement\n\n{_json_or_not_yet(report.get('agreement'))}", "",
              "## Goals", ""]
    parts += [_table(["goal", "value", "met"], [[g["goal"], g["value"], {True: "yes", False: "NO", None: "n/a"}[
        g["met"]]] for g in report["goals"]]), ""]
    tests = report.get("gpu_tests") or {}
    said = tests.get("summary") or tests.get("error") or tests.get("skipped") or NOT_YET
    parts += [f"## gpu-marked tests\n\n{said}", ""]
    return "\n".join(parts)


def time_for_gpu_tests(elapsed_s: float, limit_s: float, most_s: float = 300.0) -> Optional[float]:
    """Seconds the gpu tests may take so that the report ends within ``limit_s``; None when under
    30 s are left (then they are left out, and the report says so)."""
    left = min(most_s, limit_s - elapsed_s - 10.0)  # 10 s to write the files
    return left if left >= 30.0 else None


def _save(report: Dict[str, Any], folder: Path, started: float) -> Dict[str, Any]:
    """Both files as they stand (a report cut off by its machine keeps the parts it finished)."""
    report = {**report, "goals": goals(report), "wall_time_s": time.perf_counter() - started}
    atomic_write_text(folder / "gpu_report.json", json.dumps(json_safe(report), indent=2) + "\n")
    atomic_write_text(folder / "gpu_report.md", markdown(report))
    return report


def gpu_report(out: str, dry_run: bool, device: str, budget_s: float, skip_tests: bool, limit_s: float,
               log: Log) -> Tuple[Dict[str, Any], Path]:
    """`nlbench gpu-report`'s measurements, written to OUT/gpu_report.{json,md} after each part:
    (the report, OUT); a part that failed holds its error instead of its figures."""
    check_number(budget_s, "--budget-s", "number of seconds")
    check_number(limit_s, "--limit-s", "number of seconds", strict=True)
    started = time.perf_counter()
    sizes, folder = DRY if dry_run else FULL, Path(out)
    dev = resolve_device(device)
    report: Dict[str, Any] = {"dry_run": dry_run, "sizes": asdict(sizes), "device": device_info(dev),
                              "budget_s": budget_s, "limit_s": limit_s}
    for name, run in (("models", lambda: model_figures(sizes, str(dev))),
                      ("attention", lambda: attention_figures(sizes, dev)),
                      ("flash_head_dim_256", lambda: flash_head_dim_256(sizes, dev)),
                      ("agreement", lambda: agreement_figures(sizes, dev))):
        _part(report, name, run, log)
        _save(report, folder, started)
    if time.perf_counter() - started < budget_s / 2:  # compiling R-50 takes minutes: only with time to spare
        _part(report, "compiled", lambda: compiled_figures(sizes, str(dev)), log)
        _save(report, folder, started)
    else:
        report["compiled"] = {"skipped": f"over half the {budget_s:.0f} s budget was spent before it"}
    timeout = time_for_gpu_tests(time.perf_counter() - started, limit_s)
    if skip_tests:
        report["gpu_tests"] = {"skipped": "--skip-tests"}
    elif timeout is None:
        report["gpu_tests"] = {"skipped": f"under 30 s left of the {limit_s:.0f} s limit"}
    else:
        _part(report, "gpu_tests", lambda: gpu_tests(int(timeout)), log)
    return _save(report, folder, started), folder
