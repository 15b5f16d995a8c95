"""`nlbench compare`: reproduced vs reference numbers per row and metric; exit 1 on a regression.

The reference of full-profile records is the published table (results/published.csv); smoke records
are never set against it (a ResNet-18 on synthetic data says nothing about a full-size row) but against
a committed smoke baseline, results/reference/smoke.csv, in the same columns plus ``profile`` and
``device``. Mem and fps depend on the hardware: they are compared only when the records were measured on
the reference's device class (the published ones: one V100), and the output says so. The Mem and fps
compared are a bench record's top-level ones, those of the ``published`` measurement setting; the
``fast`` setting's figures (nlbench's fast path) are reported by tables, never gated.

Results on checkpoints nlbench trained and on MMSeg's released checkpoints are compared separately,
each in its own table with its own verdicts. Two methods decide the mIoU verdicts:
  tolerance (default)  the mean over seeds against reference +- tolerance: reproduced, better, regressed
  ci                   the 95% Student-t interval over seeds against that band: reproduced, below, above,
                       inconclusive (with the seeds that would decide); rules in benchmark/stats.py
Mem and fps keep the 10% band under both methods (their spread is the machine's, not the seeds').
A smoke baseline frozen from its measured spread (report/baseline.py) carries a band per row and metric;
its rows are held to that band instead of the tolerance. ``--min-seeds N`` and ``--fail-on
inconclusive`` (ci) make too few seeds, or an undecided verdict, fail the gate.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd
from tabulate import tabulate

from benchmark.catalog import RELEASED_COLUMNS, released_table
from benchmark.errors import NLBenchError, check_number
from benchmark.io.files import atomic_write_bytes, atomic_write_text
from benchmark.report.baseline import REFREEZE_COMMAND
from benchmark.report.collect import RELEASED, TRAINED, Warn, collect_or_warn, of_source
from benchmark.report.references import Reference, default_references, device_class, load_reference
from benchmark.report.row_curves import Chosen, add_junit_cases, curve_lines, curve_rows
from benchmark.stats import CI_VERDICTS, SEED_STD_MIOU, SPREAD_MARGIN, ci_verdict, from_summary

# metric -> (label, higher is better, digits)
METRICS = {
    "miou": ("mIoU", True, 2),
    "miou_ms_flip": ("mIoU(ms+flip)", True, 2),
    "mem_gb": ("Mem (GB)", False, 2),
    "fps": ("Inf time (fps)", True, 2),
}
HARDWARE_METRICS = ("mem_gb", "fps")
# Mem and fps are not in mIoU points: they may differ by this fraction of the reference either way.
HARDWARE_REL_TOL = 0.10
VERDICTS = ("reproduced", "better", "regressed", "missing", "skipped")
METHODS = ("tolerance", "ci")
# The ci method's tally: its own verdicts for mIoU, the band's for Mem and fps, then the rest.
CI_TALLY = (*CI_VERDICTS, "better", "regressed", "missing", "skipped")
FAILING = ("regressed", "below")
TOO_FEW_SEEDS = "too-few-seeds"  # compare --method ci --min-seeds N: a row with fewer seeds fails
FAIL_ON = ("inconclusive",)  # what --fail-on may add to the failing verdicts


@dataclass(frozen=True)
class Check:
    recipe: str
    profile: str
    metric: str
    reference: float
    reproduced: float
    std: float
    n: int
    delta: float
    verdict: str
    note: str
    source: str = TRAINED  # the checkpoint source of the results (collect's checkpoint_source)
    low: float = float("nan")  # the ci method's 95% interval (NaN: none, or the tolerance method)
    high: float = float("nan")
    band: float = float("nan")  # half-width of the band around the reference (NaN: no reference value)
    band_from: str = "the tolerance"  # where that band comes from, for people
    # How the row's runs differed from the published setting ("; "-joined, run/deviations.py); "" when
    # none, or when its records predate the field.
    deviations: str = ""

    @property
    def shown_deviations(self) -> str:
        """The deviations said beside the verdict: none beside 'missing' or 'skipped' (nothing was judged)."""
        return self.deviations if self.verdict not in ("missing", "skipped") else ""

    @property
    def verdict_text(self) -> str:
        """The verdict with the deviations beside it: 'below; effective batch 4 instead of 8'."""
        return f"{self.verdict}; {self.shown_deviations}" if self.shown_deviations else self.verdict


MEASURED_SPREAD = "the measured spread"  # band_from of a check held to its baseline's measured band


def held_to_measured_bands(checks: Sequence[Check]) -> bool:
    """Whether any check was held to a band measured for its baseline rather than to the tolerance."""
    return any(c.band_from.startswith(MEASURED_SPREAD) for c in checks)


def band_for(ref: Reference, recipe: str, metric: str, reference: float, tolerance: float) -> Tuple[float, str]:
    """(half-width of the band around ``reference``, where it comes from): Mem and fps 10% of the
    reference; mIoU the baseline's measured band where it has one, else the tolerance."""
    if metric in HARDWARE_METRICS:
        return abs(reference) * HARDWARE_REL_TOL, f"{HARDWARE_REL_TOL:.0%} of the reference"
    if ref.bands is not None and recipe in ref.bands.index:
        band, runs = ref.bands.loc[recipe, f"{metric}_band"], ref.bands.loc[recipe, "n_runs"]
        if band == band:
            return float(band), f"{MEASURED_SPREAD} ({ref.bands.loc[recipe, 'spread_over'] or f'{runs:.0f} runs'})"
    return tolerance, "the tolerance"


