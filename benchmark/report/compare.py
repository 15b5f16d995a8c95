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
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
from tabulate import tabulate

from benchmark.catalog import PUBLISHED_CSV, RELEASED_COLUMNS, load_published, released_table
from benchmark.errors import NLBenchError, check_number
from benchmark.io.files import atomic_write_bytes, atomic_write_text
from benchmark.recipe import REPO_ROOT
from benchmark.report.collect import RELEASED, TRAINED, collect_or_warn, of_source
from benchmark.stats import CI_VERDICTS, SEED_STD_MIOU, ci_verdict, from_summary

SMOKE_REFERENCE = REPO_ROOT / "results" / "reference" / "smoke.csv"
PUBLISHED_LABEL = "published (MMSegmentation model zoo)"
PUBLISHED_DEVICE = "V100"  # docs/FIDELITY.md: fps and Mem of the published rows come from one V100 32G
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


@dataclass(frozen=True)
class Reference:
    label: str  # for people: where the numbers come from
    profile: str  # which records it is compared with
    device_class: Optional[str]  # where its Mem/fps were measured (None: unknown, never compared)
    table: pd.DataFrame  # load_published's frame: recipe -> miou, miou_ms_flip, mem_gb, fps


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


def device_class(name: Optional[str]) -> Optional[str]:
    """'Tesla V100-SXM2-32GB' -> 'V100', 'NVIDIA H100 80GB HBM3' -> 'H100', 'cpu' -> 'cpu'."""
    if not name or not isinstance(name, str) or ";" in name:  # several devices across seeds: no one class
        return None
    if name.lower() == "cpu":
        return "cpu"
    match = re.search(r"\b([A-Z]{1,2}\d{1,3}[A-Z]?)\b", name.upper())
    return match.group(1) if match else name


def load_reference(spec: str) -> Reference:
    """``published`` or a CSV in published.csv's columns (optional ``profile`` and ``device`` columns)."""
    if spec == "published":
        return Reference(PUBLISHED_LABEL, "full", PUBLISHED_DEVICE, load_published())
    path = Path(spec)
    table = load_published(path)
    extra = pd.read_csv(path, dtype=str, keep_default_na=False)

    def single(column: str, default: Optional[str]) -> Optional[str]:
        if column not in extra.columns:
            return default
        values = sorted(set(extra[column]) - {""})
        if len(values) > 1:
            raise NLBenchError(f"expected one value in the whole column, got {values}", path, column)
        return values[0] if values else default

    try:  # inside the checkout: a path that reads the same on every machine
        label = str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        label = str(path)
    return Reference(label, single("profile", "full"), device_class(single("device", None)), table)


def default_references(profiles: List[str]) -> Dict[str, Reference]:
    """Each profile's own reference: published for full, the committed smoke baseline for smoke."""
    refs = {}
    for profile in profiles:
        if profile == "full":
            refs[profile] = load_reference("published")
        elif profile == "smoke":
            if not SMOKE_REFERENCE.is_file():
                raise NLBenchError("the smoke baseline is missing; pass --reference", SMOKE_REFERENCE)
            refs[profile] = load_reference(str(SMOKE_REFERENCE))
    return refs


def write_baseline(results_dir, out_csv, profile: str = "smoke") -> Path:
    """Freeze a run's means as a reference CSV (how results/reference/smoke.csv was made):
    ``python -c "from benchmark.report.compare import write_baseline; write_baseline('results/demo',
    'results/reference/smoke.csv')"``. mIoU and mIoU(ms+flip) are kept to two decimals; Mem and fps
    are left empty, since on a CPU they describe the machine rather than the code."""
    from benchmark.report.collect import collect

    summary = of_source(collect(results_dir), TRAINED)  # a baseline is made of trained rows only
    rows = summary[summary["profile"] == profile].set_index("recipe")
    base = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    base = base[base["recipe"].isin(rows.index)].copy()
    base = base.drop(columns=[c for c in RELEASED_COLUMNS.values() if c in base.columns])  # full-size checkpoints
    if base.empty:
        raise NLBenchError(f"no {profile}-profile records to make a baseline from", results_dir)
    for column in ("miou", "miou_ms_flip"):
        means = rows[f"{column}_mean"]
        base[column] = [f"{means[r]:.2f}" if means[r] == means[r] else "" for r in base["recipe"]]
    base["mem_gb"], base["fps"] = "", ""
    base["profile"], base["device"] = profile, "cpu"
    atomic_write_text(Path(out_csv), base.to_csv(index=False))
    return Path(out_csv)


