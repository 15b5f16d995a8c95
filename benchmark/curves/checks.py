"""A run's curves against a reference curve: the checks in the order they can fire, and a verdict.

  schedule   the lr at every iteration both logs have is the same to the reference's printed
             precision (5 decimals); the reference's max_iters, when its log says, is the run's
  batch      the effective batch of the run and of the reference (stated beside every verdict)
  loss       after the warm-up, the run's loss averaged over the coarser of the two log intervals
             stays within a relative band around the reference's; a non-finite loss is divergence
  mIoU       at each reference eval point the run's mIoU is not below the reference minus a margin
             that goes linearly from ``margin`` (first eval point) to ``final_margin`` (last)

Verdicts: "on track"; "drifting" (a check out of its band); "diverged" (mIoU below the margin at
``patience`` consecutive eval points, or a non-finite loss). docs/CURVES.md has the reasons.
Several seeds are judged by their mean at each point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmark.curves.reader import Curve

ON_TRACK, DRIFTING, DIVERGED = "on track", "drifting", "diverged"
VERDICTS = (ON_TRACK, DRIFTING, DIVERGED)
LR_DECIMALS = 5  # mmcv's TextLoggerHook rounds every float it writes to 5 decimals


@dataclass(frozen=True)
class Settings:
    margin: float = 3.0  # mIoU points below the reference allowed at the first eval point
    final_margin: float = 0.5  # ... and at the last one (compare's default tolerance)
    patience: int = 2  # consecutive eval points below the margin that make a run diverged
    loss_band: float = 0.15  # relative
    warmup: float = 0.1  # fraction of max_iters before the loss is compared


@dataclass(frozen=True)
class ScheduleCheck:
    compared: int  # iterations with an lr in both logs
    first_iteration: Optional[int]
    mismatch: Optional[Tuple[int, float, float]] = None  # (iteration, run lr, reference lr) of the first difference
    max_iters: Tuple[Optional[int], Optional[int]] = (None, None)  # (run, reference)

    @property
    def length_differs(self) -> bool:
        run, ref = self.max_iters
        return run is not None and ref is not None and run != ref

    @property
    def ok(self) -> bool:
        return self.mismatch is None and not self.length_differs

    def describe(self) -> str:
        run, ref = self.max_iters
        parts = []
        if self.length_differs:
            parts.append(f"the reference log is of a {ref}-iteration schedule, this run's has {run}")
        if self.mismatch is not None:
            it, got, want = self.mismatch
            parts.append(f"lr at iteration {it} is {got:.{LR_DECIMALS}f}, the reference says "
                         f"{want:.{LR_DECIMALS}f} (check schedule.lr, max_iters and power)")
        if parts:
            return "DIFFERS: " + "; ".join(parts)
        if not self.compared:
            return "not checked: no iteration logged by both"
        return (f"ok: lr equal to {LR_DECIMALS} decimals at all {self.compared} common logged iterations "
                f"(first: {self.first_iteration})")


@dataclass(frozen=True)
class LossCheck:
    compared: int  # windows compared after the warm-up
    band: float
    worst: Optional[Tuple[int, float, float]] = None  # (iteration, run, reference) of the largest deviation
    outside: Tuple[int, ...] = ()  # iterations of the windows outside the band
    failed_at: Optional[int] = None  # where ``patience`` consecutive windows were outside
    nonfinite: Optional[int] = None  # first iteration with a loss that is not finite

    @property
    def ok(self) -> bool:
        return self.failed_at is None and self.nonfinite is None

    def describe(self) -> str:
        if self.nonfinite is not None:
            return f"DIVERGED: the loss is not finite at iteration {self.nonfinite}"
        if not self.compared:
            return "not checked: no common window after the warm-up"
        it, got, want = self.worst or (0, 0.0, 0.0)
        deviation = round(relative(got, want), 3) + 0.0  # no "-0.0%"
        worst = f"largest deviation {deviation:+.1%} at iteration {it} ({got:.4f} vs {want:.4f})"
        if self.failed_at is not None:
            return (f"OUT OF BAND from iteration {self.failed_at}: {len(self.outside)} of {self.compared} windows "
                    f"beyond ±{self.band:.0%}; {worst}")
        extra = f"; {len(self.outside)} single window(s) beyond it" if self.outside else ""
        return f"ok: {self.compared} windows within ±{self.band:.0%}{extra}; {worst}"


@dataclass(frozen=True)
class EvalRow:
    iteration: int
    published: float
    seeds: Mapping[str, float]
    mean: float
    delta: float
    margin: float
    below: bool
    verdict: str  # the verdict as it stood at this eval point


@dataclass(frozen=True)
class Assessment:
    verdict: str
    schedule: ScheduleCheck
    loss: LossCheck
    evals: Tuple[EvalRow, ...]
    effective_batch: Optional[int]
    published_batch: Optional[int]
    diverged_at: Optional[int] = None
    reasons: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def batch_note(self) -> str:
        run, ref = self.effective_batch, self.published_batch
        if run is None or ref is None or run == ref:
            return ""
        return f"effective batch {run}, published {ref}"

    def summary(self) -> str:
        """One line: the verdict, what made it, and the batch note."""
        text = self.verdict + (f": {'; '.join(self.reasons)}" if self.reasons else "")
        return text + (f" [{self.batch_note}]" if self.batch_note else "")

    def to_dict(self) -> Dict[str, Any]:
        body = asdict(self)
        body["batch_note"] = self.batch_note
        body["schedule"]["ok"], body["loss"]["ok"] = self.schedule.ok, self.loss.ok
        return body


def relative(got: float, want: float) -> float:
    return (got - want) / abs(want) if want else (0.0 if got == want else math.inf)


# ----------------------------------------------------------------------------- schedule


def check_schedule(runs: Sequence[Curve], reference: Curve, max_iters: Optional[int]) -> ScheduleCheck:
    ref_lr = {p.iteration: p.lr for p in reference.train if p.lr is not None}
    common = sorted({p.iteration for run in runs for p in run.train if p.lr is not None} & set(ref_lr))
    mismatch = None
    for run in runs:
        for p in run.train:
            want = ref_lr.get(p.iteration)
            if p.lr is None or want is None:
                continue
            if round(p.lr, LR_DECIMALS) != round(want, LR_DECIMALS):
                if mismatch is None or p.iteration < mismatch[0]:
                    mismatch = (p.iteration, p.lr, want)
                break
    return ScheduleCheck(len(common), common[0] if common else None, mismatch, (max_iters, reference.max_iters))


# ----------------------------------------------------------------------------- loss


def _mean_over_seeds(runs: Sequence[Curve]) -> List[Tuple[int, float]]:
    by_it: Dict[int, List[float]] = {}
    for run in runs:
        for p in run.train:
            if p.loss is not None:
                by_it.setdefault(p.iteration, []).append(p.loss)
    return [(it, sum(v) / len(v)) for it, v in sorted(by_it.items())]


def _windowed(fine: List[Tuple[int, float]], coarse: List[Tuple[int, float]]) -> List[Tuple[int, float, float]]:
    """(iteration, coarse value, mean of the fine points in the coarse window): each point of a log is
    the mean over the interval that ends at it, so a fine point weighs as many iterations as it spans."""
    out: List[Tuple[int, float, float]] = []
    prev = last = i = 0
    for it, value in coarse:
        total = weight = 0.0
        while i < len(fine) and fine[i][0] <= it:
            f_it, f_value = fine[i]
            if f_it > prev:
                total += f_value * (f_it - last)
                weight += f_it - last
            last, i = f_it, i + 1
        if weight:
            out.append((it, value, total / weight))
        prev = it
    return out


def _spacing(points: List[Tuple[int, float]]) -> float:
    if len(points) < 2:
        return math.inf
    return (points[-1][0] - points[0][0]) / (len(points) - 1)


def check_loss(runs: Sequence[Curve], reference: Curve, max_iters: Optional[int], settings: Settings) -> LossCheck:
    nonfinite = min((p.iteration for run in runs for p in run.train if p.loss is not None
                     and not math.isfinite(p.loss)), default=None)
    run = [(it, v) for it, v in _mean_over_seeds(runs) if math.isfinite(v)]
    ref = [(p.iteration, p.loss) for p in reference.train if p.loss is not None and math.isfinite(p.loss)]
    start = settings.warmup * (max_iters or reference.max_iters or reference.last_iteration or 0)
    if _spacing(run) >= _spacing(ref):
        pairs = [(it, got, want) for it, got, want in _windowed(ref, run)]
    else:
        pairs = [(it, got, want) for it, want, got in _windowed(run, ref)]
    pairs = [p for p in pairs if p[0] > start]
    outside = [p for p in pairs if abs(relative(p[1], p[2])) > settings.loss_band]
    return LossCheck(len(pairs), settings.loss_band,
                     max(pairs, key=lambda p: abs(relative(p[1], p[2])), default=None),
                     tuple(p[0] for p in outside), _streak_start([p[0] for p in pairs], {p[0] for p in outside},
                                                                 settings.patience), nonfinite)


def _streak_start(order: Sequence[int], bad: set, patience: int) -> Optional[int]:
    """The iteration at which ``patience`` consecutive entries of ``order`` were bad (None: never)."""
    run = 0
    for it in order:
        run = run + 1 if it in bad else 0
        if run >= patience:
            return it
    return None


# ----------------------------------------------------------------------------- mIoU and the verdict


def margin_at(index: int, count: int, settings: Settings) -> float:
    if count <= 1:
        return settings.margin
    return settings.margin + (settings.final_margin - settings.margin) * index / (count - 1)


def _eval_rows(runs: Mapping[str, Curve], reference: Curve, settings: Settings) -> List[EvalRow]:
    rows = []
    points = list(reference.evals)
    for index, ref in enumerate(points):
        seeds = {name: e.mIoU for name, run in runs.items() for e in run.evals if e.iteration == ref.iteration}
        if not seeds:
            continue
        mean = sum(seeds.values()) / len(seeds)
        margin = margin_at(index, len(points), settings)
        rows.append(EvalRow(ref.iteration, ref.mIoU, seeds, mean, mean - ref.mIoU, margin,
                            not mean >= ref.mIoU - margin, ""))
    return rows


def _verdict_until(iteration: float, schedule: ScheduleCheck, loss: LossCheck, rows: Sequence[EvalRow],
                   patience: int) -> Tuple[str, List[str], Optional[int]]:
    """The verdict counting what the logs held up to ``iteration``: (verdict, reasons, diverged at)."""
    seen = [r for r in rows if r.iteration <= iteration]
    streak_at = _streak_start([r.iteration for r in seen], {r.iteration for r in seen if r.below}, patience)
    reasons: List[str] = []
    if loss.nonfinite is not None and loss.nonfinite <= iteration:
        return DIVERGED, [f"loss not finite at iteration {loss.nonfinite}"], loss.nonfinite
    if streak_at is not None:
        row = next(r for r in seen if r.iteration == streak_at)
        return DIVERGED, [f"mIoU below the margin at {patience} consecutive eval points (at iter {row.iteration}: "
                          f"{row.mean:.2f}, published {row.published:.2f}, margin {row.margin:.2f})"], streak_at
    if schedule.length_differs or (schedule.mismatch is not None and schedule.mismatch[0] <= iteration):
        reasons.append("schedule differs")
    if loss.failed_at is not None and loss.failed_at <= iteration:
        reasons.append(f"loss out of its ±{loss.band:.0%} band from iteration {loss.failed_at}")
    below = [r for r in seen if r.below]
    if below:
        reasons.append(f"mIoU below the margin at iter {below[-1].iteration} ({below[-1].mean:.2f} vs "
                       f"{below[-1].published:.2f} - {below[-1].margin:.2f})")
    return (DRIFTING if reasons else ON_TRACK), reasons, None


def assess(runs: Mapping[str, Curve], reference: Curve, settings: Settings = Settings(),
           max_iters: Optional[int] = None, published_batch: Optional[int] = None) -> Assessment:
    """Every check of ``runs`` (seed label -> curve) against ``reference``, and the verdict.

    ``max_iters`` is the run's schedule length; ``published_batch`` the reference run's effective
    batch when its log does not say (the recipe's published one)."""
    curves = list(runs.values())
    schedule = check_schedule(curves, reference, max_iters)
    loss = check_loss(curves, reference, max_iters, settings)
    rows = _eval_rows(runs, reference, settings)
    rows = [EvalRow(**{**asdict(r), "verdict": _verdict_until(r.iteration, schedule, loss, rows,
                                                              settings.patience)[0]}) for r in rows]
    verdict, reasons, at = _verdict_until(math.inf, schedule, loss, rows, settings.patience)
    batches = {c.effective_batch for c in curves if c.effective_batch is not None}
    batch = batches.pop() if len(batches) == 1 else None
    return Assessment(verdict, schedule, loss, tuple(rows), batch,
                      reference.effective_batch or published_batch, at, tuple(reasons))


def settings_from(guard: Any, final_margin: Optional[float] = None) -> Settings:
    """Settings from a recipe's ``guard`` section; ``final_margin`` (compare's tolerance) overrides its own."""
    return Settings(margin=guard.margin, final_margin=guard.final_margin if final_margin is None else final_margin,
                    patience=guard.patience, loss_band=guard.loss_band, warmup=guard.warmup)
