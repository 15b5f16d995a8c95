"""A run's curves against a reference curve: the checks in the order they can fire, and a verdict.

  schedule   the lr at every iteration both logs have is the same to the reference's printed
             precision (5 decimals); the reference's max_iters, when its log says, is the run's
  batch      the effective batch of the run and of the reference (stated beside every verdict)
  loss       after the warm-up, the run's loss averaged over the coarser of the two log intervals
             against the reference's: a systematic band plus the noise of both logs
  mIoU       at each reference eval point the run's mIoU against the reference's, with margins from
             a noise model of the seed-to-seed spread (``eval_margins``)

Verdicts: "on track"; "drifting" (a check out of its band); "diverged" (what a run as good as the
reference shows with probability at most ``false_stop`` over its whole schedule: mIoU below the stop
margin at ``patience`` consecutive eval points, the loss above its stop threshold, an lr that
differs beyond the printed rounding, or a non-finite loss). docs/CURVES.md has the noise model and
the reasons. Several seeds are judged by their mean at each point.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmark.curves.reader import Curve
from benchmark.stats import SEED_STD_MIOU, seed_stats

ON_TRACK, DRIFTING, DIVERGED = "on track", "drifting", "diverged"
VERDICTS = (ON_TRACK, DRIFTING, DIVERGED)
# What can make a run diverged: a train line decides the first three, an evaluation the last.
BY_LOSS_VALUE, BY_SCHEDULE, BY_LOSS, BY_MIOU = "loss not finite", "schedule", "loss", "mIoU"
DIVERGED_BY = (BY_LOSS_VALUE, BY_SCHEDULE, BY_LOSS, BY_MIOU)
BY_LINE = (BY_LOSS_VALUE, BY_SCHEDULE, BY_LOSS)
LR_DECIMALS = 5  # mmcv's TextLoggerHook rounds every float it writes to 5 decimals


@dataclass(frozen=True)
class Settings:
    false_stop: float = 0.01  # P(a run as good as the reference is stopped) over its whole schedule
    false_drift: float = 0.10  # P(it is called drifting at some eval point)
    spread_floor: float = SEED_STD_MIOU  # mIoU: the least seed-to-seed std assumed at any eval point
    patience: int = 2  # consecutive eval points below the stop margin that make a run diverged
    loss_band: float = 0.15  # relative: how far a healthy run's loss may sit from the reference's
    warmup: float = 0.02  # fraction of max_iters before the loss is compared


# The false-stop budget is shared by the two noisy checks (the schedule check is exact): a union
# bound keeps the sum at ``false_stop``.
MIOU_SHARE = LOSS_SHARE = 0.5
LOSS_BLOCK = 5  # consecutive loss windows whose mean the loss stop rule tests
# The loss noise: the second differences of the block means LOSS_LAG windows apart (blocks that far
# apart barely correlate, however the windows' noise does), over the last LOSS_HISTORY of them.
LOSS_LAG = 2 * LOSS_BLOCK
LOSS_HISTORY = 100
LOSS_LEAST = 10  # residuals needed before the loss can stop a run
LOSS_DF_PER = 7  # overlapping residuals per degree of freedom of the noise estimate (docs/CURVES.md)
# A seed that is low at one eval point tends to be low at the next: the spread the reference's
# fluctuation implies assumes that correlation up to this (docs/CURVES.md).
MIOU_RHO = 0.5
LR_UNIT = 10.0 ** -LR_DECIMALS  # two lrs rounded to 5 decimals from the same schedule differ by at most this


def one_sided_z(rate: float) -> float:
    """The normal quantile a one-sided test of level ``rate`` uses."""
    return NormalDist().inv_cdf(1.0 - rate)


@dataclass(frozen=True)
class ScheduleCheck:
    compared: int  # iterations with an lr in both logs
    first_iteration: Optional[int]
    mismatch: Optional[Tuple[int, float, float]] = None  # (iteration, run lr, reference lr) of the first difference
    max_iters: Tuple[Optional[int], Optional[int]] = (None, None)  # (run, reference)
    # The first difference beyond the printed rounding of both logs (more than one unit): a wrong poly
    # power or max_iters first differs by one unit, a rounding tie, and only later by more.
    certain_at: Optional[Tuple[int, float, float]] = None

    @property
    def length_differs(self) -> bool:
        run, ref = self.max_iters
        return run is not None and ref is not None and run != ref

    @property
    def ok(self) -> bool:
        return self.mismatch is None and not self.length_differs

    @property
    def certain(self) -> bool:
        """The lr differs by more than the printed rounding of both logs at an iteration of the
        reference's own schedule: not noise, the run's schedule is another (stops a run there)."""
        return self.certain_at is not None and not self.length_differs

    def describe(self) -> str:
        run, ref = self.max_iters
        parts = []
        if self.length_differs:
            parts.append(f"the reference log is of a {ref}-iteration schedule, this run's has {run}")
        for n, found in enumerate(dict.fromkeys(m for m in (self.certain_at, self.mismatch) if m is not None)):
            it, got, want = found
            parts.append(f"lr at iteration {it} is {got:.{LR_DECIMALS}f}, the reference says {want:.{LR_DECIMALS}f}"
                         + (" (check schedule.lr, max_iters and power)" if n == 0 else " (first one unit off)"))
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
    failed_at: Optional[int] = None  # where the stop rule fired: the loss above band + noise (diverged)
    nonfinite: Optional[int] = None  # first iteration with a loss that is not finite
    drift_at: Optional[int] = None  # first block of LOSS_BLOCK windows whose mean is beyond the band
    stop_ratio: Optional[float] = None  # the run/reference ratio the stop rule needed where it fired

    @property
    def ok(self) -> bool:
        return self.failed_at is None and self.nonfinite is None and self.drift_at is None

    def describe(self) -> str:
        if self.nonfinite is not None:
            return f"DIVERGED: the loss is not finite at iteration {self.nonfinite}"
        if not self.compared:
            return "not checked: no common window after the warm-up"
        it, got, want = self.worst or (0, 0.0, 0.0)
        deviation = round(relative(got, want), 3) + 0.0  # no "-0.0%"
        worst = f"largest deviation {deviation:+.1%} at iteration {it} ({got:.4f} vs {want:.4f})"
        if self.failed_at is not None:
            return (f"ABOVE THE REFERENCE at iteration {self.failed_at}: the mean of {LOSS_BLOCK} windows beyond "
                    f"x{self.stop_ratio:.2f} (the ±{self.band:.0%} band plus the logs' noise); {worst}")
        if self.drift_at is not None:
            return (f"OUT OF BAND from iteration {self.drift_at}: the mean of {LOSS_BLOCK} windows beyond "
                    f"±{self.band:.0%} ({len(self.outside)} of {self.compared} windows beyond it); {worst}")
        extra = f"; {len(self.outside)} single window(s) beyond it" if self.outside else ""
        return f"ok: {self.compared} windows within ±{self.band:.0%}{extra}; {worst}"


@dataclass(frozen=True)
class EvalRow:
    iteration: int
    published: float  # the reference's mIoU at this point
    seeds: Mapping[str, float]
    mean: float
    delta: float
    margin: float  # the stop margin: below it at ``patience`` consecutive points is diverged
    below: bool  # below the stop margin
    verdict: str  # the verdict as it stood at this eval point
    drift_margin: float = 0.0  # below it (not below the stop margin) is drifting
    spread: float = 0.0  # the seed-to-seed std assumed here (noise model)
    drifting: bool = False  # below the drift margin


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
    reference_kind: str = "published"  # "published", "smoke reference" or "reference" (reference.reference_kind)
    diverged_by: Optional[str] = None  # the check that made it diverged: one of DIVERGED_BY (None: not diverged)

    @property
    def batch_note(self) -> str:
        run, ref = self.effective_batch, self.published_batch
        if run is None or ref is None or run == ref:
            return ""
        return f"effective batch {run}, {self.reference_kind} {ref}"

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


def _beyond_rounding(got: float, want: float) -> bool:
    """Two lrs that differ by more than one printed unit after rounding: not from the same schedule."""
    return abs(round(got, LR_DECIMALS) - round(want, LR_DECIMALS)) > 1.01 * LR_UNIT


def check_schedule(runs: Sequence[Curve], reference: Curve, max_iters: Optional[int]) -> ScheduleCheck:
    ref_lr = {p.iteration: p.lr for p in reference.train if p.lr is not None}
    common = sorted({p.iteration for run in runs for p in run.train if p.lr is not None} & set(ref_lr))
    mismatch = certain = None
    for run in runs:
        pairs = [(p.iteration, p.lr, ref_lr[p.iteration]) for p in run.train
                 if p.lr is not None and p.iteration in ref_lr]
        first = next((x for x in pairs if round(x[1], LR_DECIMALS) != round(x[2], LR_DECIMALS)), None)
        beyond = next((x for x in pairs if _beyond_rounding(x[1], x[2])), None)
        mismatch = min(filter(None, (mismatch, first)), default=None)
        certain = min(filter(None, (certain, beyond)), default=None)
    return ScheduleCheck(len(common), common[0] if common else None, mismatch, (max_iters, reference.max_iters),
                         certain)


# ----------------------------------------------------------------------------- loss


def _mean_over_seeds(runs: Sequence[Curve]) -> List[Tuple[int, float]]:
    by_it: Dict[int, List[float]] = {}
    for run in runs:
        for p in run.train:
            if p.loss is not None:
                by_it.setdefault(p.iteration, []).append(p.loss)
    return [(it, sum(v) / len(v)) for it, v in sorted(by_it.items())]


def _windowed(fine: List[Tuple[int, float]], coarse: List[Tuple[int, float]], spans: Mapping[int, Optional[int]],
              coarse_spans: Mapping[int, Optional[int]]) -> List[Tuple[int, float, float]]:
    """(iteration, coarse value, mean of the fine points in the coarse window): each point of a log is
    the mean over the iterations that end at it, so a fine point weighs as many iterations as it spans:
    its whole log interval (0.x, nlbench), or at most the 10 of mmengine's window (1.x, ``span``)."""
    out: List[Tuple[int, float, float]] = []
    prev = last = i = 0
    for it, value in coarse:
        total = weight = 0.0
        begins = max(prev, it - (coarse_spans.get(it) or it))  # a 1.x coarse point: its last 10 iterations
        while i < len(fine) and fine[i][0] <= it:
            f_it, f_value = fine[i]
            if f_it > begins:
                width = min(f_it - last, spans.get(f_it) or f_it - last)
                total += f_value * width
                weight += width
            last, i = f_it, i + 1
        if weight:
            out.append((it, value, total / weight))
        prev = it
    return out


