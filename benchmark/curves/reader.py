"""Training logs -> one typed ``Curve``.

Three formats, one JSON object per line (docs/CURVES.md spells out each one and its traps):
  mmseg0x   MMSeg 0.x ``*.log.json`` (mmcv's TextLoggerHook): an optional meta line, ``mode`` train/val
            lines; a val line's ``iter`` counts validation images: its training iteration is the
            evaluation iteration its place in the file points to (``eval_iteration``: before mmcv
            1.3.11 there is no train line at an evaluation iteration); metrics as fractions; ``lr``
            may be a dict of parameter groups. nlbench's own ``train.log.json`` is in this form.
  mmengine  MMSeg 1.x ``scalars.json``: ``step`` is the training iteration of every line; metrics in
            percent.
  nlbench   nlbench's ``train.log.jsonl``: ``iteration`` on train lines, ``event`` lines (start, eval,
            interrupted, diverged, end); a line with an mIoU is an evaluation, as in the other two.

Every evaluation comes out in percent. The files of a resumed run merge by iteration, the later file
(the one whose first iteration is later) winning. A line that cannot be used is skipped with a
warning naming the file and the line; a file that cannot be read at all is one NLBenchError.

Every reader of a training log goes through this module: the curve checks and the guard, the plots
(``nlbench plots``, the HTML report's row pages) and ``nlbench status`` (``latest_iteration``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from benchmark.errors import NLBenchError
from benchmark.io.files import read_tail_lines

PathLike = Union[str, Path]
FORMATS = ("mmseg0x", "mmengine", "nlbench")
METRIC_KEYS = ("aAcc", "mIoU", "mAcc")
EVAL_KEYS = ("mIoU", "aAcc")  # a line with either is an evaluation, whatever else it says
MMENGINE_WINDOW = 10  # mmengine's LogProcessor(window_size=10): 1.x train values are means of 10 iterations
# Keys of a train line that are bookkeeping, not logged quantities.
_BOOKKEEPING = {"mode", "epoch", "iter", "iteration", "step", "lr", "base_lr", "memory", "time", "data_time",
                "peak_mem_gb", "mem_kind", "event"}


@dataclass(frozen=True)
class TrainPoint:
    """One train line: the means over the log interval that ends at ``iteration`` (1-based)."""

    iteration: int
    lr: Optional[float]  # the lr iteration ``iteration`` ran with (first parameter group)
    loss: Optional[float]  # total loss (may be non-finite)
    terms: Mapping[str, float] = field(default_factory=dict)  # the other logged numbers: loss terms, accuracies
    memory_mib: Optional[float] = None
    time_s: Optional[float] = None
    data_time_s: Optional[float] = None
    # Iterations the values average when fewer than the log interval: mmengine's LogProcessor keeps a
    # window of the last 10 (MMSeg 1.x), whatever the interval. None: the whole interval.
    span: Optional[int] = None


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation, after training iteration ``iteration``; metrics in percent."""

    iteration: int
    mIoU: float
    aAcc: Optional[float] = None
    mAcc: Optional[float] = None


@dataclass(frozen=True)
class Curve:
    format: str  # one of FORMATS ("a+b" when merged files differ)
    sources: Tuple[str, ...]
    train: Tuple[TrainPoint, ...]  # sorted by iteration, one per iteration
    evals: Tuple[EvalPoint, ...]
    max_iters: Optional[int] = None  # from the log's meta / start line, when it says
    effective_batch: Optional[int] = None  # images per iteration over all GPUs, when the log says
    warnings: Tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.sources[0] if len(self.sources) == 1 else f"{self.sources[0]} (+{len(self.sources) - 1} more)"

    @property
    def last_iteration(self) -> Optional[int]:
        its = [p.iteration for p in self.train] + [e.iteration for e in self.evals]
        return max(its) if its else None

    @property
    def peak_memory_mib(self) -> Optional[float]:
        values = [p.memory_mib for p in self.train if p.memory_mib is not None]
        return max(values) if values else None


