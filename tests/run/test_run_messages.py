"""What a job prints for people: figures rounded as the tables print them."""

from benchmark.run.job import _bench_figures


def test_bench_line_is_rounded_as_the_tables_are():
    line = _bench_figures({"fps": 76.7412345, "mem_gb": 0.7033805847167969, "mem_kind": "peak_rss"})
    assert line == "76.74 fps, Mem 0.7 GB (peak_rss)"
    assert _bench_figures({"fps": 2.0, "mem_gb": None}) == "2.00 fps, Mem not measured"