def _verdict(metric: str, ref: float, rep: float, allowed: float) -> str:
    higher_better = METRICS[metric][1]
    gain = (rep - ref) if higher_better else (ref - rep)
    if gain < -allowed - 1e-9:
        return "regressed"
    if gain > allowed + 1e-9:
        return "better"
    return "reproduced"


def compare(summary: pd.DataFrame, ref: Reference, tolerance: float, source: str = TRAINED) -> List[Check]:
    """One Check per (reference row, metric), on the results of checkpoint ``source``."""
    rows = of_source(summary, source)
    rows = rows[rows["profile"] == ref.profile].set_index("recipe")
    checks = []
    # Released weights are held to the figures MMSeg published for that very checkpoint (catalog.released_table);
    # a reference CSV without those columns holds the numbers to compare with as they are.
    table = released_table(ref.table) if source == RELEASED and ref.released_figures else ref.table
    for recipe, r in table.iterrows():
        have = recipe in rows.index
        got = rows.loc[recipe] if have else None
        for metric in METRICS:
            reference = float(r[metric])
            nan = float("nan")
            if got is not None:
                rep, std, n = float(got[f"{metric}_mean"]), float(got[f"{metric}_std"]), int(got[f"{metric}_n"])
            else:
                rep, std, n = nan, nan, 0
            note, verdict = "", ""
            if reference != reference:
                verdict, note = "skipped", "no reference value"
            elif n == 0:
                verdict, note = "missing", "no record" if got is None else "not measured"
            elif metric in HARDWARE_METRICS and device_class(got["device_name"]) != ref.device_class:
                verdict = "skipped"
                note = (f"measured on {got['device_name']}, reference on {ref.device_class or 'an unknown device'}: "
                        "not comparable")
            band, band_from = band_for(ref, recipe, metric, reference, tolerance)
            if verdict == "":
                verdict = _verdict(metric, reference, rep, band)
            delta = rep - reference if verdict in ("reproduced", "better", "regressed") else nan
            if metric in RELEASED_COLUMNS and r.get("figure_note"):
                note = "; ".join(filter(None, [note, r["figure_note"]]))
            deviations = got.get("deviations") if got is not None else None
            checks.append(Check(recipe, ref.profile, metric, reference, rep, std, n, delta, verdict, note, source,
                                band=band, band_from=band_from,
                                deviations=deviations if isinstance(deviations, str) else ""))
    return checks


def apply_ci(checks: List[Check], tolerance: float, assumed_std: float = SEED_STD_MIOU) -> List[Check]:
    """The ci method: mIoU verdicts from the 95% interval over seeds (benchmark/stats.py); Mem, fps,
    missing and skipped checks stay as the tolerance method made them."""
    out = []
    for c in checks:
        if c.metric in HARDWARE_METRICS or c.verdict not in ("reproduced", "better", "regressed"):
            out.append(c)
            continue
        released = c.source == RELEASED
        band = c.band  # a baseline's measured band, else the tolerance (band_for)
        got = ci_verdict(from_summary(c.reproduced, c.std, c.n), c.reference, band, assumed_std,
                         fixed_weights=released)
        note = _ci_note(c, got, released, band)
        out.append(replace(c, verdict=got.verdict, note=note, low=got.low, high=got.high))
    return out