def _spacing(points: List[Tuple[int, float]]) -> float:
    if len(points) < 2:
        return math.inf
    return (points[-1][0] - points[0][0]) / (len(points) - 1)


def _windows(runs: Sequence[Curve], reference: Curve) -> List[Tuple[int, float, float]]:
    """(iteration, run, reference) loss on the coarser of the two log grids."""
    run = [(it, v) for it, v in _mean_over_seeds(runs) if math.isfinite(v)]
    ref = [(p.iteration, p.loss) for p in reference.train if p.loss is not None and math.isfinite(p.loss)]
    spans = {p.iteration: p.span for p in reference.train}
    run_spans = {p.iteration: p.span for c in runs for p in c.train}
    if _spacing(run) >= _spacing(ref):
        return [(it, got, want) for it, got, want in _windowed(ref, run, spans, run_spans)]
    return [(it, got, want) for it, want, got in _windowed(run, ref, run_spans, spans)]


def second_difference_variance(rho: float) -> float:
    """Var(v[j] - (v[j-1] + v[j+1]) / 2) / s^2 for noise of std s whose consecutive points correlate as an
    AR(1) with ``rho``: 1.5 - 2 rho + rho^2 / 2 (1.5 for independent noise; 0.625 at rho 0.5)."""
    return 1.5 - 2.0 * rho + rho * rho / 2.0