def _verdict(metric: str, ref: float, rep: float, tolerance: float) -> str:
    higher_better = METRICS[metric][1]
    allowed = abs(ref) * HARDWARE_REL_TOL if metric in HARDWARE_METRICS else tolerance
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
    # a reference CSV of one's own holds the numbers to compare with as they are.
    table = released_table(ref.table) if source == RELEASED and ref.label == PUBLISHED_LABEL else ref.table
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
            note = ""
            if reference != reference:
                verdict, note = "skipped", "no reference value"
            elif n == 0:
                verdict, note = "missing", "no record" if got is None else "not measured"
            elif metric in HARDWARE_METRICS and device_class(got["device_name"]) != ref.device_class:
                verdict = "skipped"
                note = (f"measured on {got['device_name']}, reference on {ref.device_class or 'an unknown device'}: "
                        "not comparable")
            else:
                verdict = _verdict(metric, reference, rep, tolerance)
            delta = rep - reference if verdict in ("reproduced", "better", "regressed") else nan
            if metric in RELEASED_COLUMNS and r.get("figure_note"):
                note = "; ".join(filter(None, [note, r["figure_note"]]))
            checks.append(Check(recipe, ref.profile, metric, reference, rep, std, n, delta, verdict, note, source))
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
        got = ci_verdict(from_summary(c.reproduced, c.std, c.n), c.reference, tolerance, assumed_std,
                         fixed_weights=released)
        note = _ci_note(c, got, released, tolerance)
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
                    _fmt(c.delta, digits, sign=True), c.verdict, c.note])
    return out


HEADERS = ["recipe", "profile", "metric", "reference", "reproduced", "n", "delta", "verdict", "note"]


def _header_lines(refs: Dict[str, Reference], tolerance: float, ignored: List[str], profiles: List[str]) -> List[str]:
    lines = []
    for ref in refs.values():
        if ref.profile not in profiles:
            lines.append(f"note: there are no {ref.profile}-profile records to compare with {ref.label}: "
                         "every row is missing")
        device = ref.device_class or "unknown (Mem and fps not compared)"
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


def _band(c: Check, tolerance: float) -> str:
    digits = METRICS[c.metric][2]
    if c.reference != c.reference:
        return "-"
    allowed = abs(c.reference) * HARDWARE_REL_TOL if c.metric in HARDWARE_METRICS else tolerance
    return f"[{c.reference - allowed:.{digits}f}, {c.reference + allowed:.{digits}f}]"


def _interval(c: Check) -> str:
    digits = METRICS[c.metric][2]
    return "-" if c.low != c.low else f"[{c.low:.{digits}f}, {c.high:.{digits}f}]"


def _ci_rows(checks: List[Check], tolerance: float) -> List[List[str]]:
    out = []
    for c, row in zip(checks, _rows(checks)):
        out.append([*row[:5], row[5], _interval(c), _band(c, tolerance), c.verdict, c.note])
    return out


CI_HEADERS = ["recipe", "profile", "metric", "reference", "mean ± std", "n", "95% interval", "band", "verdict", "note"]
RELEASED_TITLE = ("Released checkpoints: MMSegmentation's released weights of each row, evaluated and benchmarked "
                  "by nlbench, against the same reference (kept apart from the rows nlbench trained); mIoU against "
                  "the figures published for that checkpoint, which the note names where they are not the table's")


def _table(checks: List[Check], method: str, tolerance: float) -> str:
    if method == "ci":
        return tabulate(_ci_rows(checks, tolerance), headers=CI_HEADERS, tablefmt="github", disable_numparse=True)
    return tabulate(_rows(checks), headers=HEADERS, tablefmt="github", disable_numparse=True)


def _tally(checks: List[Check], verdicts=VERDICTS) -> str:
    counts = {v: sum(c.verdict == v for c in checks) for v in verdicts}
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def _case_text(c: Check, method: str, tolerance: float) -> str:
    (row,) = _rows([c])
    if method == "ci":
        return (f"reference {row[3]}, mean {row[4]} (n={c.n}), 95% interval {_interval(c)}, "
                f"band {_band(c, tolerance)}: {c.verdict}")
    return f"reference {row[3]}, reproduced {row[4]} (n={c.n}), delta {row[6]}: {c.verdict}"


