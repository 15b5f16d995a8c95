"""What training tells: ``train.log.jsonl`` (one JSON object per line, rank 0 only), the console
line every ``schedule.log_interval`` iterations, and a progress bar when stderr is a terminal.

Train lines hold the means over the interval of the loss terms, the step and data times, the lr
and the peak memory so far; event lines (start, eval, interrupted, end) carry an ``event`` key.

The loss terms arrive as device tensors and stay there until they are read, all at once (one host
synchronisation), at the end of a log interval, before a checkpoint or an evaluation
(``read_every``) and at the end of the run: a GPU is never made to wait for the host in between. A
non-finite loss found then stops the run with an error naming the iteration where it first appeared.
Every line goes to each of the logger's sinks (``LogSink``): the JSON-lines file is one; other
formats of the same lines are others.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch

from benchmark.errors import NLBenchError
from benchmark.io.files import append_json_line, atomic_write_text

LOG_NAME = "train.log.jsonl"
Log = Callable[[str], None]
WINDOW_KEYS = ("loss", "loss_decode", "loss_aux", "time", "data_time")
LossTerms = Dict[str, Union[torch.Tensor, float]]


class LogSink(Protocol):
    """Somewhere the lines of a training log go (rank 0 only)."""

    def write(self, entry: Dict[str, Any]) -> None:
        """One line: a train line (``iteration``, ``lr``, loss terms, times, memory) or an event
        line (``event``: start, eval, interrupted, end)."""

    def close(self) -> None:
        """Training stopped (finished or interrupted); flush what is buffered."""


class JsonLinesSink:
    """``train.log.jsonl``: each line in one O_APPEND write, so a kill never tears a line."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write_text(path, "")  # a fresh log; an unwritable work dir is one clear error

    def write(self, entry: Dict[str, Any]) -> None:
        append_json_line(self.path, entry)

    def close(self) -> None:
        pass


def _host_floats(values: List[Union[torch.Tensor, float]]) -> List[float]:
    """Scalars -> floats; device tensors are stacked and copied once (one synchronisation)."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if len(tensors) < len(values) or len({t.device for t in tensors}) > 1:
        return [float(v) for v in values]
    return torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist()


def hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainLogger:
    """``sinks`` receive every line; with ``enabled`` False (ranks other than 0) nothing is written,
    but the loss terms are still read and checked, at the same iterations on every rank.

    ``read_every``: intervals (checkpoint, evaluation) at whose multiples the loss terms are read even
    between log lines; ``source``: the recipe file, named by the non-finite-loss error."""

    def __init__(self, sinks: Sequence[LogSink], enabled: bool, max_iters: int, start_iter: int,
                 log_interval: int, log: Log, read_every: Sequence[int] = (), source: str = ""):
        self.sinks, self.enabled = list(sinks) if enabled else [], enabled
        self.max_iters, self.log_interval = max_iters, log_interval
        self.read_every, self.source = tuple(read_every), source
        self.pending: List[Tuple[int, LossTerms]] = []  # (iteration done, loss terms not read yet)
        self.bar = self._progress(start_iter) if enabled else None
        self.say: Log = self.bar.write if self.bar is not None else log
        self.window: Dict[str, List[float]] = {k: [] for k in WINDOW_KEYS}

    def _progress(self, start_iter: int):
        if not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=self.max_iters, initial=start_iter, unit="it", dynamic_ncols=True, desc="train")

    def write(self, entry: Dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(entry)

    def event(self, name: str, **fields: Any) -> None:
        self.write({"event": name, **fields, "time": time.time()})

    def step(self, done: int, lr: float, losses: LossTerms, step_time: float, data_time: float,
             peak_gb: float, mem_kind: str) -> None:
        """One finished iteration (loss terms as device tensors or floats); the terms are read when
        ``done`` ends a log interval, precedes a checkpoint or an evaluation, or ends the run, and a
        log line is written at the end of a log interval or of the run."""
        self.pending.append((done, losses))
        self.window["time"].append(step_time)
        self.window["data_time"].append(data_time)
        if self.bar is not None:
            self.bar.update(1)
        line = done % self.log_interval == 0 or done == self.max_iters
        if line or any(done % n == 0 for n in self.read_every):
            self.read_losses(lr)
        if line:
            self._flush(done, lr, peak_gb, mem_kind)

    def read_losses(self, lr: Optional[float] = None) -> None:
        """Bring the pending loss terms to the host in one synchronisation and check them: a
        non-finite loss raises NLBenchError naming the first iteration that had one."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        values = _host_floats([v for _, terms in pending for v in terms.values()])
        keys = list(pending[0][1])
        for row, (done, _) in enumerate(pending):
            terms = dict(zip(keys, values[row * len(keys):(row + 1) * len(keys)]))
            if not np.isfinite(terms["loss"]):
                raise NLBenchError(f"loss is {terms['loss']} at iteration {done}; lower schedule.lr or check the "
                                   "data", self.source or None, "schedule.lr")
            for key, value in terms.items():
                self.window[key].append(value)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.window['loss'][-1]:.4f}", **({"lr": f"{lr:.2e}"} if lr else {}))

    def _flush(self, done: int, lr: float, peak_gb: float, mem_kind: str) -> None:
        entry: Dict[str, Any] = {"iteration": done, "lr": lr}
        entry.update({k: float(np.mean(v)) for k, v in self.window.items() if v})
        entry.update({"peak_mem_gb": peak_gb, "mem_kind": mem_kind})
        self.write(entry)
        if self.bar is None and self.enabled:
            eta = (self.max_iters - done) * entry["time"]
            self.say(f"iter {done}/{self.max_iters}  loss {entry['loss']:.4f}  lr {lr:.3e}  "
                     f"{entry['time']:.3f} s/it (data {entry['data_time']:.3f})  "
                     f"{peak_gb:.2f} GB {mem_kind}  eta {hms(eta)}")
        self.window = {k: [] for k in WINDOW_KEYS}

    def evaluation(self, done: int, metrics: Dict[str, Any]) -> None:
        self.write({"event": "eval", "iteration": done, "aAcc": metrics["aAcc"], "mIoU": metrics["mIoU"],
                    "mAcc": metrics["mAcc"]})
        if self.enabled:
            self.say(f"eval at iter {done}: aAcc {metrics['aAcc']:.2f}  mIoU {metrics['mIoU']:.2f}  "
                     f"mAcc {metrics['mAcc']:.2f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        for sink in self.sinks:
            sink.close()

    def note(self, message: Optional[str]) -> None:
        if self.enabled and message:
            self.say(message)


def last_evaluation(path: Path) -> Optional[Dict[str, Any]]:
    """The newest eval line of a ``train.log.jsonl`` ({iteration, aAcc, mIoU, mAcc}), or None.

    A resumed run that had nothing left to do evaluates nothing; this is what it last gave."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "eval":
            return {k: entry.get(k) for k in ("iteration", "aAcc", "mIoU", "mAcc")}
    return None
