"""`nlbench compare`: reproduced vs reference numbers per row and metric; exit 1 on a regression.

The reference of full-profile records is the published table (results/published.csv); smoke records
are never set against it (a ResNet-18 on synthetic data says nothing about a full-size row) but against
a committed smoke baseline, results/reference/smoke.csv, in the same columns plus ``profile`` and
``device``. Mem and fps depend on the hardware: they are compared only when the records were measured on
the reference's device class (the published ones: one V100), and the output says so.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd
from tabulate import tabulate

from benchmark.catalog import PUBLISHED_CSV, load_published
from benchmark.errors import NLBenchError
from benchmark.io.files import atomic_write_bytes, atomic_write_text
from benchmark.recipe import REPO_ROOT
from benchmark.report.collect import collect_or_warn

SMOKE_REFERENCE = REPO_ROOT / "results" / "reference" / "smoke.csv"
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
        return Reference("published (MMSegmentation model zoo)", "full", PUBLISHED_DEVICE, load_published())
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

    summary = collect(results_dir)
    rows = summary[summary["profile"] == profile].set_index("recipe")
    base = pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)
    base = base[base["recipe"].isin(rows.index)].copy()
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


def compare(summary: pd.DataFrame, ref: Reference, tolerance: float) -> List[Check]:
    """One Check per (reference row, metric)."""
    rows = summary[summary["profile"] == ref.profile].set_index("recipe")
    checks = []
    for recipe, r in ref.table.iterrows():
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
            checks.append(Check(recipe, ref.profile, metric, reference, rep, std, n, delta, verdict, note))
    return checks


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
    for profile in ignored:
        lines.append(f"profile {profile}: not compared (no reference for it; smoke records are never compared "
                     "with the published full-size numbers)")
    return lines


def _tally(checks: List[Check]) -> str:
    counts = {v: sum(c.verdict == v for c in checks) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def write_junit(path: Path, checks: List[Check], curves: Sequence = ()) -> None:
    """``curves``: rows of ``report.curves`` (compare --curves), one testcase each, failed when diverged."""
    suite = ET.Element("testsuite", name="nlbench.compare", tests=str(len(checks)),
                       failures=str(sum(c.verdict == "regressed" for c in checks)),
                       skipped=str(sum(c.verdict in ("missing", "skipped") for c in checks)), errors="0")
    for c, row in zip(checks, _rows(checks)):
        case = ET.SubElement(suite, "testcase", classname=f"nlbench.{c.profile}.{c.recipe}", name=c.metric)
        text = f"reference {row[3]}, reproduced {row[4]} (n={c.n}), delta {row[6]}: {c.verdict}"
        if c.verdict == "regressed":
            ET.SubElement(case, "failure", message=text).text = text
        elif c.verdict in ("missing", "skipped"):
            ET.SubElement(case, "skipped", message=f"{c.verdict}: {c.note}")
        else:
            ET.SubElement(case, "system-out").text = text
    if curves:
        from benchmark.report.curves import add_junit_cases

        add_junit_cases(suite, curves)
    ET.indent(suite)
    atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n")


def compare_command(results: str = "results", tolerance: float = 0.5, report: Optional[str] = None,
                    junit: Optional[str] = None, reference: Optional[str] = None, curves: bool = False) -> int:
    """`nlbench compare`: print the verdicts (and write the reports); exit 1 on a regression, or with
    ``curves`` also when a row's training curves diverged from its reference curve (report/curves.py)."""
    if tolerance < 0:
        raise NLBenchError(f"expected a tolerance >= 0, got {tolerance}", key="--tolerance")
    summary = collect_or_warn(results)
    profiles = sorted(summary["profile"].unique())
    refs = {ref.profile: ref for ref in [load_reference(reference)]} if reference else default_references(profiles)
    ignored = [p for p in profiles if p not in refs]
    checks = [c for ref in refs.values() for c in compare(summary, ref, tolerance)]
    header = _header_lines(refs, tolerance, ignored, profiles)
    table = tabulate(_rows(checks), headers=HEADERS, tablefmt="github", disable_numparse=True)
    regressed = [c for c in checks if c.verdict == "regressed"]
    curve_rows, curve_text, diverged = _curves_section(results, profiles, tolerance) if curves else ([], "", 0)
    outcome = (f"FAIL: {len(regressed)} regression(s) beyond the tolerance" if regressed
               else "PASS: no regression beyond the tolerance")
    outcome += f"; FAIL: {diverged} row(s) whose curves diverged" if diverged else ""
    print("\n".join(header))
    print(table)
    print(f"{_tally(checks)}\n{curve_text}{outcome}")
    if report:
        body = ["# nlbench compare", ""] + [f"- {line}" for line in header]
        body += ["", table, "", f"{_tally(checks)}", ""]
        body += ["## Curves", "", curve_text] if curves else []
        body += [f"**{outcome}**", ""]
        atomic_write_text(Path(report), "\n".join(body))
    if junit:
        write_junit(Path(junit), checks, curve_rows)
    return 1 if regressed or diverged else 0


def _curves_section(results: str, profiles: List[str], tolerance: float):
    """compare --curves: (rows, text for the output, number diverged); the margin at a row's last eval
    point is the compare tolerance."""
    from benchmark.report.curves import curve_lines, curve_rows

    rows = curve_rows(Path(results), profiles, tolerance)
    if not rows:
        return [], "curves: no training logs under the results folder's work/ to check\n", 0
    diverged = sum(r.verdict == "diverged" for r in rows)
    return rows, f"curves against each row's reference curve (docs/CURVES.md):\n\n{curve_lines(rows)}\n\n", diverged