def _ci_note(c: Check, got, released: bool, tolerance: float) -> str:
    if got.verdict != "inconclusive":
        return "one evaluation of fixed weights: no seed spread" if released and c.n == 1 else ""
    if c.n == 1:
        why, std = "one seed gives no interval", f"an assumed std of {got.std_used:.2f}"
    else:
        why, std = "the interval reaches across an edge of the band", f"the observed std {got.std_used:.2f}"
    if got.seeds_needed is None:
        gap = abs(c.reproduced - c.reference)
        if abs(gap - tolerance) < 1e-9:
            return f"{why}; the mean sits on an edge of the band: no number of seeds decides"
        return f"{why}; more than 1000 seeds would be needed at {std}"
    more = got.seeds_needed - c.n
    return (f"{why}; {more} more seed{'s' if more != 1 else ''} ({got.seeds_needed} in all) would decide "
            f"at {std}, if the mean holds")


def _fmt(value: float, digits: int, sign: bool = False) -> str:
    if value != value:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _rows(checks: List[Check]) -> List[List[str]]:
    out = []
    for c in checks:
        digits = METRICS[c.metric][2]
        rep = _fmt(c.reproduced, digits)
        if c.n > 1 and c.std == c.std:
            rep += f" ± {c.std:.{digits}f}"
        out.append([c.recipe, c.profile, METRICS[c.metric][0], _fmt(c.reference, digits), rep, str(c.n),
                    _fmt(c.delta, digits, sign=True), c.verdict_text, c.note])
    return out


HEADERS = ["recipe", "profile", "metric", "reference", "reproduced", "n", "delta", "verdict", "note"]


def _header_lines(refs: Dict[str, Reference], tolerance: float, ignored: List[str], profiles: List[str]) -> List[str]:
    lines = []
    for ref in refs.values():
        if ref.profile not in profiles:
            lines.append(f"note: there are no {ref.profile}-profile records to compare with {ref.label}: "
                         "every row is missing")
        device = ref.device_class or "unknown (Mem and fps not compared)"
        if ref.table[list(HARDWARE_METRICS)].isna().all().all():
            lines.append(f"profile {ref.profile}: reference {ref.label}; it holds no Mem or fps, so they are not "
                         "compared")
            continue
        lines.append(f"profile {ref.profile}: reference {ref.label}; its Mem and fps were measured on {device}, "
                     f"so only records measured on a {device} are compared for them")
    lines.append(f"tolerance: {tolerance} mIoU points; Mem and fps: {HARDWARE_REL_TOL:.0%} of the reference")
    lines.append("Mem and fps compared: each bench record's `published`-setting figures (measured as the table "
                 "was); its `fast`-setting figures are nlbench's own and are never compared")
    for profile in ignored:
        lines.append(f"profile {profile}: not compared (no reference for it; smoke records are never compared "
                     "with the published full-size numbers)")
    return lines


def _ci_header(assumed_std: float) -> str:
    return ("method: ci: the 95% Student-t interval of the mean over seeds decides mIoU: reproduced when it lies "
            "within reference ± tolerance, below / above when it lies wholly under / over that band, inconclusive "
            f"when it reaches across an edge (one seed gives no interval; the seeds that would decide assume a std "
            f"of {assumed_std} mIoU then); a released checkpoint is fixed weights, so one evaluation of it has no "
            "seed spread; Mem and fps keep the 10% band")


def _band(c: Check) -> str:
    """The band the check was held to (compare() sets it wherever there is a reference value)."""
    digits = METRICS[c.metric][2]
    if c.reference != c.reference:
        return "-"
    return f"[{c.reference - c.band:.{digits}f}, {c.reference + c.band:.{digits}f}]"


def _interval(c: Check) -> str:
    digits = METRICS[c.metric][2]
    return "-" if c.low != c.low else f"[{c.low:.{digits}f}, {c.high:.{digits}f}]"


def _ci_rows(checks: List[Check], tolerance: float) -> List[List[str]]:
    out = []
    for c, row in zip(checks, _rows(checks)):
        out.append([*row[:5], row[5], _interval(c), _band(c), c.verdict_text, c.note])
    return out