def second_differences(values: Sequence[float], lag: int = 1) -> List[float]:
    """v[j] - (v[j - lag] + v[j + lag]) / 2 for every j that has both (entry i is the one of j = i + lag):
    a locally straight trend cancels, the noise stays."""
    return [values[j] - (values[j - lag] + values[j + lag]) / 2 for j in range(lag, len(values) - lag)]


def noise_std(mean_square: float, rho: float = 0.0) -> float:
    """The std of the noise whose second differences have this mean square (``second_difference_variance``
    of ``rho``, the correlation of points ``lag`` apart)."""
    return math.sqrt(mean_square / second_difference_variance(rho))


def local_noise(values: Sequence[float], neighbours: int = 20, least: int = 3,
                rho: float = 0.0) -> List[Optional[float]]:
    """Per point, the std of its noise that the second differences of the points around it show
    (``neighbours`` either side; ``rho``, the correlation assumed between consecutive points). None where
    fewer than ``least``."""
    resid = second_differences(values)
    out: List[Optional[float]] = []
    for k in range(len(values)):
        near = resid[max(k - 1 - neighbours, 0):max(k - 1 + neighbours + 1, 0)]
        out.append(noise_std(sum(e * e for e in near) / len(near), rho) if len(near) >= max(least, 1) else None)
    return out