def write_junit(path: Path, checks: List[Check], method: str = "tolerance", tolerance: float = 0.5,
                curves: Sequence = ()) -> None:
    """``curves``: rows of ``report.curves`` (compare --curves), one testcase each, failed when diverged."""
    suite = ET.Element("testsuite", name="nlbench.compare", tests=str(len(checks)),
                       failures=str(sum(c.verdict in FAILING for c in checks)),
                       skipped=str(sum(c.verdict in ("missing", "skipped", "inconclusive") for c in checks)),
                       errors="0")
    for c in checks:
        source = "" if c.source == TRAINED else f"{c.source}."
        case = ET.SubElement(suite, "testcase", classname=f"nlbench.{c.profile}.{source}{c.recipe}", name=c.metric)
        text = _case_text(c, method, tolerance)
        if c.verdict in FAILING:
            ET.SubElement(case, "failure", message=text).text = text
        elif c.verdict in ("missing", "skipped", "inconclusive"):
            ET.SubElement(case, "skipped", message=f"{c.verdict}: {c.note}")
        else:
            ET.SubElement(case, "system-out").text = text
    if curves:
        from benchmark.report.curves import add_junit_cases

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


def _outcome(checks: List[Check], method: str) -> str:
    failing = [c for c in checks if c.verdict in FAILING]
    if method == "tolerance":
        return (f"FAIL: {len(failing)} regression(s) beyond the tolerance" if failing
                else "PASS: no regression beyond the tolerance")
    undecided = sum(c.verdict == "inconclusive" for c in checks)
    if failing:
        return f"FAIL: {len(failing)} check(s) below the band at 95% confidence (or Mem/fps regressed)"
    return f"PASS: nothing below the band at 95% confidence ({undecided} inconclusive)"


def _check_options(tolerance: float, method: str, assumed_std: float) -> None:
    check_number(tolerance, "--tolerance", "tolerance")
    if method not in METHODS:
        raise NLBenchError(f"expected one of {', '.join(METHODS)}, got {method!r}", key="--method")
    check_number(assumed_std, "--assumed-std", "std", strict=True)


def compare_command(results: str = "results", tolerance: float = 0.5, report: Optional[str] = None,
                    junit: Optional[str] = None, reference: Optional[str] = None, method: str = "tolerance",
                    assumed_std: float = SEED_STD_MIOU, curves: bool = False,
                    curves_reference: str = "released") -> int:
    """`nlbench compare`: print the verdicts (and write the reports); exit 1 on a regression, or with
    ``curves`` also when a row's training curves diverged from its reference curve (report/curves.py)."""
    _check_options(tolerance, method, assumed_std)
    summary = collect_or_warn(results)
    profiles = sorted(summary["profile"].unique())
    refs = {ref.profile: ref for ref in [load_reference(reference)]} if reference else default_references(profiles)
    ignored = [p for p in profiles if p not in refs]
    header = _header_lines(refs, tolerance, ignored, profiles) + ([_ci_header(assumed_std)] if method == "ci" else [])
    sections = _sections(summary, refs, tolerance, method, assumed_std)
    every = [c for _, checks in sections for c in checks]
    curve_rows, curve_text, diverged = (_curves_section(results, profiles, curves_reference)
                                        if curves else ([], "", 0))
    outcome = _outcome(every, method) + (f"; FAIL: {diverged} row(s) whose curves diverged" if diverged else "")
    verdicts = CI_TALLY if method == "ci" else VERDICTS
    print("\n".join(header))
    body = ["# nlbench compare", ""] + [f"- {line}" for line in header]
    for source, checks in sections:
        table, tally = _table(checks, method, tolerance), _tally(checks, verdicts)
        if source == RELEASED:
            print(f"\n{RELEASED_TITLE}")
            body += ["", "## Released checkpoints", "", RELEASED_TITLE]
        print(f"{table}\n{tally}")
        body += ["", table, "", tally]
    if curves:
        print(f"\n{curve_text}")
        body += ["", "## Curves", "", curve_text]
    print(outcome)
    if report:
        atomic_write_text(Path(report), "\n".join(body + ["", f"**{outcome}**", ""]))
    if junit:
        write_junit(Path(junit), every, method, tolerance, curve_rows)
    return 1 if any(c.verdict in FAILING for c in every) or diverged else 0


def _curves_section(results: str, profiles: List[str], reference: str):
    """compare --curves: (rows, text, number diverged), with the guard's noise-model margins."""
    from benchmark.report.curves import curve_lines, curve_rows

    rows = curve_rows(Path(results), profiles, reference)
    if not rows:
        return [], "curves: no training logs under the results folder's work/ to check", 0
    diverged = sum(r.verdict == "diverged" for r in rows)
    return rows, f"curves against each row's reference curve (docs/CURVES.md):\n\n{curve_lines(rows)}", diverged
