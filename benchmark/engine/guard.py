"""The training guard (recipe section ``guard``): the run's own log lines against its row's
reference curve while it trains (docs/CURVES.md).

At every train line it runs the checks that can already decide: the schedule (the lr against the
reference's; one that differs beyond the printed rounding is certain at the first common line) and,
after the warm-up, the loss (its stop threshold leaves a healthy run a false-stop chance within
``guard.false_stop``); at every evaluation all checks of ``benchmark.curves.checks`` on what the run
has logged so far (a resumed run's earlier lines included), mIoU with margins from the noise model.
With ``action: stop`` the line or evaluation that makes the run diverged stops it: the trainer saves
its state and raises ``RunDiverged``. Rank 0 holds the curves and decides; every rank learns the
decision through one all-reduce, so all stop together.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from benchmark.curves.checks import BY_LINE, DIVERGED, Assessment, assess, check_schedule, settings_from
from benchmark.curves.reader import Curve, CurveBuilder, merge, read_curve, read_file
from benchmark.curves.reference import reference_kind, reference_label, resolve_reference
from benchmark.engine import distributed
from benchmark.engine.distributed import DistInfo
from benchmark.engine.train_log import LOG_NAME
from benchmark.errors import NLBenchError
from benchmark.recipe import Recipe, published_recipe

Log = Callable[[str], None]


class Guard:
    """Inactive when ``guard.reference`` is null. On rank 0 it is also a LogSink of the trainer."""

    def __init__(self, recipe: Recipe, work_dir: Path, info: DistInfo, log: Log, resume: bool):
        self.recipe, self.info, self.say = recipe, info, log
        self.config = recipe.guard
        self.active = self.config.reference is not None
        self.reference: Optional[Curve] = None
        self.label = ""
        self.assessment: Optional[Assessment] = None
        self.builder = CurveBuilder("this run")
        self._schedule_said = False
        self._line_pending = False  # a train line arrived since the last line check
        self._said_diverged = 0  # the iteration of the last "diverged" said at a train line
        self.published_batch: Optional[int] = None
        self.kind = reference_kind(recipe, self.config.reference)  # "published", "smoke reference", ...
        if self.active:
            self.published_batch = published_recipe(recipe).effective_batch
            self._load(work_dir, resume)

    def _load(self, work_dir: Path, resume: bool) -> None:
        error: Optional[NLBenchError] = None
        if self.info.is_main:
            try:
                path = resolve_reference(self.recipe, self.config.reference)
                sched = self.recipe.schedule
                self.reference = read_curve(path, sched.eval_interval, sched.max_iters)
                self.label = reference_label(path)
            except NLBenchError as exc:
                error = exc
        if distributed.any_rank(error is not None):
            raise error or NLBenchError("rank 0 could not read the guard's reference log", key="guard.reference")
        if self.info.is_main and resume:
            self._seed(work_dir / LOG_NAME)
        if self.info.is_main:
            self._announce()

    def _seed(self, path: Path) -> None:
        """A resumed run's earlier lines count too."""
        try:
            earlier = read_file(path)
        except NLBenchError:
            return  # no log yet, or nothing usable in it
        self.builder.train, self.builder.evals = dict(earlier.train), dict(earlier.evals)

    def _announce(self) -> None:
        ref, sched = self.reference, self.recipe.schedule
        self.say(f"guard: against {self.label} ({ref.format}, {len(ref.train)} train and {len(ref.evals)} eval "
                 f"lines); action {self.config.action}, false-stop chance {self.config.false_stop:g} over the "
                 f"schedule, seed spread at least {self.config.spread_floor:g} mIoU, patience {self.config.patience}")
        for line in ref.warnings:
            self.say(f"guard: warning: {line}")
        if ref.max_iters is not None and ref.max_iters != sched.max_iters:
            self.say(f"guard: WARNING: the reference log is of a {ref.max_iters}-iteration schedule, this run has "
                     f"{sched.max_iters}: the lr and mIoU checks compare different schedules")

    # ------------------------------------------------------------------ LogSink (rank 0)

    @property
    def sink(self) -> Optional["Guard"]:
        return self if self.reference is not None else None

    def write(self, entry: Dict[str, Any]) -> None:
        self.builder.add(entry)
        if entry.get("event") is None and "lr" in entry:
            self._line_pending = True
            if not self._schedule_said:
                self._schedule_said = True
                self._say_schedule()

    def close(self) -> None:
        pass

    def curve(self) -> Curve:
        return replace(merge([self.builder]), max_iters=self.recipe.schedule.max_iters,
                       effective_batch=self.builder.meta.get("effective_batch"))

    def _say_schedule(self) -> None:
        check = check_schedule([self.curve()], self.reference, self.recipe.schedule.max_iters)
        if check.mismatch is not None:
            self.say(f"guard: WARNING: the schedule is not the reference's: {check.describe()[len('DIFFERS: '):]}")
        elif check.compared:
            it = check.first_iteration
            self.say(f"guard: schedule matches the reference at iteration {it} (lr to 5 decimals)")

    # ------------------------------------------------------------------ at each evaluation (every rank)

    def _assess(self) -> Assessment:
        self.assessment = assess({"run": self.curve()}, self.reference, settings_from(self.config),
                                 self.recipe.schedule.max_iters, self.published_batch, self.kind)
        return self.assessment

    def should_stop(self, done: int) -> bool:
        """Assess after the evaluation at ``done``; True (on every rank) when the run must stop here."""
        if not self.active:
            return False
        stop = False
        if self.reference is not None:
            self._assess()
            self._say_eval(done)
            stop = self._diverged_here(done)
        return distributed.any_rank(stop)

    def should_stop_at_line(self, done: int) -> bool:
        """After the train line of ``done`` (every log interval): True (on every rank) when the schedule or
        the loss check has just made the run diverged. Says it once when it first goes wrong."""
        if not self.active:
            return False
        stop = False
        if self.reference is not None and self._line_pending:
            self._line_pending = False
            a = self._assess()
            if self._by_line(a) and a.diverged_at > self._said_diverged:
                self._said_diverged = a.diverged_at
                action = " (guard.action warn: training goes on)" if self.config.action == "warn" else ""
                self.say(f"guard: iter {done}: verdict {a.summary()}{action}")
                stop = self._diverged_here(done)
        return distributed.any_rank(stop)

    @staticmethod
    def _by_line(a: Assessment) -> bool:
        """Diverged by a check a train line decides (schedule, loss), not by the mIoU of evaluations."""
        return a.verdict == DIVERGED and a.diverged_at is not None and a.diverged_by in BY_LINE

    def _diverged_here(self, done: int) -> bool:
        """Stop here: action is stop, training has iterations left (a run that reached its end is never
        stopped), and the run is diverged by the schedule or loss, or by mIoU with this evaluation the last
        of ``patience`` consecutive ones below the stop margin (a resumed run is stopped again only then)."""
        a = self.assessment
        if a.verdict != DIVERGED or self.config.action != "stop" or done >= self.recipe.schedule.max_iters:
            return False
        if self._by_line(a):
            return True
        rows = list(a.evals)
        if not rows or rows[-1].iteration != done:
            return False
        trailing = 0
        for row in reversed(rows):
            if not row.below:
                break
            trailing += 1
        return trailing >= self.config.patience

    def _say_eval(self, done: int) -> None:
        a = self.assessment
        row = next((r for r in a.evals if r.iteration == done), None)
        head = f"guard: iter {done}: "
        if row is not None:
            state = ": BELOW the stop margin" if row.below else (": below the drift margin" if row.drifting else "")
            head += (f"mIoU {row.mean:.2f}, {self.kind} {row.published:.2f} (drifting below "
                     f"{row.published - row.drift_margin:.2f}, stop margin {row.published - row.margin:.2f}){state}; ")
        action = " (guard.action warn: training goes on)" if a.verdict == DIVERGED and self.config.action == "warn" \
            else ""
        self.say(f"{head}verdict {a.summary()}{action}")

    def message(self) -> str:
        """"diverged at iter k: mIoU x, published y" ("smoke reference y", "reference y" for those), "diverged
        at iter k: <reason>" for the schedule and loss checks, or the verdict when it is not diverged."""
        a = self.assessment
        if a is None:
            return "not assessed"
        below = [r for r in a.evals if r.below]
        if a.verdict == DIVERGED and below and a.diverged_at == below[-1].iteration:
            last = below[-1]
            return f"diverged at iter {last.iteration}: mIoU {last.mean:.2f}, {self.kind} {last.published:.2f}"
        if a.verdict == DIVERGED and a.diverged_at is not None:
            return f"diverged at iter {a.diverged_at}: {'; '.join(a.reasons)}"
        return a.summary()

    def evidence(self, stopped_at: Optional[int] = None) -> Optional[Dict[str, Any]]:
        """What a train record keeps of the guard (None when it did not run)."""
        if self.assessment is None:
            return None
        a = self.assessment
        return {
            "verdict": a.verdict, "action": self.config.action, "reference": self.label, "stopped_at": stopped_at,
            "message": self.message(), "schedule": a.schedule.describe(), "loss": a.loss.describe(),
            "effective_batch": a.effective_batch, "published_batch": a.published_batch, "batch_note": a.batch_note,
            "diverged_at": a.diverged_at, "diverged_by": a.diverged_by,
            "evals": [{"iteration": r.iteration, "mIoU": r.mean, "published": r.published, "margin": r.margin,
                       "drift_margin": r.drift_margin, "spread": r.spread, "below": r.below,
                       "drifting": r.drifting} for r in a.evals],
        }