# ----------------------------------------------------------------------------- values


def _number(value: Any) -> Optional[float]:
    """A JSON number as float (NaN and Infinity included: mmcv writes them); anything else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _count(value: Any) -> Optional[int]:
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number) or number < 0:
        return None
    return int(number)


def _lr(value: Any) -> Optional[float]:
    """``lr`` as logged: a number, or a dict of parameter group -> number (the first group is taken)."""
    if isinstance(value, dict):
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = value[0] if value else None
    return _number(value)


def _percent(entry: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """aAcc/mIoU/mAcc in percent: MMSeg 0.x writes fractions, 1.x and nlbench percent. A line whose
    aAcc (or, without one, its largest metric) is at most 1 holds fractions: an accuracy of 1% or less
    over a whole validation split does not happen."""
    values = {k: _number(entry.get(k)) for k in METRIC_KEYS}
    present = [v for v in values.values() if v is not None and math.isfinite(v)]
    probe = values["aAcc"] if values["aAcc"] is not None else (max(present) if present else None)
    scale = 100.0 if probe is not None and probe <= 1.0 else 1.0
    # Rounded so that a fraction written to 4 decimals reads back as the percent printed (0.0539 -> 5.39).
    return {k: None if v is None else (round(v * scale, 6) if math.isfinite(v) else v) for k, v in values.items()}


def _terms(entry: Dict[str, Any]) -> Dict[str, float]:
    out = {}
    for key, value in entry.items():
        number = _number(value)
        if key not in _BOOKKEEPING and key != "loss" and number is not None:
            out[key] = number
    return out


def _evaluation(entry: Dict[str, Any]) -> bool:
    return any(k in entry for k in EVAL_KEYS)


def _train_point(entry: Dict[str, Any], iteration: int, memory_mib: Optional[float],
                 span: Optional[int] = None) -> TrainPoint:
    return TrainPoint(iteration=iteration, lr=_lr(entry.get("lr")), loss=_number(entry.get("loss")),
                      terms=_terms(entry), memory_mib=memory_mib, time_s=_number(entry.get("time")),
                      data_time_s=_number(entry.get("data_time")), span=span)


# ----------------------------------------------------------------------------- one file


class CurveBuilder:
    """Turns log lines (parsed JSON objects) into points; later lines win for the same iteration.

    Used for whole files (``read_curve``) and line by line while a run trains (the guard). MMSeg 0.x
    val lines are placed at their training iteration by ``finish`` (``eval_iteration``), once the
    file's meta line and the train lines around them are known; ``eval_interval`` and ``max_iters``
    are the schedule to use when the log does not state its own."""

    def __init__(self, source: str, eval_interval: Optional[int] = None, max_iters: Optional[int] = None):
        self.source = source
        self.schedule = (eval_interval, max_iters)
        self.formats: List[str] = []
        self.train: Dict[int, TrainPoint] = {}
        self.evals: Dict[int, EvalPoint] = {}
        self.meta: Dict[str, Any] = {}
        self.warnings: List[str] = []
        self._order: List[int] = []  # 0.x train iterations in file order
        # 0.x val lines: (entry, where, (meta lines before, train lines before)): the slot between two lines
        self._pending: List[Tuple[Dict[str, Any], str, Tuple[int, int]]] = []
        self._metas = 0  # meta lines read: a resumed run appending to its file writes one more
        self.latest: Optional[int] = None  # the iteration the newest line names (train, eval or event line)

    @property
    def first_iteration(self) -> Optional[int]:
        its = list(self.train) + list(self.evals)
        return min(its) if its else None

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{self.source}:{where}: skipped: {message}")

    def add(self, entry: Any, where: str = "") -> None:
        """One line; ``where`` ("line N") names it in warnings."""
        if not isinstance(entry, dict):
            self.warn(where, f"expected a JSON object, got {type(entry).__name__}")
        elif "event" in entry or "iteration" in entry:
            self._nlbench(entry, where)
        elif "step" in entry:
            self._mmengine(entry, where)
        elif "mode" in entry or "iter" in entry:
            self._mmseg0x(entry, where)
        elif any(k in entry for k in METRIC_KEYS) or "loss" in entry:
            self.warn(where, "no iteration (expected 'iter', 'step' or 'iteration')")
        else:  # MMSeg 0.x's meta line: env_info, seed, exp_name, config, ...
            self._format("mmseg0x")
            self.meta.update(entry)
            self._metas += 1

    def _format(self, name: str) -> None:
        if name not in self.formats:
            self.formats.append(name)

    def _put_train(self, point: TrainPoint) -> None:
        self.train[point.iteration] = point

    def _put_eval(self, entry: Dict[str, Any], iteration: int, where: str) -> None:
        metrics = _percent(entry)
        if metrics["mIoU"] is None:
            self.warn(where, "evaluation line without a numeric mIoU")
            return
        self.evals[iteration] = EvalPoint(iteration, metrics["mIoU"], metrics["aAcc"], metrics["mAcc"])

    def _mmseg0x(self, entry: Dict[str, Any], where: str) -> None:
        self._format("mmseg0x")
        if _evaluation(entry):  # a val line, whatever its mode says
            self._pending.append((entry, where, (self._metas, len(self._order))))
            return
        iteration = _count(entry.get("iter"))
        if iteration is None or iteration == 0:
            self.warn(where, f"'iter' is {entry.get('iter')!r}, expected a positive integer")
            return
        self.latest = iteration
        memory = _number(entry.get("memory"))
        self._put_train(_train_point(entry, iteration, memory))
        self._order.append(iteration)

    def finish(self) -> "CurveBuilder":
        """Place the 0.x val lines read so far at their training iterations (``eval_iteration``). A val
        line right after another (no train line between them: an evaluation at a max_iters that is no
        multiple of the interval, within one log interval of the one before) is the next evaluation."""
        interval = _meta_interval(self.meta) or self.schedule[0]
        max_iters = _meta_int(self.meta, "max_iters", r"max_iters\s*=\s*(\d+)") or self.schedule[1]
        gaps = [b - a for a, b in zip(self._order, self._order[1:]) if b > a]
        log_interval = max(set(gaps), key=gaps.count) if gaps else None
        around = [(self._order[k - 1] if k else None, self._order[k] if k < len(self._order) else None)
                  for _, _, (_, k) in self._pending]
        skipped = log_interval is not None and any(
            before is not None and after is not None and after - before == 2 * log_interval for before, after in around)
        previous: Tuple[Optional[Tuple[int, int]], Optional[int]] = (None, None)  # (slot, iteration)
        for (entry, where, slot), (before, after) in zip(self._pending, around):
            iteration = eval_iteration(before, after, interval, max_iters, log_interval if skipped else None)
            if slot == previous[0] and previous[1] is not None and interval:
                iteration = min(previous[1] + interval, max_iters) if max_iters else previous[1] + interval
            previous = (slot, iteration)
            if iteration is None:
                self.warn(where, "evaluation line whose training iteration is unknown (its 'iter' counts validation "
                                 "images; no train line before it and no evaluation interval)")
            else:
                self._put_eval(entry, iteration, where)
        self._pending = []
        return self

    def _mmengine(self, entry: Dict[str, Any], where: str) -> None:
        self._format("mmengine")
        iteration = _count(entry.get("step"))
        self.latest = self.latest if iteration is None else iteration
        if iteration is None or iteration == 0:
            self.warn(where, f"'step' is {entry.get('step')!r}, expected a positive integer")
        elif _evaluation(entry):
            self._put_eval(entry, iteration, where)
        elif "loss" in entry or "lr" in entry:
            self._put_train(_train_point(entry, iteration, _number(entry.get("memory")), MMENGINE_WINDOW))

    def _nlbench(self, entry: Dict[str, Any], where: str) -> None:
        self._format("nlbench")
        event = entry.get("event")
        iteration = _count(entry.get("iteration"))
        self.latest = self.latest if iteration is None else iteration  # a start line's 0 included
        if event == "start":
            self.meta.update({k: entry[k] for k in ("max_iters", "effective_batch", "recipe", "profile")
                              if k in entry})
            return
        if event is not None and event != "eval":
            return  # interrupted, diverged, end: nothing to plot
        if iteration is None or iteration == 0:
            self.warn(where, f"'iteration' is {entry.get('iteration')!r}, expected a positive integer")
        elif event == "eval" or _evaluation(entry):
            self._put_eval(entry, iteration, where)
        else:
            gb = _number(entry.get("peak_mem_gb"))
            self._put_train(_train_point(entry, iteration, None if gb is None else gb * 1024.0))


# ----------------------------------------------------------------------------- where an evaluation sits


def eval_iteration(before: Optional[int], after: Optional[int], interval: Optional[int],
                   max_iters: Optional[int], skipped_interval: Optional[int] = None) -> Optional[int]:
    """The training iteration of a 0.x val line, from the train lines logged just before and after it
    in its file (docs/CURVES.md). Before mmcv 1.3.11 (the published 2020 logs) the train line of the
    evaluation iteration is missing: the val line follows 3950 and 4050 comes next; from 1.3.11 on the
    train line of 4000 comes first. Either way the evaluation belongs to a multiple of the evaluation
    interval: the first one at or after the train line before it (the end of the schedule at most),
    or, in a resumed file that begins with a val line, the last one before the train line after it.
    Without an interval, a log whose train lines skip one log interval around its val lines
    (``skipped_interval``: that interval) puts them at the skipped line; else at the train line before."""
    if interval:
        if before is not None:
            iteration = -(-before // interval) * interval
            return min(iteration, max_iters) if max_iters else iteration
        if after is not None and (after - 1) // interval > 0:
            return (after - 1) // interval * interval
        return None
    if skipped_interval:
        if before is not None:
            return before + skipped_interval
        return after - skipped_interval if after is not None and after > skipped_interval else None
    return before


# ----------------------------------------------------------------------------- meta


def _meta_int(meta: Dict[str, Any], key: str, *patterns: str) -> Optional[int]:
    """An integer from the meta line: its own key (nlbench writes them), else the config text."""
    value = _count(meta.get(key))
    if value is not None:
        return value
    for pattern in patterns:
        match = re.search(pattern, str(meta.get("config") or ""), flags=re.MULTILINE)
        if match:
            return int(match.group(1))
    return None


def _meta_interval(meta: Dict[str, Any]) -> Optional[int]:
    """The evaluation interval a 0.x log states: MMSeg's config text (``evaluation = dict(interval=4000,
    ...)``), or nlbench's meta key / recipe YAML (``eval_interval: 30``)."""
    value = _meta_int(meta, "eval_interval", r"evaluation\s*=\s*dict\([^)]*?\binterval\s*=\s*(\d+)",
                      r"^\s*eval_interval:\s*(\d+)\s*$")
    return value or None


