"""Statistics over seeds and the ci verdicts, against intervals worked out by hand.

Critical values of Student's t (two-sided 95%, from printed tables): t(0.975, 2) = 4.3027,
t(0.975, 3) = 3.1824, t(0.975, 4) = 2.7764, t(0.975, 5) = 2.5706, t(0.975, 6) = 2.4469.
"""

from __future__ import annotations

import math

import pytest
from report_helpers import ROW, write_row

from benchmark.cli import main as cli
from benchmark.launch.plan import seed_budget
from benchmark.stats import ci_verdict, decide, half_width, seed_stats, seeds_for_half_width, seeds_to_decide

PUBLISHED = 78.24  # R-50-D8 Cityscapes 512x1024 40k
TOL = 0.5  # band [77.74, 78.74]


def test_three_seeds_by_hand():
    # mean 77.0; deviations -0.6, 0, 0.6: s = sqrt(0.72 / 2) = 0.6; s/sqrt(3) = 0.34641;
    # h = 4.3027 * 0.34641 = 1.4905: [75.51, 78.49], which reaches across 77.74 -> inconclusive.
    s = seed_stats([76.4, 77.0, 77.6])
    assert (s.mean, s.n) == (pytest.approx(77.0), 3)
    assert s.std == pytest.approx(0.6)
    assert s.half_width == pytest.approx(1.4905, abs=1e-4)
    assert (s.low, s.high) == (pytest.approx(75.5095, abs=1e-4), pytest.approx(78.4905, abs=1e-4))
    got = ci_verdict(s, PUBLISHED, TOL)
    assert got.verdict == "inconclusive"
    # Below is decided once h < |77.0 - 78.24| - 0.5 = 0.74 at s = 0.6:
    # N=5: 2.7764 * 0.6 / sqrt(5) = 0.7450 (not yet); N=6: 2.5706 * 0.6 / sqrt(6) = 0.6297 -> 6 seeds.
    assert got.seeds_needed == 6 and not got.std_assumed


def test_the_verdict_moves_as_n_grows():
    # Five seeds spread as users reported (76.4-77.6): s = sqrt((0.36+0.09+0+0.09+0.36)/4) = 0.4743,
    # h = 2.7764 * 0.4743 / sqrt(5) = 0.5890: [76.41, 77.59], wholly under 77.74 -> below.
    five = seed_stats([76.4, 76.7, 77.0, 77.3, 77.6])
    assert five.std == pytest.approx(0.4743, abs=1e-4)
    assert five.half_width == pytest.approx(0.5890, abs=1e-4)
    assert ci_verdict(five, PUBLISHED, TOL).verdict == "below"
    # The same three values twice (six seeds): s = sqrt(1.44 / 5) = 0.5367, h = 2.5706 * 0.5367 / sqrt(6)
    # = 0.5632 -> [76.44, 77.56]: below, as the three-seed prediction (6 in all) said.
    six = seed_stats([76.4, 77.0, 77.6] * 2)
    assert six.half_width == pytest.approx(0.5632, abs=1e-4)
    assert ci_verdict(six, PUBLISHED, TOL).verdict == "below"
    # One seed: no interval; at the assumed std 0.5, h(4) = 3.1824 * 0.25 = 0.7956 > 0.74 and
    # h(5) = 2.7764 * 0.5 / sqrt(5) = 0.6208 < 0.74: 5 seeds in all.
    one = ci_verdict(seed_stats([77.0]), PUBLISHED, TOL)
    assert one.verdict == "inconclusive" and math.isnan(one.low)
    assert (one.seeds_needed, one.std_used, one.std_assumed) == (5, 0.5, True)


