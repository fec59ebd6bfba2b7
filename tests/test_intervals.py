"""Seeds, intervals and verdicts (experiments.py section 1-2), checked against numbers from outside the code:
published t tables, closed forms of the t distribution for 1 and 2 degrees of freedom, intervals worked
out by hand, and the coverage of the interval on simulated normal data."""

import math

import numpy as np
import pytest

from tinyft.experiments import (
    choose_on_validation,
    format_estimate,
    mean_ci,
    over_seeds,
    paired_difference,
    t_cdf,
    t_quantile,
    verdict,
)

# Two-sided 95% (p = 0.975) and other quantiles of Student's t, as printed in standard tables
# (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2), to the digits given there.
T_TABLE = [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 9, 2.262),
    (0.975, 29, 2.045), (0.975, 100, 1.984), (0.95, 10, 1.812), (0.995, 5, 4.032), (0.999, 20, 3.552),
]


@pytest.mark.parametrize("p, df, table", T_TABLE)
def test_t_quantile_matches_printed_tables(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=6e-4)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.9995])
def test_t_quantile_matches_closed_forms_for_one_and_two_degrees_of_freedom(p):
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi, so t = tan(pi (p - 1/2)).
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so t = (2p - 1) / sqrt(2 p (1 - p)).
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)


def test_t_quantile_approaches_the_normal_quantile_and_is_symmetric():
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963985, abs=1e-6)  # the normal's 97.5% point
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7), rel=1e-12)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)


def test_mean_ci_by_hand():
    # values 1..5: mean 3, sample sd sqrt(2.5); t(0.975, 4) = 2.776445105 from the table above (more digits).
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    mean, lo, hi = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert lo == pytest.approx(3 - half, abs=1e-8) and hi == pytest.approx(3 + half, abs=1e-8)
    # a 90% interval is narrower: t(0.95, 4) = 2.131847
    _, lo90, hi90 = mean_ci([1, 2, 3, 4, 5], level=0.90)
    assert hi90 - 3 == pytest.approx(2.131847 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)


def test_mean_ci_of_one_value_has_no_interval():
    mean, lo, hi = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert format_estimate(mean, lo, hi) == "0.700"  # no +- printed from one seed
    assert verdict(lo, hi) == "one seed"


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials, covered = 4000, 0
    for _ in range(trials):
        x = rng.normal(loc=1.5, scale=2.0, size=4)
        _, lo, hi = mean_ci(x)
        covered += lo <= 1.5 <= hi
    # binomial sd of the rate: sqrt(.95 * .05 / 4000) = 0.0034; four of them either side
    assert abs(covered / trials - 0.95) < 0.014


def test_paired_difference_uses_per_seed_differences():
    a = [0.50, 0.61, 0.40, 0.72]
    b = [0.45, 0.57, 0.37, 0.66]  # b tracks a closely: the difference is small but consistent
    d = np.array(a) - np.array(b)
    half = 3.182446305 * d.std(ddof=1) / 2.0  # t(0.975, 3), sqrt(4) = 2
    mean, lo, hi = paired_difference(a, b)
    assert mean == pytest.approx(d.mean()) and lo == pytest.approx(d.mean() - half, abs=1e-8)
    assert verdict(lo, hi) == "supported"
    # the two groups' own intervals overlap: unpaired, the same numbers would look like noise
    _, alo, _ = mean_ci(a)
    _, _, bhi = mean_ci(b)
    assert alo < bhi


@pytest.mark.parametrize("lo, hi, direction, expected", [
    (0.1, 0.3, 1, "supported"), (-0.3, -0.1, 1, "not supported"), (-0.1, 0.2, 1, "within noise"),
    (-0.3, -0.1, -1, "supported"), (0.1, 0.3, -1, "not supported"), (0.0, 0.2, 1, "within noise"),
])
def test_verdict_rule(lo, hi, direction, expected):
    assert verdict(lo, hi, direction) == expected


def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="level"):
        mean_ci([1, 2], level=95)
    with pytest.raises(ValueError, match="empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="one a and one b"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="direction"):
        verdict(0.1, 0.2, direction=0)
    with pytest.raises(ValueError, match="seeds repeat"):
        over_seeds(lambda s: s, [0, 0])
    with pytest.raises(ValueError, match="p must"):
        t_quantile(1.0, 3)


def test_over_seeds_runs_each_seed_once_in_order():
    seen = []
    assert over_seeds(lambda s: seen.append(s) or s * 10, range(3)) == [0, 10, 20]
    assert seen == [0, 1, 2]


def test_choose_on_validation_reads_validation_scores_only():
    """The chooser gets a validation scorer and nothing else; planting a 'test' look-up in it is impossible
    by construction, so we check the choice follows validation even when test would disagree."""
    val = {"a": 0.60, "b": 0.70, "c": 0.65}
    test = {"a": 0.90, "b": 0.50, "c": 0.55}  # the best on test is "a"
    seen = []

    def score(candidate):
        seen.append(candidate)
        return val[candidate]

    best, scores = choose_on_validation(["a", "b", "c"], score)
    assert best == "b" and scores == [0.60, 0.70, 0.65] and seen == ["a", "b", "c"]
    assert test[best] == 0.50  # what gets reported: the chosen setting's test score, not max(test)
    best_low, _ = choose_on_validation(["a", "b", "c"], score, higher_is_better=False)
    assert best_low == "a"
    tie, _ = choose_on_validation(["x", "y"], lambda c: 1.0)
    assert tie == "x"  # ties go to the first listed
    skip_nan, _ = choose_on_validation(["x", "y"], lambda c: float("nan") if c == "y" else 0.1)
    assert skip_nan == "x"