CI_HEADERS = ["recipe", "profile", "metric", "reference", "mean ± std", "n", "95% interval", "band", "verdict", "note"]
RELEASED_TITLE = ("Released checkpoints: MMSegmentation's released weights of each row, evaluated and benchmarked "
                  "by nlbench, against the same reference (kept apart from the rows nlbench trained); mIoU against "
                  "the figures published for that checkpoint, which the note names where they are not the table's")


def _table(checks: List[Check], method: str, tolerance: float) -> str:
    if method == "ci":
        return tabulate(_ci_rows(checks, tolerance), headers=CI_HEADERS, tablefmt="github", disable_numparse=True)
    return tabulate(_rows(checks), headers=HEADERS, tablefmt="github", disable_numparse=True)


def not_compared_lines(skipped: Iterable[Tuple[str, str]], rows: Callable[[int], str]) -> List[str]:
    """Checks left uncompared, said once per reason instead of once per row: 'not compared: Mem (GB)
    (16 rows), Inf time (fps) (16 rows): no reference value'. ``skipped``: (reason, column) per
    check; ``rows(n)``: how n rows are said. compare's tables and the HTML report's both use it."""
    by_reason: Dict[str, Dict[str, int]] = {}
    for reason, column in skipped:
        counts = by_reason.setdefault(reason, {})
        counts[column] = counts.get(column, 0) + 1
    return [f"not compared: {', '.join(f'{column} ({rows(n)})' for column, n in counts.items())}: {reason}"
            for reason, counts in by_reason.items()]


def _not_compared(checks: List[Check]) -> List[str]:
    """The skipped checks of compare's tables (JUnit keeps each)."""
    return not_compared_lines(((c.note, METRICS[c.metric][0]) for c in checks if c.verdict == "skipped"),
                              lambda n: f"{n} row" + ("s" if n != 1 else ""))


def _section_parts(checks: List[Check], method: str, tolerance: float, verdicts) -> Tuple[str, List[str], str]:
    """One section of verdicts as compare and run-all print it: the table of the checks made, one line
    per reason for those not made, the tally."""
    shown = [c for c in checks if c.verdict != "skipped"]
    return _table(shown, method, tolerance), _not_compared(checks), _tally(checks, verdicts)


def _tally(checks: List[Check], verdicts=VERDICTS) -> str:
    counts = {v: sum(c.verdict == v for c in checks) for v in verdicts}
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def _case_text(c: Check, method: str, tolerance: float) -> str:
    (row,) = _rows([c])
    if method == "ci":
        return (f"reference {row[3]}, mean {row[4]} (n={c.n}), 95% interval {_interval(c)}, "
                f"band {_band(c)}: {c.verdict}")
    return f"reference {row[3]}, reproduced {row[4]} (n={c.n}), delta {row[6]}: {c.verdict}"


def write_junit(path: Path, checks: List[Check], method: str = "tolerance", tolerance: float = 0.5,
                curves: Sequence = (), failing: Sequence[str] = FAILING) -> None:
    """``curves``: rows of ``report.row_curves`` (compare --curves), one testcase each, failed when diverged.
    ``failing``: the verdicts that fail (``failing_verdicts``: --min-seeds, --fail-on add to them)."""
    suite = ET.Element("testsuite", name="nlbench.compare", tests=str(len(checks)),
                       failures=str(sum(c.verdict in failing for c in checks)),
                       skipped=str(sum(c.verdict in ("missing", "skipped", "inconclusive") and c.verdict not in failing
                                       for c in checks)),
                       errors="0")
    for c in checks:
        source = "" if c.source == TRAINED else f"{c.source}."
        case = ET.SubElement(suite, "testcase", classname=f"nlbench.{c.profile}.{source}{c.recipe}", name=c.metric)
        text = _case_text(c, method, tolerance)
        if c.verdict in failing:
            ET.SubElement(case, "failure", message=_failure_line(c)).text = text
        elif c.verdict in ("missing", "skipped", "inconclusive"):
            ET.SubElement(case, "skipped", message=f"{c.verdict}: {c.note}")
        else:
            ET.SubElement(case, "system-out").text = text
    if curves:
        add_junit_cases(suite, curves)
    ET.indent(suite)
    atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n")


def _sections(summary: pd.DataFrame, refs: Dict[str, Reference], tolerance: float, method: str,
              assumed_std: float) -> List[Tuple[str, List[Check]]]:
    """(checkpoint source, checks) for each source that has results: trained first, then released."""
    out = []
    for source in (TRAINED, RELEASED):
        if of_source(summary, source).empty:
            continue
        checks = [c for ref in refs.values() for c in compare(summary, ref, tolerance, source)]
        out.append((source, apply_ci(checks, tolerance, assumed_std) if method == "ci" else checks))
    return out


