"""TensorBoard scalars of a training run: a LogSink writing event files into the run's work dir.

Every work dir (``RESULTS/work/<profile>/<recipe>/seed<k>``) is then one TensorBoard run, so
``tensorboard --logdir results/work`` shows them all side by side. The scalars are those of the
JSON-lines log: per log interval ``train/loss``, ``train/loss_decode``, ``train/loss_aux``,
``train/lr``, ``train/peak_mem_gb``, ``train/time`` and ``train/data_time``; per evaluation
``val/aAcc``, ``val/mIoU`` and ``val/mAcc``; the step is the iteration.

A fresh run removes the event files of an earlier run in the same work dir (as the JSON-lines log
starts empty). A resumed run purges, from the reader's view, the steps after its checkpoint
(TensorBoard's purge step), since those iterations are run again.

The ``tensorboard`` package is optional (``pip install 'nlbench[tensorboard]'``); without it training
runs as before and says once per process how to get the scalars.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from benchmark.errors import NLBenchError

EVENT_GLOB = "events.out.tfevents.*"
TRAIN_KEYS = ("loss", "loss_decode", "loss_aux", "lr", "peak_mem_gb", "time", "data_time")
EVAL_KEYS = ("aAcc", "mIoU", "mAcc")
MISSING = ("TensorBoard scalars are not written: the tensorboard package is not installed "
           "(pip install 'nlbench[tensorboard]', or `make install`)")
_said_missing = False
_hook_installed = False


def tensorboard_available() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


def tensorboard_sink(work_dir: Path, log: Callable[[str], None]) -> Optional["TensorBoardSink"]:
    """A sink for ``work_dir``, or None (said once per process) when tensorboard is not installed."""
    global _said_missing
    if tensorboard_available():
        return TensorBoardSink(work_dir)
    if not _said_missing:
        _said_missing = True
        log(f"note: {MISSING}")
    return None


def _quiet_writer_thread_errors() -> None:
    """TensorBoard's writer thread prints a traceback when a write fails (a full disk) as it dies;
    the main thread then raises the same error, as one NLBenchError naming the work dir, so that
    print is only noise. Every other thread's exceptions are printed as before."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = threading.excepthook

    def hook(args: "threading.ExceptHookArgs") -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    threading.excepthook = hook


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TensorBoardSink:
    """Opens its writer at the log's ``start`` line, which says where training starts."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.writer = None
        self.closed = False

    def _open(self, clear: bool, purge_step: Optional[int]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.work_dir.mkdir(parents=True, exist_ok=True)
        if clear:
            for old in self.work_dir.glob(EVENT_GLOB):
                old.unlink()
        _quiet_writer_thread_errors()
        self.writer = SummaryWriter(log_dir=str(self.work_dir), purge_step=purge_step)

    def write(self, entry: Dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._write(entry)
        except OSError as exc:  # a full disk: the run fails with one message, and the writer is let go
            self.closed = True
            writer, self.writer = self.writer, None
            with contextlib.suppress(OSError):
                if writer is not None:
                    writer.close()
            raise NLBenchError(f"cannot write the TensorBoard scalars: {exc.strerror or exc}", self.work_dir) from None

    def _write(self, entry: Dict[str, Any]) -> None:
        event = entry.get("event")
        if event == "start":
            start = int(entry.get("iteration") or 0)
            # Resumed: the steps after the checkpoint are run again, so a reader drops their older values.
            resumed = bool(entry.get("resumed"))
            self._open(clear=not resumed, purge_step=start + 1 if resumed else None)
            return
        if event not in (None, "eval") or not _number(entry.get("iteration")):
            return
        if self.writer is None:
            self._open(clear=False, purge_step=None)  # no start line: add to what is there
        prefix, keys = ("val", EVAL_KEYS) if event == "eval" else ("train", TRAIN_KEYS)
        for key in keys:
            if _number(entry.get(key)):
                self.writer.add_scalar(f"{prefix}/{key}", float(entry[key]), int(entry["iteration"]))
        self.writer.flush()  # one line per log interval: a killed run keeps what it logged

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.closed = True
