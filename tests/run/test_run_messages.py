"""What a job prints for people: figures rounded as the tables print them."""

from benchmark.run.job import _bench_figures


def test_bench_line_is_rounded_as_the_tables_are():
    line = _bench_figures({"fps": 76.7412345, "mem_gb": 0.7033805847167969, "mem_kind": "peak_rss"})
    assert line == "76.74 fps, Mem 0.7 GB (peak_rss)"
    assert _bench_figures({"fps": 2.0, "mem_gb": None}) == "2.00 fps, Mem not measured"


def test_a_job_that_fails_with_an_unexpected_error_prints_one_line(tmp_path):
    """`python -m benchmark.run JOB.json` (what the local launcher starts): an error that is not an
    NLBenchError (here a job file without its keys) is one line and exit 1; the traceback only with
    NLBENCH_DEBUG=1 (a failing stage's traceback is in its job.log)."""
    import os
    import subprocess
    import sys

    from conftest import REPO, cli_env

    job_file = tmp_path / "job.json"
    job_file.write_text('{"recipe_resolved": {}}')

    def run(**env):
        return subprocess.run([sys.executable, "-m", "benchmark.run", str(job_file)], capture_output=True, text=True,
                              cwd=REPO, env={**cli_env(), **env}, timeout=120)

    plain = run()
    assert plain.returncode == 1 and "Traceback" not in plain.stderr, plain.stderr
    assert plain.stderr.startswith("nlbench job: error: KeyError") and len(plain.stderr.strip().splitlines()) == 1
    debug = run(NLBENCH_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and os.sep in debug.stderr