def test_reproduced_and_above_by_hand():
    # [78.0, 78.2, 78.2, 78.4]: s = sqrt(0.08 / 3) = 0.16330, h = 3.1824 * 0.08165 = 0.2598:
    # [77.94, 78.46] inside [77.74, 78.74].
    s = seed_stats([78.0, 78.2, 78.2, 78.4])
    assert s.half_width == pytest.approx(0.2598, abs=1e-4)
    assert ci_verdict(s, PUBLISHED, TOL).verdict == "reproduced"
    # [80.0, 80.2, 80.4]: s = 0.2, h = 4.3027 * 0.11547 = 0.4968: [79.70, 80.70] over 78.74.
    above = seed_stats([80.0, 80.2, 80.4])
    assert above.half_width == pytest.approx(0.4968, abs=1e-4)
    assert ci_verdict(above, PUBLISHED, TOL).verdict == "above"


def test_decide_edges_and_seeds_needed():
    assert decide(77.74, 78.74, PUBLISHED, TOL) == "reproduced"  # the band's own edges count as inside
    assert decide(77.0, 77.73, PUBLISHED, TOL) == "below"
    assert decide(77.0, 77.74, PUBLISHED, TOL) == "inconclusive"  # touches the band
    assert decide(78.75, 79.0, PUBLISHED, TOL) == "above"
    assert decide(77.5, 79.0, PUBLISHED, TOL) == "inconclusive"  # wider than the band
    assert decide(math.nan, math.nan, PUBLISHED, TOL) == "inconclusive"
    # A mean on the published figure needs h <= 0.5 at s = 0.5: h(6) = 2.5706 * 0.5 / sqrt(6) = 0.5247,
    # h(7) = 2.4469 * 0.5 / sqrt(7) = 0.4624 -> 7 seeds.
    assert seeds_to_decide(PUBLISHED, 0.5, 1, PUBLISHED, TOL) == 7
    assert seeds_for_half_width(0.5, 0.5) == 7
    assert seeds_to_decide(PUBLISHED - TOL, 0.5, 3, PUBLISHED, TOL) is None  # on the edge: never decided
    assert seeds_to_decide(PUBLISHED - 0.501, 0.5, 1, PUBLISHED, TOL) is None  # beyond 1000 seeds
    assert half_width(0.5, 1) != half_width(0.5, 1)  # NaN: one seed has no interval
    assert half_width(0.5, 3) == pytest.approx(4.3027 * 0.5 / math.sqrt(3), abs=1e-4)


def test_released_weights_have_no_seed_spread():
    # One evaluation of fixed weights is exact: the interval is the point.
    assert ci_verdict(seed_stats([78.0]), PUBLISHED, TOL, fixed_weights=True).verdict == "reproduced"
    assert ci_verdict(seed_stats([77.0]), PUBLISHED, TOL, fixed_weights=True).verdict == "below"


