"""opera.report.uncertainty on planted inputs: a known difference over seeds and queries is covered and
found by every test; no difference is covered by the interval, found by none, and called
equivalent within a margin; Holm and the minimum detectable effect match hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from opera.report import uncertainty


def runs(rng, n_seeds, n_queries, shift=0.0, query_effects=None, seed_sd=0.005, noise_sd=0.05):
    """Per-query values of one method: a query's difficulty + a run's offset + noise + shift."""
    query_effects = rng.uniform(0.2, 0.8, n_queries) if query_effects is None else query_effects
    seeds = rng.normal(0, seed_sd, (n_seeds, 1))
    return query_effects + seeds + rng.normal(0, noise_sd, (n_seeds, n_queries)) + shift


@pytest.fixture
def queries():
    return np.random.default_rng(0).uniform(0.2, 0.8, 300)


def test_planted_difference_is_covered_and_found(queries):
    rng = np.random.default_rng(1)
    base, method = runs(rng, 3, 300, query_effects=queries), runs(rng, 3, 300, 0.03, query_effects=queries)
    d = uncertainty.bootstrap_difference(method, base, n_resamples=4000)
    planted = 0.03
    assert d.low < planted < d.high and d.low > 0  # covers the truth, excludes no difference
    assert d.diff == pytest.approx(method.mean() - base.mean())
    assert d.relative == pytest.approx(d.diff / base.mean())
    assert d.relative_low < planted / base.mean() < d.relative_high
    assert uncertainty.seed_test(method.mean(axis=1), base.mean(axis=1)) < 0.05
    t, p_t, p_w = uncertainty.query_tests(method.mean(axis=0), base.mean(axis=0))
    assert t > 0 and p_t < 0.05 and p_w < 0.05
    # a margin below the planted difference: not equivalent; far above it: equivalent
    assert uncertainty.equivalence_test(method.mean(axis=1), base.mean(axis=1), 0.01) > 0.05
    assert uncertainty.equivalence_test(method.mean(axis=1), base.mean(axis=1), 0.2) < 0.05


def test_no_difference_is_covered_and_not_found(queries):
    rng = np.random.default_rng(2)
    base, method = runs(rng, 3, 300, query_effects=queries), runs(rng, 3, 300, query_effects=queries)
    d = uncertainty.bootstrap_difference(method, base, n_resamples=4000)
    assert d.low < 0 < d.high
    assert uncertainty.seed_test(method.mean(axis=1), base.mean(axis=1)) > 0.05
    _, p_t, p_w = uncertainty.query_tests(method.mean(axis=0), base.mean(axis=0))
    assert p_t > 0.05 and p_w > 0.05
    assert uncertainty.equivalence_test(method.mean(axis=1), base.mean(axis=1), 0.05) < 0.05


def test_interval_widens_with_seed_spread(queries):
    """The seed level is resampled: the same per-query noise with a larger run-to-run spread
    gives a wider interval (a query-only bootstrap would not see it)."""
    widths = []
    for seed_sd in (0.0, 0.03):
        rng = np.random.default_rng(3)
        base = runs(rng, 3, 300, query_effects=queries, seed_sd=seed_sd)
        method = runs(rng, 3, 300, query_effects=queries, seed_sd=seed_sd)
        d = uncertainty.bootstrap_difference(method, base, n_resamples=4000)
        widths.append(d.high - d.low)
    assert widths[1] > 2 * widths[0]


def test_bootstrap_coverage_near_nominal_when_queries_dominate():
    """Over 60 planted datasets (query noise only), the 95% interval covers the truth 52-60 times
    (binomial 95% range for p = 0.95, n = 60, widened by one)."""
    covered = 0
    for rep in range(60):
        rng = np.random.default_rng(100 + rep)
        effects = rng.uniform(0.2, 0.8, 200)
        base = runs(rng, 3, 200, query_effects=effects, seed_sd=0.0)
        method = runs(rng, 3, 200, 0.01, query_effects=effects, seed_sd=0.0)
        d = uncertainty.bootstrap_difference(method, base, n_resamples=1000, seed=rep)
        covered += d.low <= 0.01 <= d.high
    assert 52 <= covered <= 60


def test_bootstrap_is_deterministic_and_checks_its_input(queries):
    rng = np.random.default_rng(4)
    a, b = runs(rng, 3, 300, query_effects=queries), runs(rng, 2, 300, query_effects=queries)
    assert uncertainty.bootstrap_difference(a, b, 1000) == uncertainty.bootstrap_difference(a, b, 1000)
    with pytest.raises(ValueError, match="share their queries"):
        uncertainty.bootstrap_difference(a, b[:, :10])
    bad = a.copy()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        uncertainty.bootstrap_difference(bad, b)


def test_single_seed_and_degenerate_inputs():
    a = np.array([[0.5, 0.6, 0.7]])
    assert math.isnan(uncertainty.seed_test(a.mean(axis=1), a.mean(axis=1)))  # one seed: no seed-level test
    assert math.isnan(uncertainty.equivalence_test([0.5], [0.5, 0.6], 0.1))
    assert uncertainty.seed_test([0.5, 0.5], [0.5, 0.5]) == 1.0  # identical constant runs
    assert uncertainty.seed_test([0.6, 0.6], [0.5, 0.5]) == 0.0
    assert uncertainty.query_tests([0.1, 0.2], [0.1, 0.2]) == (0.0, 1.0, 1.0)
    assert uncertainty.equivalence_test([0.5, 0.5], [0.5, 0.5], 0.01) == 0.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(1 x 0.04, 0.06) = 0.06
    adjusted = uncertainty.holm([0.04, 0.01, math.nan, 0.03])
    assert adjusted[[0, 1, 3]] == pytest.approx([0.06, 0.03, 0.06])
    assert math.isnan(adjusted[2])
    assert uncertainty.holm([]).shape == (0,)


def test_minimum_detectable_effect_matches_the_normal_approximation(queries):
    rng = np.random.default_rng(5)
    a, b = runs(rng, 3, 300, query_effects=queries), runs(rng, 3, 300, query_effects=queries)
    seed_mde, query_mde = uncertainty.minimum_detectable_effect(a, b)
    sd_diff = (a.mean(axis=0) - b.mean(axis=0)).std(ddof=1)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert query_mde == pytest.approx(z * sd_diff / math.sqrt(300), rel=0.02)  # large n: t ~ normal
    # three seeds a side: the t distribution's heavy tails make the seed-level MDE far larger
    # than the normal approximation's z * sd * sqrt(2 / 3)
    sd_seed = math.sqrt((a.mean(axis=1).var(ddof=1) + b.mean(axis=1).var(ddof=1)) / 2)
    assert seed_mde > 1.3 * z * sd_seed * math.sqrt(2 / 3)
    assert math.isnan(uncertainty.minimum_detectable_effect(a[:1], b)[0])


def test_seed_interval_is_welchs_and_agrees_with_its_test():
    a, b = np.array([0.52, 0.55, 0.50]), np.array([0.45, 0.46, 0.44])
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert uncertainty.seed_interval(a, b) == pytest.approx((expected.low, expected.high))
    assert uncertainty.seed_interval(a, b)[0] > 0 and uncertainty.seed_test(a, b) < 0.05  # excludes 0 iff p < 0.05
    assert all(math.isnan(v) for v in uncertainty.seed_interval(a[:1], b))
    assert uncertainty.seed_interval([0.5, 0.5], [0.4, 0.4]) == pytest.approx((0.1, 0.1))
