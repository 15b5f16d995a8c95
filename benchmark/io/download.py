"""The download cache: files fetched once, resumable, checked against a sha256 prefix.

``download(url, target, sha256_prefix)`` writes the bytes to ``<target>.part``; an interrupted
download continues from where it stopped (HTTP Range), and only a file whose sha256 starts with the
expected prefix is renamed (atomically) to ``target``. A mismatch deletes the partial file and says
so. The cache folder is ``$NLBENCH_CACHE`` (default ``~/.cache/nlbench/checkpoints``); on a cluster
point it at a shared file system so that each file is downloaded once. Processes that want the same
file at the same time (array tasks, ranks) take turns on ``<file>.lock`` (an flock): one downloads,
the others then find the finished file.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional, Union

from benchmark.errors import NLBenchError
from benchmark.io.files import file_sha256

CHUNK = 1 << 20
TIMEOUT_S = 60


def cache_dir_default() -> Path:
    env = os.environ.get("NLBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nlbench" / "checkpoints"


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"User-Agent": "nlbench"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part file already holds every byte
            return None
        raise NLBenchError(f"download failed: HTTP {exc.code} {exc.reason}", url) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise NLBenchError(f"download failed: {reason}", url) from None


def download(url: str, target: Path, sha256_prefix: str, progress: bool = True) -> Path:
    """Download ``url`` to ``target`` (resuming ``target.part``) and check the sha256 prefix."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset)
    if response is not None:
        with response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                offset = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=target.name, disable=not progress or None, leave=False)
            try:
                with open(part, "ab" if resumed else "wb") as fh:
                    try:
                        for block in iter(lambda: response.read(CHUNK), b""):
                            fh.write(block)
                            bar.update(len(block))
                    except (OSError, http.client.HTTPException) as exc:
                        fh.flush()
                        raise NLBenchError(f"download interrupted after {fh.tell()} bytes ({exc}); run the "
                                           "same command again to resume", url) from None
                    fh.flush()
                    os.fsync(fh.fileno())
                    if total is not None and fh.tell() < total:
                        # The connection closed early without an error: keep the bytes for a resume.
                        raise NLBenchError(f"download interrupted after {fh.tell()} of {total} bytes; run "
                                           "the same command again to resume", url)
            finally:
                bar.close()
    got = file_sha256(part)
    if not got.startswith(sha256_prefix.lower()):
        part.unlink()
        raise NLBenchError(f"sha256 mismatch: the release stamp says {sha256_prefix}..., the downloaded file "
                           f"is {got[:8]}...; the partial file was deleted", url, "release.stamp")
    os.replace(part, target)
    return target


def lock_path_of(target: Path) -> Path:
    """The lock file that callers fetching ``target`` take turns on."""
    return target.with_name(target.name + ".lock")


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` for the duration; the file is removed afterwards.

    A waiter may wake up holding the lock of a file its predecessor already removed; it then
    checks that the path still names the file it locked, and otherwise starts over.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock_path, "a")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            current = os.stat(lock_path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        fh.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        fh.close()


def cached_download(url: str, sha256_prefix: str, cache_dir: Optional[Union[str, Path]] = None,
                    filename: Optional[str] = None, progress: bool = True) -> Path:
    """``url`` from the cache, downloaded on first use; a cached file that no longer matches its
    sha256 prefix is downloaded again. Concurrent callers for one file download it once."""
    cache = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    target = cache / (filename or url.rsplit("/", 1)[-1])
    try:
        with exclusive(lock_path_of(target)):
            if target.exists():
                if file_sha256(target).startswith(sha256_prefix.lower()):
                    return target
                target.unlink()
            return download(url, target, sha256_prefix, progress=progress)
    except OSError as exc:
        raise NLBenchError(f"cannot write to the download cache: {exc.strerror or exc}", cache) from None