def _trailing_noise(values: Sequence[float]) -> List[Tuple[Optional[float], int]]:
    """Per window ``end``: the std of the mean of the LOSS_BLOCK windows ending there, from the second
    differences LOSS_LAG apart of those block means logged so far (the last LOSS_HISTORY of them), and
    how many residuals that used (None below LOSS_LEAST). Measured on the block means themselves, it
    holds however the windows' noise correlates. Running sums keep it linear in the number of windows."""
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    means = [(sums[end + 1] - sums[end + 1 - LOSS_BLOCK]) / LOSS_BLOCK for end in range(LOSS_BLOCK - 1, len(values))]
    squares = [0.0]  # squares[i]: the sum of the first i squared residuals
    for residual in second_differences(means, LOSS_LAG):
        squares.append(squares[-1] + residual * residual)
    out: List[Tuple[Optional[float], int]] = []
    for end in range(len(values)):
        last = min(end - (LOSS_BLOCK - 1) - 2 * LOSS_LAG + 1, len(squares) - 1)  # residuals known at end
        first = max(last - LOSS_HISTORY, 0)
        count = max(last - first, 0)
        out.append((noise_std((squares[last] - squares[first]) / count) if count >= LOSS_LEAST else None, count))
    return out


@functools.lru_cache(maxsize=256)
def _t_quantile(level: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(level, df))