def _gpu_count(meta: Dict[str, Any]) -> Optional[int]:
    """GPUs of a 0.x run from its env_info ("GPU 0,1,2,3: Tesla V100-SXM2-32GB")."""
    ids = re.findall(r"^GPU ([\d,]+):", str(meta.get("env_info") or ""), flags=re.MULTILINE)
    return sum(len(group.split(",")) for group in ids) or None


def _effective_batch(meta: Dict[str, Any]) -> Optional[int]:
    explicit = _count(meta.get("effective_batch"))
    if explicit is not None:
        return explicit
    per_gpu, gpus = _meta_int(meta, "samples_per_gpu", r"samples_per_gpu\s*=\s*(\d+)"), _gpu_count(meta)
    return per_gpu * gpus if per_gpu and gpus else None


# ----------------------------------------------------------------------------- files


def _read_lines(path: Path) -> List[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise NLBenchError("is a folder, expected a training log file", path) from None
    except OSError as exc:
        raise NLBenchError(f"cannot read training log: {exc.strerror or exc}", path) from None
    except UnicodeDecodeError as exc:
        raise NLBenchError(f"not UTF-8 text (byte {exc.start}): expected a JSON-lines training log", path) from None
    return text.splitlines()


def _add_lines(builder: CurveBuilder, lines: Iterable[str]) -> CurveBuilder:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            builder.warn(f"line {number}", f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        builder.add(entry, f"line {number}")
    return builder


def read_file(path: PathLike, eval_interval: Optional[int] = None, max_iters: Optional[int] = None) -> CurveBuilder:
    """One log file's points; an unreadable file, or one with no usable line, is an NLBenchError.
    ``eval_interval`` and ``max_iters``: the schedule, for a 0.x log that does not state its own."""
    path = Path(path)
    builder = _add_lines(CurveBuilder(str(path), eval_interval, max_iters), _read_lines(path))
    builder.finish()
    if not builder.train and not builder.evals:
        raise NLBenchError("no train or evaluation line: expected an MMSeg *.log.json / scalars.json or an "
                           "nlbench train.log.jsonl" + (f" ({len(builder.warnings)} line(s) unusable)"
                                                        if builder.warnings else ""), path)
    return builder


def merge(builders: Sequence[CurveBuilder]) -> Curve:
    """The files of one run as one curve: ordered by their first iteration (a resumed run's file
    continues the count), later files winning for an iteration both logged."""
    ordered = sorted((b.finish() for b in builders), key=lambda b: (b.first_iteration or 0, b.source))
    train: Dict[int, TrainPoint] = {}
    evals: Dict[int, EvalPoint] = {}
    meta: Dict[str, Any] = {}
    formats: List[str] = []
    for b in ordered:
        train.update(b.train)
        evals.update(b.evals)
        meta.update(b.meta)
        formats += [f for f in b.formats if f not in formats]
    return Curve(format="+".join(formats) or "nlbench", sources=tuple(b.source for b in ordered),
                 train=tuple(train[k] for k in sorted(train)), evals=tuple(evals[k] for k in sorted(evals)),
                 max_iters=_meta_int(meta, "max_iters", r"max_iters\s*=\s*(\d+)"),
                 effective_batch=_effective_batch(meta),
                 warnings=tuple(w for b in ordered for w in b.warnings))


def log_files(path: PathLike) -> List[Path]:
    """A file is itself; a folder gives its MMSeg 0.x logs (``*.log.json``, a resumed run's several
    files), else its 1.x ``scalars.json`` files, else nlbench's ``train.log.jsonl``."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    for pattern in ("*.log.json", "**/vis_data/scalars.json", "**/scalars.json", "*.jsonl"):
        found = sorted(path.glob(pattern))
        if found:
            return found
    raise NLBenchError("no training log here (expected *.log.json, scalars.json or train.log.jsonl)", path)


def read_curve(paths: Union[PathLike, Iterable[PathLike]], eval_interval: Optional[int] = None,
               max_iters: Optional[int] = None) -> Curve:
    """One run's curve from a log file, a folder of them, or several files (a resumed run).
    ``eval_interval`` / ``max_iters``: the schedule the run was meant to have, used where a 0.x log
    does not state its own evaluation interval (``eval_iteration``)."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = [f for item in items for f in log_files(item)]
    if not files:
        raise NLBenchError("no training log given")
    return merge([read_file(f, eval_interval, max_iters) for f in files])


def latest_iteration(path: PathLike) -> Optional[int]:
    """The iteration the newest line of a training log names (a train, evaluation or event line), from
    the file's last 64 KiB (whose first line may be cut: skipped); None when the file is missing or
    unreadable or names none. ``nlbench status`` shows it beside the checkpoints."""
    return _add_lines(CurveBuilder(str(path)), read_tail_lines(path)).latest
