"""One lock per job (row, seed) in the results folder: two run-alls into the same folder never run the
same (row, seed, stage) twice.

    RESULTS/jobs/locks/<profile>__<recipe>__seed<k>.lock

The lock is an ``flock`` on that file, on the results file system itself, so it holds between hosts
wherever the file system supports it (local disks; NFSv4; Lustre mounted with ``flock``). The file
holds the holder's host, pid, process start and the time it took the lock, as JSON, so that whoever
finds it taken can say by whom. Whoever holds a job's lock decides which of its stages are still
missing and runs them; the records it writes are what the next holder sees.

Stale locks. The kernel drops an flock when its process dies, however it dies, so a dead holder on
the same host never blocks anyone: the next taker finds the dead holder's details still in the file
and says that it took a stale lock over. Across hosts the file system's lock service decides when
a crashed client's locks go (NFSv4: when its lease expires, about 90 s; Lustre: when the client is
evicted); until then the job counts as held by that host and pid, and the messages name them.

File systems without ``flock`` (ENOLCK/ENOSYS/EOPNOTSUPP, e.g. NFSv3 without lockd, Lustre without
the mount option): the lock is then a second file, ``<name>.lock.held``, created exclusively. A
holder on the same host whose pid no longer runs (or runs a newer process: the process start time
differs) is stale, and the lock is taken over: its file is moved aside and checked, and put back
when a faster taker had already replaced it. One narrow window stays: a third taker that creates the
file while it is aside makes the put-back fail, and two processes then hold the job (flock, where the
file system has it, has no such window). A holder on another host cannot be checked from
here; the job counts as held until that file is removed, and the message gives its path.

Within one process the lock is re-entrant (the local launcher holds it while ``run_job`` runs in
the same process), and a launcher that starts ranks in child processes names the locks it holds for
them in ``NLBENCH_JOB_LOCKS_HELD``.

A job in a process of its own (``run-all --parallel``: a forkserver's child, which outlives its
launcher when the launcher is killed) holds the lock itself: the launcher hands it the lock's open
file (``JobLock.shared``, passed over the forkserver's socket), the child says it is the holder
(``adopt``), and the flock stays taken for as long as either process lives. A run-all started after
the launcher died therefore finds the job held by the child that still trains, and waits for it,
instead of training a second copy in the same work dir. (The other choice, a child that dies with
its launcher, would lose the work since the last checkpoint on every launcher crash; this one loses
nothing.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

from benchmark.errors import NLBenchError
from benchmark.io.jobenv import process_alive, process_start
from benchmark.io.layout import ResultsLayout

HELD_ENV = "NLBENCH_JOB_LOCKS_HELD"
_NO_FLOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
_HELD: Dict[str, "JobLock"] = {}  # locks this process holds, by path


def lock_path(results_dir: Union[str, Path], key: str) -> Path:
    """The lock file of job ``key`` (``<profile>/<recipe>/seed<k>``): the results layout's."""
    return ResultsLayout.of(results_dir).lock_file(key)


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started_at: str
    proc_start: Optional[str] = None
    what: str = ""

    @classmethod
    def me(cls, what: str) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   process_start(os.getpid()), what)

    @classmethod
    def parse(cls, text: str) -> Optional["Holder"]:
        try:
            body = json.loads(text)
            return cls(str(body["host"]), int(body["pid"]), str(body["started_at"]), body.get("proc_start"),
                       str(body.get("what", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "started_at": self.started_at,
                           "proc_start": self.proc_start, "what": self.what}) + "\n"

    def alive(self) -> Optional[bool]:
        """Whether the holder still runs: None when it is on another host (cannot be told from here)."""
        if self.host != socket.gethostname():
            return None
        return process_alive(self.pid, self.proc_start)

    def __str__(self) -> str:
        what = f"{self.what}, " if self.what else ""
        return f"{what}pid {self.pid} on {self.host} since {self.started_at}"


class JobHeld(Exception):
    """The job's lock is held by another process (``holder``, None when it has not said yet)."""

    def __init__(self, path: Path, holder: Optional[Holder], note: str = ""):
        self.path, self.holder = path, holder
        who = str(holder) if holder is not None else "a run that is just starting"
        super().__init__(f"held by {who}{note}")


def _read(path: Path) -> Optional[Holder]:
    try:
        return Holder.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


class JobLock:
    """The lock of one job; ``acquire`` raises JobHeld when another process holds it."""

    def __init__(self, path: Path, what: str = ""):
        self.path, self.what = Path(path), what
        self.fd: Optional[int] = None
        self.borrowed = False  # held by this process already, or by the launcher that started it
        self.took_over: Optional[Holder] = None  # the stale holder this lock replaced

    @property
    def held_file(self) -> Path:
        return self.path.with_name(self.path.name + ".held")

    def acquire(self, wait: bool = False, on_wait: Optional[Callable[[JobHeld], None]] = None,
                poll_s: float = 1.0) -> "JobLock":
        """Take the lock; with ``wait``, poll until it is free (``on_wait`` is told once who holds it)."""
        key = str(self.path.resolve())
        if key in _HELD or key in os.environ.get(HELD_ENV, "").split(os.pathsep):
            self.borrowed = True
            return self
        told = False
        while True:
            try:
                self._try()
                _HELD[key] = self
                return self
            except JobHeld as held:
                if not wait:
                    raise
                if on_wait is not None and not told:
                    on_wait(held)
                    told = True
                time.sleep(poll_s)

    def _try(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise NLBenchError(f"cannot create the job lock: {exc.strerror or exc}", self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_FLOCK:
                return self._try_exclusive_file()
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise NLBenchError(f"cannot lock: {exc.strerror or exc}", self.path) from None
            raise JobHeld(self.path, _read(self.path), self._inconsistency()) from None
        previous = _read(self.path)
        self.took_over = previous if previous is not None and previous.pid != os.getpid() else None
        self.fd = fd
        self._write(fd)

    def _inconsistency(self) -> str:
        holder = _read(self.path)
        if holder is not None and holder.alive() is False:
            return " (that process has ended, yet the lock is held: by a process it started that still runs?)"
        return ""

    def _write(self, fd: int) -> None:
        data = Holder.me(self.what).to_json().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _try_exclusive_file(self) -> None:
        """The lock where the file system has no flock: a file created with O_EXCL."""
        for _ in range(3):
            try:
                fd = os.open(self.held_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = _read(self.held_file)
                if holder is None or holder.alive() is not False:
                    where = "" if holder is None or holder.alive() else (
                        f" (another host: remove {self.held_file} if that run is gone)")
                    raise JobHeld(self.path, holder, where) from None
                if self._remove_stale(holder):  # stale: its holder no longer runs
                    self.took_over = holder
                continue
            self._write(fd)
            os.close(fd)
            return
        raise JobHeld(self.path, _read(self.held_file))

    def _remove_stale(self, stale: Holder) -> bool:
        """Remove the held file that ``stale`` wrote. False when the file is no longer that one: a
        faster taker already replaced it with its own, which is then put back."""
        aside = self.held_file.with_name(f"{self.held_file.name}.stale-{os.getpid()}")
        try:
            os.rename(self.held_file, aside)  # only one taker wins the rename
        except FileNotFoundError:
            return False
        if _read(aside) == stale:
            os.unlink(aside)
            return True
        with contextlib.suppress(FileExistsError):  # back, unless yet another taker created one
            os.link(aside, self.held_file)
        os.unlink(aside)
        return False

    def release(self) -> None:
        if self.borrowed:
            return
        _HELD.pop(str(self.path.resolve()), None)
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)  # an empty file: released, not stale
            os.close(self.fd)  # closing drops the flock
            self.fd = None
        else:
            holder = _read(self.held_file)
            if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
                with contextlib.suppress(FileNotFoundError):
                    self.held_file.unlink()

    def shared(self) -> "SharedLock":
        """What a child process needs to hold this lock too (see ``adopt``)."""
        return SharedLock(str(self.path), self.fd)

    def __enter__(self) -> "JobLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_of(results_dir: Union[str, Path], key: str) -> Optional[JobHeld]:
    """Who holds job ``key``'s lock right now (a JobHeld), or None when it is free (probed by taking
    and dropping it)."""
    lock = JobLock(lock_path(results_dir, key))
    try:
        lock.acquire()
    except JobHeld as held:
        return held
    lock.release()
    return None


@contextlib.contextmanager
def held_for_children(*locks: JobLock) -> Iterator[None]:
    """Name ``locks`` (after those already named) in the environment of the child processes started in
    this block. It sets this process's environment: one thread at a time."""
    before = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = os.pathsep.join([str(lock.path.resolve()) for lock in locks] + ([before] if before else []))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before


class SharedLock:
    """A held lock on its way to a child process: pickled, its flock'd file travels as a duplicate file
    descriptor (multiprocessing's DupFd, for a forkserver's or spawned child), so the child holds the
    same flock as its launcher (the lock is dropped only when both have closed it)."""

    def __init__(self, path: str, fd: Optional[int]):
        self.path, self.fd = path, fd

    def __reduce__(self):  # only while a multiprocessing child is being started (DupFd needs one)
        from multiprocessing.reduction import DupFd

        return _rebuild_shared, (self.path, None if self.fd is None else DupFd(self.fd))


def _rebuild_shared(path: str, dup: Any) -> SharedLock:
    return SharedLock(path, None if dup is None else dup.detach())


def adopt(shared: SharedLock, what: str) -> JobLock:
    """In the child: hold ``shared`` as this process's own lock (re-entrant here, as if acquired), and
    write this process into the lock file as its holder, so that whoever finds it held names the
    process that runs the job, whether or not its launcher still lives."""
    lock = JobLock(Path(shared.path), what)
    lock.fd = shared.fd
    if lock.fd is not None:
        lock._write(lock.fd)
    else:  # no flock on this file system: the held file names the holder
        with contextlib.suppress(OSError):
            atomic = lock.held_file.with_name(f".{lock.held_file.name}.{os.getpid()}")
            atomic.write_text(Holder.me(what).to_json(), encoding="utf-8")
            os.replace(atomic, lock.held_file)
    _HELD[str(lock.path.resolve())] = lock
    return lock
