"""Where a row's reference curve comes from, and `nlbench logs fetch`.

  released, full profile   the training log MMSeg published beside the row's checkpoint
                           (``ReleaseConfig.log_url``), downloaded once into ``$NLBENCH_CACHE/logs/``
  released, smoke profile  the smoke reference log committed in the repository,
                           ``results/reference/logs/<profile>/<recipe>.log.json`` (written by
                           nlbench's own smoke run, in MMSeg's 0.x form)
  PATH                     a local log file, or a folder: the row's ``<recipe>.log.json`` (or the
                           release's log name) in it, else every log in it as one (resumed) run

The published logs carry no hash in their names, so a download is trusted on first use and then
pinned: it must read as a training log, and its sha256 is written beside it (``<name>.sha256``). A
cached file that no longer matches its pin is fetched again, and a fetched file that differs from
the pin is refused (the published file changed, or the cache was tampered with). docs/CURVES.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

from benchmark.catalog import select_recipe_paths
from benchmark.curves.reader import Curve, read_curve, read_file
from benchmark.errors import NLBenchError
from benchmark.io.download import cache_dir_default, download, exclusive, lock_path_of
from benchmark.io.files import atomic_write_text, file_sha256
from benchmark.recipe import REPO_ROOT, Recipe, load_recipe

REFERENCE_LOGS = REPO_ROOT / "results" / "reference" / "logs"
RELEASED = "released"
PathLike = Union[str, Path]


def smoke_reference_path(recipe_name: str, profile: str) -> Path:
    """The committed reference log of a row in a non-full profile."""
    return REFERENCE_LOGS / profile / f"{recipe_name}.log.json"


def log_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_dir_default() / "logs"


def _release_log_name(recipe: Recipe) -> str:
    if recipe.release is None:
        raise NLBenchError("this recipe names no release, so no published training log", recipe.source or recipe.name,
                           "release")
    return recipe.release.log_url.rsplit("/", 1)[-1]


def _pin(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _read_pin(target: Path) -> Optional[str]:
    try:
        return _pin(target).read_text().split()[0]
    except (OSError, IndexError):
        return None


def fetch_log(recipe: Recipe, cache_dir: Optional[PathLike] = None, progress: bool = True,
              offline: bool = False) -> Path:
    """The row's published training log from the cache, downloaded (resumably) on first use.
    Concurrent callers (array tasks, parallel jobs) take turns: one downloads, the others find it."""
    name = _release_log_name(recipe)
    target = log_cache_dir(cache_dir) / name
    if offline:  # reads only (plots never download): no lock file in a cache that may be read-only
        return _cached_or_fetched(recipe, target, progress, offline)
    try:
        with exclusive(lock_path_of(target)):
            return _cached_or_fetched(recipe, target, progress, offline)
    except OSError as exc:
        raise NLBenchError(f"cannot write to the log cache: {exc.strerror or exc}", target.parent) from None


def _cached_or_fetched(recipe: Recipe, target: Path, progress: bool, offline: bool) -> Path:
    pinned = _read_pin(target)
    if target.is_file():
        if pinned is None or file_sha256(target) == pinned:
            return _pinned(target, pinned)
        target.unlink()  # changed since it was pinned: fetch it again
    if offline:
        raise NLBenchError(f"the published training log {target.name} is not in the cache; `nlbench logs fetch` "
                           "downloads it", target)
    download(recipe.release.log_url, target, "", progress=progress)
    return _pinned(target, pinned)


def _pinned(target: Path, pinned: Optional[str]) -> Path:
    """Check that ``target`` reads as a training log and matches its pin; pin it when it has none."""
    try:
        read_file(target)
    except NLBenchError as exc:
        target.unlink()
        raise NLBenchError(f"the downloaded file is not a training log ({exc}); it was deleted", target) from None
    digest = file_sha256(target)
    if pinned is not None and digest != pinned:
        target.unlink()
        raise NLBenchError(f"sha256 {digest[:12]}... differs from the one pinned at the first download "
                           f"({pinned[:12]}...): the published log changed; delete {_pin(target)} to accept it",
                           target)
    if pinned is None:
        atomic_write_text(_pin(target), f"{digest}  {target.name}\n")
    return target


def resolve_reference(recipe: Recipe, spec: Optional[str] = RELEASED, offline: bool = False) -> Path:
    """The log file (or folder of one run's files) that ``spec`` names for ``recipe``'s row."""
    if spec in (None, RELEASED):
        if recipe.profile == "full":
            return fetch_log(recipe, offline=offline, progress=not offline)
        path = smoke_reference_path(recipe.name, recipe.profile)
        if not path.is_file():
            raise NLBenchError(f"no {recipe.profile} reference log for this row; `make reference-logs` writes them "
                               "from a smoke run (docs/CURVES.md)", path)
        return path
    path = Path(spec)
    if not path.exists():
        raise NLBenchError("reference log not found", path, "--reference")
    if path.is_dir():
        names = [f"{recipe.name}.log.json", f"{recipe.profile}/{recipe.name}.log.json"]
        if recipe.release is not None:
            names.append(_release_log_name(recipe))
        for candidate in (path / n for n in names):
            if candidate.is_file():
                return candidate
    return path


def reference_kind(recipe: Recipe, spec: Optional[str] = RELEASED) -> str:
    """What the reference curve is, in the words the outputs use: "published" (MMSeg's log of the
    row), "smoke reference" (the committed log of a non-full profile) or "reference" (a local file)."""
    if spec in (None, RELEASED):
        return "published" if recipe.profile == "full" else f"{recipe.profile} reference"
    return "reference"


def reference_label(path: Path) -> str:
    """A path as people read it: relative to the checkout when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def reference_curve(recipe: Recipe, spec: Optional[str] = RELEASED, offline: bool = False) -> Curve:
    return read_curve(resolve_reference(recipe, spec, offline), recipe.schedule.eval_interval,
                      recipe.schedule.max_iters)


def fetch_logs(pattern: Optional[str] = None, overrides: Sequence[str] = (), cache_dir: Optional[PathLike] = None,
               progress: bool = True, log: Callable[[str], None] = print) -> List[Path]:
    """Every matching row's published log into the cache; one NLBenchError naming each failure.
    ``log`` is told each log fetched, and where its last iteration falls short (as train's log)."""
    fetched, failures = [], []
    for path in select_recipe_paths(pattern):
        recipe = load_recipe(path, overrides)
        try:
            target = fetch_log(recipe, cache_dir, progress)
        except NLBenchError as exc:
            failures.append(f"{recipe.name}: {exc}")
            continue
        curve = read_curve(target, recipe.schedule.eval_interval, recipe.schedule.max_iters)
        log(f"{recipe.name}: {target} (sha256 {file_sha256(target)[:12]}..., {len(curve.train)} train and "
              f"{len(curve.evals)} evaluation lines)")
        if curve.last_iteration != recipe.schedule.max_iters:
            log(f"  note: the log ends at iteration {curve.last_iteration}; the row's schedule has "
                  f"{recipe.schedule.max_iters}")
        fetched.append(target)
    if failures:
        raise NLBenchError(f"{len(failures)} of {len(failures) + len(fetched)} log(s) not fetched: "
                           + "; ".join(failures))
    return fetched