def test_dry_run_states_the_half_width_of_n_seeds(tmp_path, capsys):
    assert cli(["run-all", "--dry-run", "--seeds", "3", "--filter", ROW, "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # h = 4.3027 * 0.5 / sqrt(3) = 1.242
    assert "seeds: 3 per row give a 95% interval (Student t) of mean ± 1.24 mIoU at a seed std of about 0.5" in out
    assert "at least 7 seeds" in out
    assert "1 per row gives no confidence interval" in seed_budget(1)
    assert "2: ±4.49" in seed_budget(1)  # 12.706 * 0.5 / sqrt(2)


def test_compare_ci_three_seeds_then_five(tmp_path, capsys):
    results = tmp_path / "results"
    for seed, miou in enumerate([76.4, 77.0, 77.6]):
        write_row(results, seed=seed, miou=miou)
    # The tolerance method (default, unchanged) calls the mean of three a regression ...
    assert cli(["compare", "--results", str(results)]) == 1
    assert "FAIL: 1 regression(s) beyond the tolerance" in capsys.readouterr().out
    # ... the interval says three seeds cannot tell, and how many would.
    assert cli(["compare", "--results", str(results), "--method", "ci", "--report", str(tmp_path / "ci.md")]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ROW in ln and "| mIoU " in ln]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:9] == ["78.24", "77.00 ± 0.60", "3", "[75.51, 78.49]", "[77.74, 78.74]", "inconclusive"]
    assert "3 more seeds (6 in all) would decide at the observed std 0.60" in cells[9]
    assert "PASS: nothing below the band at 95% confidence (1 inconclusive)" in out
    assert "inconclusive" in (tmp_path / "ci.md").read_text()
    # Two more seeds in the same spread: the interval lies under the band.
    write_row(results, seed=3, miou=76.7)
    write_row(results, seed=4, miou=77.3)
    junit = tmp_path / "ci.xml"
    assert cli(["compare", "--results", str(results), "--method", "ci", "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "77.00 ± 0.47 | 5   | [76.41, 77.59] | [77.74, 78.74] | below" in out
    assert "FAIL: 1 check(s) below the band at 95% confidence" in out
    assert 'failures="1"' in junit.read_text()


def test_compare_ci_one_seed_uses_the_assumed_std(tmp_path, capsys):
    write_row(tmp_path, miou=77.0)
    assert cli(["compare", "--results", str(tmp_path), "--method", "ci", "--assumed-std", "0.25"]) == 0
    out = capsys.readouterr().out
    # at s = 0.25: h(3) = 4.3027 * 0.25 / sqrt(3) = 0.621 < 0.74, h(2) = 12.706 * 0.25 / sqrt(2) = 2.246
    assert "one seed gives no interval; 2 more seeds (3 in all) would decide at an assumed std of 0.25" in out
    assert cli(["compare", "--results", str(tmp_path), "--method", "ci", "--assumed-std", "0"]) == 2
    assert "--assumed-std" in capsys.readouterr().err


def test_noise_band_is_four_times_the_largest_deviation_floored():
    from benchmark.stats import noise_band

    got = noise_band([44.0, 44.4, 43.8, 44.2, float("nan")])  # mean 44.1; deviations 0.1, 0.3, 0.3, 0.1
    assert (got.n, got.mean, got.max_deviation, got.band) == (4, pytest.approx(44.1), pytest.approx(0.3),
                                                                 pytest.approx(1.2))
    assert noise_band([47.0, 47.0]).band == 0.5  # runs that agree: the floor
    assert noise_band([1.0, 2.0], floor=0.1, margin=1.0).band == pytest.approx(0.5)
    assert noise_band([]).n == 0


@pytest.mark.parametrize("runs, beyond_2x, demos_beyond", [(9, (0.011, 0.015), (0.001, 0.012)),
                                                            (11, (0.0062, 0.0088), (0.0, 0.005))])
def test_the_band_is_rarely_exceeded_by_a_new_run_in_any_of_28_checks(runs, beyond_2x, demos_beyond):
    # benchmark/stats.py's numbers, by Monte Carlo for normal noise: a row measured `runs` times (9-11
    # in results/reference/smoke_spread.csv), its band noise_band's (floor 0); how often does one more
    # run fall outside it, and how often does a demo of 28 such checks fail somewhere? Bounds: the
    # claimed rates +- about 5 standard errors of the trials.
    import numpy as np

    from benchmark.stats import SPREAD_MARGIN, noise_band

    rng = np.random.default_rng(20261206)
    trials = 400_000
    x = rng.standard_normal((trials, runs))
    mean = x.mean(axis=1)
    largest = np.abs(x - mean[:, None]).max(axis=1)
    for i in range(20):  # the vectorised rule is noise_band's
        assert noise_band(x[i], floor=0.0).band == pytest.approx(SPREAD_MARGIN * largest[i])
    miss = np.abs(rng.standard_normal(trials) - mean)
    assert beyond_2x[0] < (miss > 2 * largest).mean() < beyond_2x[1]  # twice: too tight for 28 checks
    per_check = (miss > SPREAD_MARGIN * largest).mean()
    assert demos_beyond[0] <= 1 - (1 - per_check) ** 28 < demos_beyond[1]