def loss_stop(ratios: Sequence[float], tested: int, settings: Settings) -> Tuple[Optional[int], Optional[float]]:
    """Where the loss stop rule fires over log(run / reference) per window: (index, ratio needed).

    It fires at the first block of LOSS_BLOCK windows whose mean log-ratio is above log(1 + band) plus
    q times the block mean's noise: the noise from the fluctuation of the block means logged so far
    (``_trailing_noise``), q the Student-t quantile of (LOSS_SHARE * false_stop) / ``tested`` (a union
    bound over every block the schedule tests) with one degree of freedom per LOSS_DF_PER residuals
    (they overlap: 6.6 residuals make one for independent windows, 9.3 for windows correlated 0.7), so
    an estimate from few windows asks for more. Only a loss above the reference stops."""
    band = math.log1p(settings.loss_band)
    level = 1.0 - LOSS_SHARE * settings.false_stop / max(tested, 1)
    noise = _trailing_noise(ratios)
    for end in range(LOSS_BLOCK - 1, len(ratios)):
        sigma, count = noise[end]
        if sigma is None:
            continue
        needed = band + _t_quantile(level, max(count // LOSS_DF_PER, 1)) * sigma
        if sum(ratios[end - LOSS_BLOCK + 1:end + 1]) / LOSS_BLOCK > needed:
            return end, math.exp(needed)
    return None, None


def check_loss(runs: Sequence[Curve], reference: Curve, max_iters: Optional[int], settings: Settings) -> LossCheck:
    nonfinite = min((p.iteration for run in runs for p in run.train if p.loss is not None
                     and not math.isfinite(p.loss)), default=None)
    start = settings.warmup * (max_iters or reference.max_iters or reference.last_iteration or 0)
    pairs = [p for p in _windows(runs, reference) if p[0] > start and p[1] > 0 and p[2] > 0]
    ratios = [math.log(got / want) for _, got, want in pairs]
    tested = max(len(pairs), sum(1 for p in reference.train if p.iteration > start))
    stop, needed = loss_stop(ratios, tested, settings)
    band = math.log1p(settings.loss_band)
    blocks = [k for k in range(LOSS_BLOCK - 1, len(ratios))
              if abs(sum(ratios[k - LOSS_BLOCK + 1:k + 1]) / LOSS_BLOCK) > band]
    outside = [p for p in pairs if abs(relative(p[1], p[2])) > settings.loss_band]
    return LossCheck(len(pairs), settings.loss_band,
                     max(pairs, key=lambda p: abs(relative(p[1], p[2])), default=None),
                     tuple(p[0] for p in outside), None if stop is None else pairs[stop][0], nonfinite,
                     pairs[blocks[0]][0] if blocks else None, needed)


def _streak_start(order: Sequence[int], bad: set, patience: int) -> Optional[int]:
    """The iteration at which ``patience`` consecutive entries of ``order`` were bad (None: never)."""
    run = 0
    for it in order:
        run = run + 1 if it in bad else 0
        if run >= patience:
            return it
    return None


# ----------------------------------------------------------------------------- mIoU and the verdict


def reference_spread(values: Sequence[float]) -> List[float]:
    """Per eval point, the seed-to-seed std of mIoU that the reference's own eval-to-eval fluctuation
    implies: the second differences at the point and two either side (``local_noise``), for a seed's
    deviations correlated up to MIOU_RHO between consecutive eval points; 0 where the reference has
    fewer than 3 points. The trend's curvature early in training adds to it (it errs high there)."""
    return [s or 0.0 for s in local_noise(list(values), neighbours=2, least=1, rho=MIOU_RHO)]


@dataclass(frozen=True)
class Margins:
    """The noise model at one eval point: the seed-to-seed std assumed, the std of (run mean -
    reference), and the margins below the reference that make the point drifting or count for a stop."""

    spread: float
    sigma: float
    stop: float
    drift: float


def eval_margins(reference: Sequence[float], seeds: Sequence[Sequence[float]], settings: Settings) -> List[Margins]:
    """The noise model of docs/CURVES.md at each of the reference's K eval points.

    spread s_k = max(spread_floor, the reference's fluctuation there, the seeds' std there when there
    are several); the run's mean over its n seeds minus the one-seed reference has std
    sigma_k = s_k sqrt(1 + 1/n). A stop needs ``patience`` consecutive points below z_stop sigma_k,
    z_stop the one-sided quantile of (MIOU_SHARE * false_stop) / (K - patience + 1): every stop ends
    at one of those points, so by a union bound a run as good as the reference (its points as likely
    above as below, whatever their correlation) is stopped with at most that probability. A point below
    z_drift sigma_k, z_drift the quantile of false_drift / K, is drifting. ``seeds``: each point's seed
    values (empty where the run has not reached it)."""
    count = len(reference)
    fluctuation = reference_spread(reference)
    z_stop = one_sided_z(MIOU_SHARE * settings.false_stop / max(count - settings.patience + 1, 1))
    z_drift = one_sided_z(settings.false_drift / max(count, 1))
    out = []
    for k in range(count):
        values = list(seeds[k]) if k < len(seeds) else []
        n = max(len(values), 1)
        seeds_std = seed_stats(values).std  # NaN for fewer than two seeds
        spread = max(settings.spread_floor, fluctuation[k], seeds_std if seeds_std == seeds_std else 0.0)
        sigma = spread * math.sqrt(1.0 + 1.0 / n)
        out.append(Margins(spread, sigma, z_stop * sigma, z_drift * sigma))
    return out


def stop_point(deltas: Sequence[Optional[float]], margins: Sequence[Margins], patience: int) -> Optional[int]:
    """The index of the eval point at which ``patience`` consecutive deltas (run - reference; None: not
    reached) were below their stop margins; None when that never happened."""
    below = {k for k, (delta, margin) in enumerate(zip(deltas, margins)) if delta is not None and delta < -margin.stop}
    return _streak_start(range(len(deltas)), below, patience)


def _eval_rows(runs: Mapping[str, Curve], reference: Curve, settings: Settings) -> List[EvalRow]:
    points = list(reference.evals)
    seeds = [{name: e.mIoU for name, run in runs.items() for e in run.evals if e.iteration == ref.iteration}
             for ref in points]
    margins = eval_margins([p.mIoU for p in points], [list(s.values()) for s in seeds], settings)
    rows = []
    for ref, found, m in zip(points, seeds, margins):
        if not found:
            continue
        mean = sum(found.values()) / len(found)
        delta = mean - ref.mIoU
        rows.append(EvalRow(ref.iteration, ref.mIoU, found, mean, delta, m.stop, not delta >= -m.stop, "",
                            m.drift, m.spread, not delta >= -m.drift))
    return rows


Verdict = Tuple[str, List[str], Optional[int], Optional[str]]  # (verdict, reasons, diverged at, diverged by)


def _verdict_until(iteration: float, schedule: ScheduleCheck, loss: LossCheck, rows: Sequence[EvalRow],
                   patience: int) -> Verdict:
    """The verdict counting what the logs held up to ``iteration``."""
    seen = [r for r in rows if r.iteration <= iteration]
    streak_at = _streak_start([r.iteration for r in seen], {r.iteration for r in seen if r.below}, patience)
    if loss.nonfinite is not None and loss.nonfinite <= iteration:
        return DIVERGED, [f"loss not finite at iteration {loss.nonfinite}"], loss.nonfinite, BY_LOSS_VALUE
    if schedule.certain and schedule.certain_at[0] <= iteration:
        return (DIVERGED, [f"schedule differs: {schedule.describe()[len('DIFFERS: '):]}"], schedule.certain_at[0],
                BY_SCHEDULE)
    if loss.failed_at is not None and loss.failed_at <= iteration:
        return DIVERGED, [f"loss above the reference's beyond its band and noise at iteration {loss.failed_at} "
                          f"(x{loss.stop_ratio:.2f})"], loss.failed_at, BY_LOSS
    if streak_at is not None:
        row = next(r for r in seen if r.iteration == streak_at)
        return DIVERGED, [f"mIoU below the stop margin at {patience} consecutive eval points (at iter "
                          f"{row.iteration}: {row.mean:.2f}, reference {row.published:.2f}, margin "
                          f"{row.margin:.2f})"], streak_at, BY_MIOU
    reasons: List[str] = []
    if schedule.length_differs or (schedule.mismatch is not None and schedule.mismatch[0] <= iteration):
        reasons.append("schedule differs")
    if loss.drift_at is not None and loss.drift_at <= iteration:
        reasons.append(f"loss out of its ±{loss.band:.0%} band from iteration {loss.drift_at}")
    below = [r for r in seen if r.drifting]
    if below:
        last = below[-1]
        reasons.append(f"mIoU below the drift margin at iter {last.iteration} ({last.mean:.2f} vs "
                       f"{last.published:.2f} - {last.drift_margin:.2f})")
    return (DRIFTING if reasons else ON_TRACK), reasons, None, None


def assess(runs: Mapping[str, Curve], reference: Curve, settings: Settings = Settings(),
           max_iters: Optional[int] = None, published_batch: Optional[int] = None,
           reference_kind: str = "published") -> Assessment:
    """Every check of ``runs`` (seed label -> curve) against ``reference``, and the verdict.

    ``max_iters`` is the run's schedule length; ``published_batch`` the reference run's effective
    batch when its log does not say (the recipe's published one)."""
    curves = list(runs.values())
    schedule = check_schedule(curves, reference, max_iters)
    loss = check_loss(curves, reference, max_iters, settings)
    rows = _eval_rows(runs, reference, settings)
    rows = [EvalRow(**{**asdict(r), "verdict": _verdict_until(r.iteration, schedule, loss, rows,
                                                              settings.patience)[0]}) for r in rows]
    verdict, reasons, at, by = _verdict_until(math.inf, schedule, loss, rows, settings.patience)
    batches = {c.effective_batch for c in curves if c.effective_batch is not None}
    batch = batches.pop() if len(batches) == 1 else None
    return Assessment(verdict, schedule, loss, tuple(rows), batch,
                      reference.effective_batch or published_batch, at, tuple(reasons), reference_kind, by)


def settings_from(guard: Any) -> Settings:
    """Settings from a recipe's ``guard`` section."""
    return Settings(false_stop=guard.false_stop, false_drift=guard.false_drift, spread_floor=guard.spread_floor,
                    patience=guard.patience, loss_band=guard.loss_band, warmup=guard.warmup)
