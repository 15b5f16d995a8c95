"""Pre-flight: the known reasons a reproduction fails, checked before any GPU-hour is spent.

``check_jobs`` looks at what a plan's jobs will read and get: their data roots (data/checks.py),
the pretrained backbone (reachable, its hash, the keys left missing or unexpected after loading),
the setting against the published one (effective batch and norm for what the launcher gives, amp,
TF32 and cuDNN flags: run/deviations.py), the torch/CUDA/cuDNN versions, the free disk for the
checkpoints the schedules write, and on SLURM the profile's partition, account and qos and whether
the results and the download cache sit on a file system the nodes share. ``nlbench doctor`` prints
every finding; ``run-all`` stops on a problem (``PreflightFailed``: one line each, exit 2) before it
writes, downloads or submits anything. Nothing here prints.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmark.data.checks import Finding, check_data, problems
from benchmark.errors import NLBenchError
from benchmark.recipe import Recipe, published_recipe, resolve_data_root
from benchmark.run.job import Job

# File systems the nodes of a cluster usually share; anything else is said as possibly node-local.
SHARED_FILE_SYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "cifs", "smb2", "panfs",
                       "wekafs", "fuse.glusterfs", "glusterfs")
_SLURM_TIMEOUT_S = 20


class PreflightFailed(NLBenchError):
    """run-all's pre-flight found problems: the message has one line per problem."""

    def __init__(self, found: Sequence[Finding]):
        lines = "\n".join(f"  {f.check}: {f.message}" for f in found)
        super().__init__(f"pre-flight found {len(found)} problem(s); nothing was run or submitted "
                         f"(`nlbench doctor` lists every check):\n{lines}")


def check_jobs(jobs: Sequence[Job], launcher: str = "local", cluster_profile=None,
               results: Optional[Path] = None, pretrained: bool = True) -> List[Finding]:
    """Every finding about ``jobs`` (a plan's), each data root and pretrained file checked once. The
    data comes first: while it has a problem, no pretrained file is downloaded."""
    findings = [_versions()]
    roots = {(job.recipe.data.dataset, job.data_root): job.recipe.data for job in jobs}
    for (_, root), data in roots.items():
        # The recipe's own (relative) root where the plan resolved it: the message then says against what.
        own = resolve_data_root(data.data_root) == Path(root)
        findings += check_data(data, data.data_root if own else root)
    sources = {job.recipe.model.pretrained: job.recipe for job in jobs
               if job.checkpoint_source == "trained" and job.recipe.model.pretrained}
    if pretrained and sources and problems(findings):
        findings.append(Finding("note", "pretrained", f"{', '.join(sources)}: not fetched while the data has "
                                                      "problems"))
    elif pretrained:
        for recipe in sources.values():
            findings += check_pretrained(recipe)
    rows = {job.name: job for job in jobs}
    for job in rows.values():
        findings += check_setting(job, launcher)
    if results is not None:
        findings.append(check_disk(jobs, results))
    if launcher == "slurm" and cluster_profile is not None:
        findings += check_cluster(cluster_profile, results, [job.cache_dir for job in jobs])
    return findings


def require_clean(findings: Sequence[Finding]) -> None:
    """Raise PreflightFailed when any finding is a problem."""
    found = problems(list(findings))
    if found:
        raise PreflightFailed(found)


def gate(jobs: Sequence[Job], launcher: str, cluster_profile, results: Path) -> str:
    """run-all's pre-flight: PreflightFailed on a problem, else one line saying what was checked."""
    started = time.perf_counter()
    findings = check_jobs(jobs, launcher, cluster_profile, results)
    require_clean(findings)
    notes = sum(f.level == "note" for f in findings)
    return (f"pre-flight: {len(findings)} check(s) passed in {time.perf_counter() - started:.1f} s"
            + (f", {notes} note(s) (`nlbench doctor` lists them)" if notes else ""))


# ----------------------------------------------------------------------------- setting and machine


def _versions() -> Finding:
    import torch

    cuda = torch.version.cuda or "none"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    where = f"{gpus} x {torch.cuda.get_device_name(0)}" if gpus else "no GPU here"
    return Finding("ok", "versions", f"torch {torch.__version__}, CUDA {cuda}, cuDNN {cudnn or 'none'}; {where}")


def check_setting(job: Job, launcher: str) -> List[Finding]:
    """The row's setting against the published one, for what the launcher gives the job (SyncBN is
    possible only on CUDA with a world size > 1: "BN instead of SyncBN" says when it is not)."""
    from benchmark.run.deviations import deviations

    recipe, world = job.recipe, job.resources.world_size
    gpus = job.resources.gpus
    pub = published_recipe(recipe)
    device = "cpu" if not gpus else _local_gpu() if launcher == "local" else None  # a node's GPU: not known here
    where = f"{recipe.name}: "
    batch = world * recipe.data.imgs_per_gpu
    trained = job.checkpoint_source == "trained"
    # A batch that differs is one of the deviations below, with the same figures (a released row has none).
    out = [] if batch != pub.effective_batch or not trained else [
        Finding("ok", "setting.batch", f"{where}{launcher} gives {job.resources.describe()} (world size {world}) x "
                                       f"{recipe.data.imgs_per_gpu} images = effective batch {batch}, as published "
                                       f"({pub.runtime.gpus} GPUs x {pub.data.imgs_per_gpu})")]
    for phrase in deviations(recipe, world, device, trained=trained, published=pub):
        out.append(Finding("note", "setting", f"{where}{phrase}"))
    return out


