"""Bench records with both measurement settings: tables show published and fast side by side, and
compare gates only the published figures, never CPU figures against the V100 ones."""

import itertools
import re

from report_helpers import ROW, make_record

from benchmark.cli import main as cli
from benchmark.report.collect import collect
from benchmark.report.compare import compare
from benchmark.report.references import load_reference
from benchmark.run.records import write_record

V100 = "Tesla V100-SXM2-32GB"


def table_lines(text: str, dataset: str) -> list:
    """The lines of the markdown table under '### dataset'."""
    lines = text.split(f"### {dataset}\n", 1)[1].strip().splitlines()
    return list(itertools.takewhile(lambda line: line.startswith("|"), lines))


def cells(line: str) -> list:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def fast(fps: float, mem_gb: float) -> dict:
    return {"fps": fps, "mem_gb": mem_gb, "mem_kind": "peak_rss", "attention": "sdpa", "amp": None, "tf32": True,
            "cudnn_benchmark": True, "channels_last": True, "compile": False, "ddp": False,
            "grad_set_to_none": True, "softmax_in_timer": False, "train_step_s": 0.5}


def write_bench_row(results, device: str, fps: float, mem_gb: float, fast_figures: dict, seed: int = 0) -> None:
    for kind in ("train", "eval"):
        write_record(results, make_record(kind, miou=78.0, device=device, seed=seed))
    bench = make_record("bench", fps=fps, mem_gb=mem_gb, device=device, seed=seed)
    bench["fast"], bench["train_step_s"] = fast_figures, 1.0
    write_record(results, bench)


def test_tables_show_the_published_columns_then_the_fast_ones_with_their_ratio(tmp_path):
    results = tmp_path / "results"
    write_bench_row(results, "cpu", fps=0.02, mem_gb=6.0, fast_figures=fast(0.04, 3.0))
    readme = tmp_path / "README.md"
    assert cli(["tables", "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    table = table_lines(text, "Cityscapes")
    header = cells(table[0])
    assert header[:10] == ["Method", "Backbone", "Crop Size", "Lr schd", "Mem (GB)", "Inf time (fps)", "mIoU",
                           "mIoU(ms+flip)", "Mem (fast)", "fps (fast)"]
    row = next(line for line in table if ROW in line)
    values = cells(row)
    assert values[4:6] == ["6.0", "0.02"]  # the seed's columns: the published setting
    assert values[8:10] == ["3.0 (0.50x)", "0.04 (2.00x)"]  # fast, and its ratio to published
    assert "`published` setting" in text and "`fast` setting" in text
    summary = collect(results).summary
    assert summary.loc[0, "fps_fast_mean"] == 0.04 and summary.loc[0, "train_step_s_fast_mean"] == 0.5
    assert summary.loc[0, "train_step_s_mean"] == 1.0


def test_tables_without_fast_figures_keep_the_seed_columns(tmp_path):
    results = tmp_path / "results"
    for kind in ("train", "eval", "bench"):
        write_record(results, make_record(kind, miou=78.0))
    readme = tmp_path / "README.md"
    assert cli(["tables", "--results", str(results), "--readme", str(readme)]) == 0
    assert "Mem (fast)" not in readme.read_text()


def test_compare_gates_published_figures_only_and_never_cpu_against_v100(tmp_path):
    ref = load_reference("published")  # R-50 Cityscapes 40k: 7.4 GB, 2.72 fps on a V100
    cpu, gpu = tmp_path / "cpu", tmp_path / "v100"
    # CPU figures, published and fast: shown, never judged against the V100 ones.
    write_bench_row(cpu, "cpu", fps=0.02, mem_gb=6.0, fast_figures=fast(0.05, 2.0))
    checks = {c.metric: c for c in compare(collect(cpu).summary, ref, 0.5) if c.recipe == ROW}
    for metric in ("fps", "mem_gb"):
        assert checks[metric].verdict == "skipped" and "not comparable" in checks[metric].note
    # A V100 record: its published-setting figures are gated; the far better fast ones change nothing.
    write_bench_row(gpu, V100, fps=2.70, mem_gb=7.5, fast_figures=fast(30.0, 1.0))
    checks = {c.metric: c for c in compare(collect(gpu).summary, ref, 0.5) if c.recipe == ROW}
    assert checks["fps"].verdict == "reproduced" and checks["fps"].reproduced == 2.70
    assert checks["mem_gb"].verdict == "reproduced" and checks["mem_gb"].reproduced == 7.5
    write_bench_row(gpu, V100, fps=1.0, mem_gb=7.5, fast_figures=fast(30.0, 1.0), seed=1)  # mean 1.85 fps
    summary = collect(gpu).summary
    assert {c.metric: c for c in compare(summary, ref, 0.5) if c.recipe == ROW}["fps"].verdict == "regressed"


def test_html_report_shows_the_fast_columns_with_their_ratio_and_no_verdict(tmp_path):
    results = tmp_path / "results"
    write_bench_row(results, "cpu", fps=0.02, mem_gb=6.0, fast_figures=fast(0.04, 3.0))
    out = tmp_path / "report"
    assert cli(["report", "--results", str(results), "--out", str(out)]) == 0
    index = (out / "index.html").read_text()
    row_page = next((out / "rows").rglob(f"{ROW}.html")).read_text()
    for page in (index, row_page):
        page = page.split('<table class="results">', 1)[1].split("</table>", 1)[0]
        headers = re.findall(r'<th class="num">([^<]+)</th>', page)
        assert headers == ["Lr schd", "Mem (GB)", "Inf time (fps)", "mIoU", "mIoU(ms+flip)", "Mem (fast)",
                           "fps (fast)"]
        fast_cells = re.findall(r'<td class="fig num (mem_gb_fast|fps_fast)"><span class="value">([^<]+)</span>\s*'
                                r'(<span class="check)?', page)
        assert [(m, v) for m, v, _ in fast_cells] == [("mem_gb_fast", "3.0 (0.50x)"), ("fps_fast", "0.04 (2.00x)")]
        assert all(not check for _, _, check in fast_cells)  # nlbench's own figures: never judged
    assert "<code>fast</code> setting" in index


def test_html_report_without_fast_figures_has_no_fast_columns(tmp_path):
    results = tmp_path / "results"
    for kind in ("train", "eval", "bench"):
        write_record(results, make_record(kind, miou=78.0))
    out = tmp_path / "report"
    assert cli(["report", "--results", str(results), "--out", str(out)]) == 0
    assert "(fast)" not in (out / "index.html").read_text()