# ----------------------------------------------------------------------------- the gate's own noise and demands


def apply_min_seeds(checks: List[Check], min_seeds: Optional[int]) -> List[Check]:
    """compare --method ci --min-seeds N: a trained row's mIoU verdict from fewer than N seeds becomes
    ``too-few-seeds``, a failure (not inconclusive). Released checkpoints (fixed weights: no seed
    spread), Mem/fps and missing or skipped checks are left as they are."""
    if not min_seeds:
        return checks
    out = []
    for c in checks:
        if c.source == RELEASED or c.metric in HARDWARE_METRICS or c.verdict not in CI_VERDICTS or c.n >= min_seeds:
            out.append(c)
            continue
        note = (f"{c.n} seed{'s' if c.n != 1 else ''}, fewer than --min-seeds {min_seeds} "
                f"(the interval alone says {c.verdict})")
        out.append(replace(c, verdict=TOO_FEW_SEEDS, note=note))
    return out


def failing_verdicts(min_seeds: Optional[int] = None, fail_on: Optional[str] = None) -> Tuple[str, ...]:
    """The verdicts that fail the gate: regressed and below, too-few-seeds with --min-seeds, and
    inconclusive with --fail-on inconclusive."""
    return FAILING + ((TOO_FEW_SEEDS,) if min_seeds else ()) + ((fail_on,) if fail_on else ())


def _strict_outcome(checks: List[Check], min_seeds: Optional[int], fail_on: Optional[str]) -> Optional[str]:
    """The FAIL line of the ci method with --min-seeds / --fail-on (None when nothing fails)."""
    parts = []
    below = sum(c.verdict in FAILING for c in checks)
    if below:
        parts.append(f"{below} check(s) below the band at 95% confidence (or Mem/fps regressed)")
    few = [c for c in checks if c.verdict == TOO_FEW_SEEDS]
    if few:
        rows = len({(c.recipe, c.profile) for c in few})
        parts.append(f"{len(few)} mIoU check(s) of {rows} row(s) with fewer than {min_seeds} seeds "
                     f"(--min-seeds {min_seeds}; most seeds of such a row: {max(c.n for c in few)})")
    undecided = sum(c.verdict == fail_on for c in checks) if fail_on else 0
    if undecided:
        parts.append(f"{undecided} check(s) {fail_on} (--fail-on {fail_on})")
    return f"FAIL: {'; '.join(parts)}" if parts else None


MAX_FAILURE_LINES = 8


def failure_lines(checks: List[Check], failing: Sequence[str]) -> List[str]:
    """One line per failing check (at most MAX_FAILURE_LINES): which row, by how much, against which
    band and where the band comes from; for a failing smoke row also how to re-freeze its baseline."""
    # The misses of a measured band first: they say the most; seed counts and undecided verdicts after.
    failed = sorted((c for c in checks if c.verdict in failing), key=lambda c: c.verdict not in FAILING)
    lines = [_failure_line(c) for c in failed[:MAX_FAILURE_LINES]]
    if len(failed) > MAX_FAILURE_LINES:
        lines.append(f"... and {len(failed) - MAX_FAILURE_LINES} more failing check(s): see the table")
    if any(c.profile == "smoke" and c.verdict in FAILING for c in failed):
        lines.append("the smoke baseline holds for the kind of machine its spread was measured on; on a new kind of "
                     "machine measure the smoke spread there and re-freeze it: "
                     f"{REFREEZE_COMMAND}")
    return lines


def _failure_line(c: Check) -> str:
    """The failing check in one line, with the ways its runs differed from the published setting."""
    text = _failure_text(c)
    return f"{text}; run differed from the published setting: {c.deviations}" if c.deviations else text