def _local_gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def checkpoint_bytes(recipe: Recipe) -> int:
    """Bytes of one training checkpoint: fp32 weights, SGD momentum of each, buffers."""
    import torch

    from benchmark.models.segmentor import build_segmentor

    with torch.device("meta"):
        model = build_segmentor(recipe.model)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    return 4 * (2 * params + buffers)


def checkpoints_written(recipe: Recipe) -> int:
    """iter_N.pth every checkpoint_interval and at the end (all kept, as MMSeg), plus latest.pth."""
    s = recipe.schedule
    return s.max_iters // s.checkpoint_interval + (s.max_iters % s.checkpoint_interval != 0) + 1


def check_disk(jobs: Sequence[Job], results: Path) -> Finding:
    """Free space where the results go against the checkpoints the trained jobs' schedules write."""
    sizes: Dict[str, int] = {}
    need = 0
    for job in jobs:
        if "train" not in job.stages:
            continue
        if job.name not in sizes:
            sizes[job.name] = checkpoint_bytes(job.recipe)
        need += sizes[job.name] * checkpoints_written(job.recipe)
    where = Path(results).resolve()
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    text = f"{where}: {_gb(free)} free, the schedules' checkpoints need about {_gb(need)}"
    return Finding("ok" if free >= need else "problem", "disk", text + ("" if free >= need else "; expected more free"))


def _gb(n: int) -> str:
    return f"{n / 1024 ** 3:.1f} GB"


# ----------------------------------------------------------------------------- pretrained backbone


def check_pretrained(recipe: Recipe) -> List[Finding]:
    """The backbone's ImageNet weights: fetched (hash-checked) into the cache, then loaded into the
    row's backbone, naming any key left missing or unexpected."""
    from benchmark.engine.pretrained import load_backbone_weights, resolve_pretrained
    from benchmark.io.files import file_sha256
    from benchmark.models.segmentor import build_segmentor

    source = recipe.model.pretrained
    if source is None:
        return []  # a setting deviation (random init), said by check_setting
    try:
        path = resolve_pretrained(source)
        sha = file_sha256(path)
        backbone = build_segmentor(recipe.model).backbone
        dropped = load_backbone_weights(backbone, path)
    except NLBenchError as exc:
        return [Finding("problem", "pretrained", f"{source}: {exc}")]
    tensors = len(backbone.state_dict())
    extra = f", {len(dropped)} classifier key(s) fc.* dropped" if dropped else ""
    return [Finding("ok", "pretrained", f"{source} -> {path.resolve()}: sha256 {sha[:16]}..., loaded into the "
                                        f"depth-{recipe.model.depth} backbone: {tensors} tensors, 0 missing, 0 "
                                        f"unexpected{extra}")]


# ----------------------------------------------------------------------------- SLURM


Runner = Callable[[List[str]], Tuple[int, str]]


def _run(argv: List[str]) -> Tuple[int, str]:
    """(exit status, stdout) of a SLURM client command; 127 when it is not installed."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_SLURM_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return 127, ""
    except subprocess.TimeoutExpired:
        return 124, ""
    return done.returncode, done.stdout


def check_cluster(profile, results: Optional[Path], cache_dirs: Sequence[Optional[str]],
                  run: Runner = _run) -> List[Finding]:
    """The profile's partition, account and qos on the cluster (sinfo, sacctmgr), and the file systems
    of the results folder and the download cache."""
    out = []
    asks = [("partition", profile.partition, ["sinfo", "-h", "-o", "%R"]),
            ("account", profile.account, ["sacctmgr", "-n", "-P", "show", "account", "format=Account"]),
            ("qos", profile.qos, ["sacctmgr", "-n", "-P", "show", "qos", "format=Name"])]
    for key, wanted, argv in asks:
        if wanted:
            out.append(_exists_on_cluster(key, wanted, argv, run))
    from benchmark.io.download import cache_dir_default

    folders = [("results", results)] + [("download cache", Path(c)) for c in dict.fromkeys(cache_dirs) if c]
    if not any(c for c in cache_dirs):
        folders.append(("download cache", cache_dir_default()))
    out += [_shared(what, Path(folder)) for what, folder in folders if folder is not None]
    return out


def _exists_on_cluster(key: str, wanted: str, argv: List[str], run: Runner) -> Finding:
    code, text = run(argv)
    check = f"slurm.{key}"
    if code != 0:
        return Finding("note", check, f"{wanted}: cannot tell, `{' '.join(argv)}` exited {code}")
    names = {line.strip().rstrip("*") for line in text.splitlines() if line.strip()}
    if wanted in names:
        return Finding("ok", check, f"{wanted}: known to the cluster")
    known = ", ".join(sorted(names)) or "none"
    return Finding("problem", check, f"the cluster profile's {key} {wanted!r} is not known to the cluster "
                                     f"(`{' '.join(argv[:2])}` lists: {known})")


def _shared(what: str, folder: Path) -> Finding:
    """Said, not failed: a node-local file system is fine where the jobs run on this machine."""
    where = folder.resolve()
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    code, text = _run(["stat", "-f", "-c", "%T", str(probe)])
    kind = text.strip() if code == 0 else ""
    if not kind:
        return Finding("note", "slurm.shared", f"{where} ({what}): cannot tell its file system")
    if kind in SHARED_FILE_SYSTEMS:
        return Finding("ok", "slurm.shared", f"{where} ({what}): on {kind}, a file system nodes share")
    return Finding("note", "slurm.shared", f"{where} ({what}): on {kind}, which nodes share only if it is this "
                                           "machine's (the jobs read and write this path on the nodes)")
