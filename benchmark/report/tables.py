"""`nlbench tables`: markdown tables in the published table's format, filled from the records.

The published README (MMSeg's nonlocal_net) has one table per dataset with the columns below, padded
the way mdformat pads them; the alignment of mIoU(ms+flip) differs between its tables, so it is kept
per dataset. Generated text is deterministic (no timestamps), so `--check` can tell a stale README.
Results on MMSeg's released checkpoints get a table of their own ("Published vs released checkpoints");
they never enter the tables of rows nlbench trained.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

import pandas as pd

from benchmark.catalog import release_links
from benchmark.recipe import RECIPES_DIR, REPO_ROOT
from benchmark.report.collect import RELEASED, TRAINED, format_stat, of_source

HEADERS = ["Method", "Backbone", "Crop Size", "Lr schd", "Mem (GB)", "Inf time (fps)", "mIoU", "mIoU(ms+flip)",
           "config", "download"]
# "l" or "r" per column, per dataset, as in the published tables.
ALIGN = {
    "Cityscapes": "lllrllrlll",
    "ADE20K": "lllrllrrll",
    "Pascal VOC 2012 + Aug": "lllrllrrll",
}
# Reproduced tables add these after mIoU(ms+flip) when any record has fast-setting figures.
FAST_HEADERS = ["Mem (fast)", "fps (fast)"]
FAST_NOTE = ("Mem (GB) and Inf time (fps) are measured in the `published` setting (explicit attention, fp32 "
             "without TF32, cudnn benchmark off, Mem inside DDP with gradients zeroed in place, softmax timed); "
             "Mem (fast) and fps (fast) in nlbench's `fast` setting (SDPA, bf16 where the device has it, "
             "channels_last, TF32, Mem without DDP), each with its ratio to the published-setting figure "
             "(fps: the speed-up; Mem: the fraction). See docs/BENCHMARKS.md.")
START = "<!-- nlbench:tables:start -->"
END = "<!-- nlbench:tables:end -->"
PROFILE_ORDER = {"full": 0, "smoke": 1}
PROFILE_NOTES = {
    "full": "the recipes as published (full size, real datasets).",
    "smoke": "a quarter-width ResNet-18 trunk with thin heads (wider for the R-101 rows), one CPU thread "
             "per run, synthetic data in each dataset's layout, small crops and schedules that grow with "
             "the published ones (ADE20K 80k/160k -> 240/260 iterations, Cityscapes 40k/80k -> 440/480, "
             "VOC 20k/40k -> 400/440; "
             "Backbone, Crop Size and Lr schd below name the published row, not the smoke settings). It checks "
             "that every stage of every row runs; its numbers are **not** comparable with the published "
             "full-size results (rows say `NonLocal (smoke)`; `nlbench compare` gates them against "
             "`results/reference/smoke.csv`).",
}


# ----------------------------------------------------------------------------- markdown


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A pipe table padded to the widest cell of each column, alignment row as mdformat writes it."""
    # At least 3 wide: a delimiter cell needs a dash besides its colon to be valid GFM.
    widths = [max([3, len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |"] + [line(r) for r in rows])


def _links(recipe_name: str, link_from: Path) -> List[str]:
    """The config and download cells: the recipe file, MMSeg's released checkpoint and its log."""
    recipe_file = RECIPES_DIR / f"{recipe_name}.yaml"
    if link_from.resolve().is_relative_to(REPO_ROOT):
        rel = os.path.relpath(recipe_file, link_from).replace(os.sep, "/")
    else:  # a results folder outside the checkout: the path in the repository, the same on every machine
        rel = recipe_file.relative_to(REPO_ROOT).as_posix()
    config = f"[{recipe_name}]({rel})"
    links = release_links(recipe_name)
    if links is None:
        return [config, "-"]
    model_url, log_url = links
    return [config, f"[model]({model_url}) &#124; [log]({log_url})"]


def _text(value: str) -> str:
    return value if value != "" else "-"


def published_tables(published: pd.DataFrame, link_from: Path = REPO_ROOT) -> Dict[str, str]:
    """Dataset -> the published table as the seed README prints it."""
    tables: Dict[str, str] = {}
    for dataset, group in published.groupby("dataset", sort=False):
        rows = []
        for _, p in group.iterrows():
            rows.append([p["method"], p["backbone"], p["crop_size"], str(p["lr_schd"]), _text(p["mem_gb_text"]),
                         _text(p["fps_text"]), _text(p["miou_text"]), _text(p["miou_ms_flip_text"]),
                         *_links(p["recipe"], link_from)])
        tables[dataset] = markdown_table(HEADERS, rows, ALIGN.get(dataset, "lllrllrrll"))
    return tables


def _profile_rank(profile: str) -> tuple:
    return (PROFILE_ORDER.get(profile, 2), profile)


def _stat(row: pd.Series, metric: str, digits: int) -> str:
    return format_stat(row[f"{metric}_mean"], row[f"{metric}_std"], int(row[f"{metric}_n"]), digits)


def has_fast(summary: pd.DataFrame) -> bool:
    """Whether any row has figures of the fast setting (then the tables show its columns)."""
    return bool((summary.get("fps_fast_n", pd.Series(dtype=float)) > 0).any())


def fast_cell(row: pd.Series, metric: str, digits: int) -> str:
    """The fast setting's figure with its ratio to the published-setting one: '5.43 (2.00x)'."""
    text = _stat(row, f"{metric}_fast", digits)
    fast, base = row[f"{metric}_fast_mean"], row[f"{metric}_mean"]
    if text != "-" and base == base and base > 0:
        text += f" ({fast / base:.2f}x)"
    return text


def reproduced_tables(summary: pd.DataFrame, published: pd.DataFrame, link_from: Path = REPO_ROOT) -> Dict[str, str]:
    """Dataset -> the seed-format table filled with reproduced means (± std over seeds); with fast
    figures, Mem (fast) and fps (fast) columns after mIoU(ms+flip)."""
    tables: Dict[str, str] = {}
    by_recipe = {name: grp for name, grp in summary.groupby("recipe")}
    fast = has_fast(summary)
    headers = HEADERS[:8] + FAST_HEADERS + HEADERS[8:] if fast else HEADERS
    for dataset, group in published.groupby("dataset", sort=False):
        rows = []
        for _, p in group.iterrows():
            found = by_recipe.get(p["recipe"])
            if found is None:
                continue
            for _, r in sorted(found.iterrows(), key=lambda item: _profile_rank(item[1]["profile"])):
                method = p["method"] if r["profile"] == "full" else f"{p['method']} ({r['profile']})"
                extra = [fast_cell(r, "mem_gb", 1), fast_cell(r, "fps", 2)] if fast else []
                rows.append([method, p["backbone"], p["crop_size"], str(p["lr_schd"]), _stat(r, "mem_gb", 1),
                             _stat(r, "fps", 2), _stat(r, "miou", 2), _stat(r, "miou_ms_flip", 2), *extra,
                             *_links(p["recipe"], link_from)])
        if rows:
            align = ALIGN.get(dataset, "lllrllrrll")
            tables[dataset] = markdown_table(headers, rows, align[:8] + "ll" + align[8:] if fast else align)
    return tables


def _delta(reproduced: float, published: float, comparable: bool) -> str:
    if not comparable:
        return "n/a"
    if reproduced != reproduced or published != published:
        return "-"
    return f"{reproduced - published:+.2f}"


def side_by_side(summary: pd.DataFrame, published: pd.DataFrame) -> str:
    """Published beside reproduced (mean ± std, n) with the difference, for every row with records."""
    headers = ["Dataset", "Backbone", "Crop Size", "Lr schd", "Profile", "mIoU published", "mIoU reproduced", "n",
               "Δ mIoU", "mIoU(ms+flip) published", "mIoU(ms+flip) reproduced", "Δ ms+flip"]
    rows = []
    for recipe, p in published.iterrows():
        found = summary[summary["recipe"] == recipe]
        for _, r in sorted(found.iterrows(), key=lambda item: _profile_rank(item[1]["profile"])):
            full = r["profile"] == "full"  # only full-size results may be set against the published ones
            rows.append([p["dataset"], p["backbone"], p["crop_size"], str(p["lr_schd"]), r["profile"],
                         _text(p["miou_text"]), _stat(r, "miou", 2), str(int(r["n_seeds"])),
                         _delta(r["miou_mean"], p["miou"], full), _text(p["miou_ms_flip_text"]),
                         _stat(r, "miou_ms_flip", 2), _delta(r["miou_ms_flip_mean"], p["miou_ms_flip"], full)])
    return markdown_table(headers, rows, "lllrlrrrrrrr")


def released_side_by_side(released: pd.DataFrame, published: pd.DataFrame) -> str:
    """Published beside the released checkpoints' results (mean ± std, n), with Mem and fps as measured."""
    headers = ["Dataset", "Backbone", "Crop Size", "Lr schd", "Profile", "mIoU published", "mIoU released ckpt", "n",
               "Δ mIoU", "mIoU(ms+flip) published", "mIoU(ms+flip) released ckpt", "Δ ms+flip", "Mem (GB)",
               "Inf time (fps)", "device", "checkpoint sha256"]
    rows = []
    for recipe, p in published.iterrows():
        found = released[released["recipe"] == recipe]
        for _, r in sorted(found.iterrows(), key=lambda item: _profile_rank(item[1]["profile"])):
            full = r["profile"] == "full"
            sha = str(r["checkpoint_sha256"] or "-")
            rows.append([p["dataset"], p["backbone"], p["crop_size"], str(p["lr_schd"]), r["profile"],
                         _text(p["miou_text"]), _stat(r, "miou", 2), str(int(r["n_seeds"])),
                         _delta(r["miou_mean"], p["miou"], full), _text(p["miou_ms_flip_text"]),
                         _stat(r, "miou_ms_flip", 2), _delta(r["miou_ms_flip_mean"], p["miou_ms_flip"], full),
                         _stat(r, "mem_gb", 1), _stat(r, "fps", 2), str(r["device_name"] or "-"),
                         sha if ";" in sha else sha[:12]])
    return markdown_table(headers, rows, "lllrlrrrrrrrrrll")


RELEASED_NOTE = ("MMSegmentation's released checkpoint of each row, evaluated and benchmarked by nlbench "
                 "(`nlbench run-all --checkpoint released`; no training). These results are kept apart from the "
                 "rows nlbench trained and never averaged with them; the sha256 is that of the evaluated file.")


def _distinct_text(summary: pd.DataFrame, profile: str, column: str, default: str) -> str:
    values = summary.loc[summary["profile"] == profile, column].dropna().unique().tolist()
    return ", ".join(sorted(str(v) for v in values)) or default


def results_markdown(summary: pd.DataFrame, published: pd.DataFrame, results_label: str, link_from: Path) -> str:
    """The generated block (without markers): notes per profile, one table per dataset, side by side;
    then the released checkpoints' table when there are such results."""
    parts = [f"<!-- generated by `nlbench tables --results {results_label}`; edit the records, not this text -->", ""]
    released = of_source(summary, RELEASED)
    summary = of_source(summary, TRAINED)
    if not summary.empty:
        parts += _trained_markdown(summary, published, link_from)
    if not released.empty:
        parts += ["### Published vs released checkpoints", "", RELEASED_NOTE, "",
                  released_side_by_side(released, published), ""]
        if (released["profile"] != "full").any():
            parts += ["Δ is the released checkpoint's result minus published, given only for full-profile rows "
                      "(`n/a`: not comparable).", ""]
    return "\n".join(parts)


def _trained_markdown(summary: pd.DataFrame, published: pd.DataFrame, link_from: Path) -> List[str]:
    parts: List[str] = []
    for profile in sorted(summary["profile"].unique(), key=_profile_rank):
        note = PROFILE_NOTES.get(profile, "a custom recipe profile; not comparable with the published results.")
        devices = _distinct_text(summary, profile, "device_name", "unknown device")
        mem_kinds = _distinct_text(summary, profile, "mem_kind", "not recorded")
        parts.append(f"**Profile `{profile}`**: {note} Mem and fps measured on: {devices}; Mem is {mem_kinds} "
                     "(the published ones: one V100, peak CUDA memory allocated in training).")
        parts.append("")
    if has_fast(summary):
        parts += [FAST_NOTE, ""]
    parts.append("Values are the mean over seeds, ± the standard deviation when there are several; "
                 "`-` means not measured.")
    parts.append("")
    for dataset, table in reproduced_tables(summary, published, link_from).items():
        parts += [f"### {dataset}", "", table, ""]
    parts += ["### Published vs reproduced", "", side_by_side(summary, published), ""]
    if (summary["profile"] != "full").any():
        parts += ["Δ is reproduced minus published, given only for full-profile rows (`n/a`: not comparable).", ""]
    return parts


def splice(readme_text: str, block: str) -> str:
    """Replace what lies between the markers (adding a Results section at the end when they are absent)."""
    wrapped = f"{START}\n{block.rstrip()}\n{END}"
    start, end = readme_text.find(START), readme_text.find(END)
    if start == -1 or end == -1 or end < start:
        return readme_text.rstrip("\n") + f"\n\n## Results\n\n{wrapped}\n"
    return readme_text[:start] + wrapped + readme_text[end + len(END):]