def _failure_text(c: Check) -> str:
    label, higher_better, digits = METRICS[c.metric]
    where = f"FAIL {c.profile} {c.recipe} {label}"
    if c.verdict == TOO_FEW_SEEDS or c.verdict == "inconclusive":
        return f"{where}: {c.verdict}: {c.note}"
    gap = abs(c.reproduced - c.reference)
    side = "below" if (c.reproduced < c.reference) else "above"
    band = f"±{c.band:.{digits}f}, from {c.band_from}"
    if c.verdict == "below":
        return (f"{where}: mean {c.reproduced:.{digits}f} of {c.n} seed(s), 95% interval {_interval(c)}, wholly under "
                f"the band {_band(c)} ({band}); {gap:.{digits}f} {side} the reference {c.reference:.{digits}f}")
    worse = "lower" if higher_better else "higher"
    return (f"{where}: {c.reproduced:.{digits}f} is {gap:.{digits}f} {side} the reference {c.reference:.{digits}f} "
            f"({worse} is worse), beyond its band {band}")


def _band_notes(refs: Dict[str, Reference], tolerance: float) -> List[str]:
    """Said once per reference: whose band the mIoU rows are held to."""
    lines = []
    for ref in refs.values():
        if ref.bands is not None:
            lines.append(f"profile {ref.profile}: each mIoU row is held to its own measured band ({ref.label}'s "
                         f"miou_band / miou_ms_flip_band: {SPREAD_MARGIN:g} x the largest deviation of its runs "
                         "from their mean, at least the default tolerance); rows without one keep the tolerance")
        elif ref.profile == "smoke":
            lines.append(f"profile smoke: {ref.label} carries no measured band (frozen before its spread was "
                         f"measured), so its rows keep the ±{tolerance} tolerance; `{REFREEZE_COMMAND}` re-freezes it")
    return lines


def _outcome(checks: List[Check], method: str) -> str:
    failing = [c for c in checks if c.verdict in FAILING]
    if method == "tolerance":
        measured = held_to_measured_bands(checks)
        band = "the band (the tolerance; a smoke row: its measured spread)" if measured else "the tolerance"
        return f"FAIL: {len(failing)} regression(s) beyond {band}" if failing else f"PASS: no regression beyond {band}"
    undecided = sum(c.verdict == "inconclusive" for c in checks)
    if failing:
        return f"FAIL: {len(failing)} check(s) below the band at 95% confidence (or Mem/fps regressed)"
    return f"PASS: nothing below the band at 95% confidence ({undecided} inconclusive)"


def _check_options(tolerance: float, method: str, assumed_std: float, min_seeds: Optional[int] = None,
                   fail_on: Optional[str] = None) -> None:
    check_number(tolerance, "--tolerance", "tolerance")
    if method not in METHODS:
        raise NLBenchError(f"expected one of {', '.join(METHODS)}, got {method!r}", key="--method")
    check_number(assumed_std, "--assumed-std", "std", strict=True)
    if min_seeds is not None and (isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 1):
        raise NLBenchError(f"expected a whole number of seeds >= 1, got {min_seeds!r}", key="--min-seeds")
    if fail_on is not None and fail_on not in FAIL_ON:
        raise NLBenchError(f"expected one of {', '.join(FAIL_ON)}, got {fail_on!r}", key="--fail-on")
    if (min_seeds is not None or fail_on is not None) and method != "ci":
        flag = "--min-seeds" if min_seeds is not None else "--fail-on"
        raise NLBenchError("only the ci method counts seeds and has inconclusive verdicts: add --method ci", key=flag)


@dataclass(frozen=True)
class Comparison:
    """What `nlbench compare` shows (its console text) and its exit status."""
    text: str
    code: int


def comparison(results: str = "results", tolerance: float = 0.5, report: Optional[str] = None,  # noqa: PLR0913
               junit: Optional[str] = None, reference: Optional[str] = None, method: str = "tolerance",
               assumed_std: float = SEED_STD_MIOU, curves: bool = False,
               curves_reference: str = "released", min_seeds: Optional[int] = None,
               fail_on: Optional[str] = None, *, warn: Warn) -> Comparison:
    """`nlbench compare`: the verdicts (and the reports written); status 1 on a regression, or with
    ``curves`` also when a row's training curves diverged from its reference curve (report/row_curves.py).
    ci only: ``min_seeds`` fails a row with fewer seeds, ``fail_on="inconclusive"`` fails inconclusive ones."""
    _check_options(tolerance, method, assumed_std, min_seeds, fail_on)
    collected = collect_or_warn(results, warn)
    summary = collected.summary
    profiles = sorted(summary["profile"].unique())
    refs = {ref.profile: ref for ref in [load_reference(reference)]} if reference else default_references(profiles)
    ignored = [p for p in profiles if p not in refs]
    header = (_header_lines(refs, tolerance, ignored, profiles) + _band_notes(refs, tolerance)
              + ([_ci_header(assumed_std)] if method == "ci" else []))
    sections = [(source, apply_min_seeds(checks, min_seeds))
                for source, checks in _sections(summary, refs, tolerance, method, assumed_std)]
    every = [c for _, checks in sections for c in checks]
    failing = failing_verdicts(min_seeds, fail_on)
    curve_rows, curve_text, diverged = (_curves_section(results, profiles, curves_reference, collected.newest, warn)
                                        if curves else ([], "", 0))
    strict = _strict_outcome(every, min_seeds, fail_on) if (min_seeds or fail_on) else None
    outcome = ((strict or _outcome(every, method))
               + (f"; FAIL: {diverged} row(s) whose curves diverged" if diverged else ""))
    verdicts = CI_TALLY + ((TOO_FEW_SEEDS,) if min_seeds else ()) if method == "ci" else VERDICTS
    console = ["\n".join(header)]
    body = ["# nlbench compare", ""] + [f"- {line}" for line in header]
    for source, checks in sections:
        table, folded, tally = _section_parts(checks, method, tolerance, verdicts)
        if source == RELEASED:
            console.append(f"\n{RELEASED_TITLE}")
            body += ["", "## Released checkpoints", "", RELEASED_TITLE]
        console.append("\n".join([table, *folded, tally]))
        body += ["", table, "", *[f"- {line}" for line in folded], *([""] if folded else []), tally]
    if curves:
        console.append(f"\n{curve_text}")
        body += ["", "## Curves", "", curve_text]
    reasons = failure_lines(every, failing)
    console.append("\n".join([*reasons, outcome]))
    if report:
        atomic_write_text(Path(report), "\n".join(body + ["", *[f"- {line}" for line in reasons], "",
                                                           f"**{outcome}**", ""]))
    if junit:
        write_junit(Path(junit), every, method, tolerance, curve_rows, failing)
    return Comparison("\n".join(console), 1 if any(c.verdict in failing for c in every) or diverged else 0)


def _curves_section(results: str, profiles: List[str], reference: str, chosen: Chosen, warn: Warn):
    """compare --curves: (rows, text, number diverged), with the guard's noise-model margins."""
    rows = curve_rows(Path(results), profiles, reference, chosen, warn)
    if not rows:
        return [], "curves: no training logs under the results folder's work/ to check", 0
    diverged = sum(r.verdict == "diverged" for r in rows)
    return rows, f"curves against each row's reference curve (docs/CURVES.md):\n\n{curve_lines(rows)}", diverged


def rows_verdicts(results, rows: Sequence[Tuple[str, str, str]], warn: Warn, tolerance: float = 0.5) -> str:
    """The verdicts of some rows, (recipe, profile, checkpoint source) each, as `nlbench compare` gives
    them by the tolerance method (what `run-all` ends with): their table, what was not compared and
    why, the tally and the outcome. Figures of other rows in the folder are left out. ``results``: the
    results folder, or its records already read (run-all's RecordStore)."""
    try:
        summary = collect_or_warn(results, warn).summary
    except NLBenchError as exc:  # e.g. every job failed before its first record: the state table says why
        return f"verdicts: none ({exc})"
    wanted = set(rows)
    summary = summary[[(r, p, s) in wanted for r, p, s in
                       zip(summary["recipe"], summary["profile"], summary["checkpoint_source"])]]
    if summary.empty:
        return "verdicts: no records of these rows yet"
    try:
        refs = default_references(sorted(summary["profile"].unique()))
    except NLBenchError as exc:
        return f"verdicts: none ({exc})"
    lines = [f"verdicts (nlbench compare, tolerance {tolerance}): profile {ref.profile} against {ref.label}"
             for ref in refs.values()]
    every: List[Check] = []
    for source, checks in _sections(summary, refs, tolerance, "tolerance", SEED_STD_MIOU):
        checks = [c for c in checks if (c.recipe, c.profile, c.source) in wanted]
        every += checks
        table, folded, tally = _section_parts(checks, "tolerance", tolerance, VERDICTS)
        lines += ([RELEASED_TITLE] if source == RELEASED else []) + [table, *folded, tally]
    return "\n".join(lines + [f"{_outcome(every, 'tolerance')} (informative here: `nlbench compare` is the gate)"])
