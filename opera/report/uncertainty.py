"""How sure a comparison of two methods is, over both sources of chance: queries and seeds.

A method's evaluation is a matrix of per-query values, one row per seed (training run) and one
column per test query. Two methods compared on one dataset share the queries (columns are
paired) but not their runs (rows are independent draws of each method's training randomness).
Everything here takes two such matrices, ``a`` (the method) and ``b`` (its baseline):

- :func:`bootstrap_difference`: the difference of means ``mean(a) - mean(b)``, absolute and
  relative to ``mean(b)``, with a percentile confidence interval from a two-level bootstrap that
  resamples the queries (the same ones for both) and, independently, each method's seeds.
- :func:`seed_test` and :func:`seed_interval`: Welch's t-test and t-interval over the seed-level
  means (each run averaged over queries): they treat each trained model as one draw, as a
  replication would.
- :func:`query_tests`: paired t-test and Wilcoxon signed-rank over queries, on per-query values
  averaged over seeds (conditional on the trained models: seed spread is left out).
- :func:`equivalence_test`: TOST over the seed-level means against a margin, so that "no
  difference" is a verdict with a number (statsmodels' ``ttost_ind``);
  :func:`equivalence_test_queries`, its paired form over queries (``ttost_paired``).
- :func:`minimum_detectable_effect`: the smallest true difference the seed-level and query-level
  tests detect with 80% power at alpha 0.05 (statsmodels' power solvers).
- :func:`holm`: Holm's step-down adjustment over a family of p-values.

docs/methods.md ("Uncertainty") says why this design, and what it cannot see (with three seeds,
the bootstrap of seeds underestimates seed spread by a factor (k - 1) / k in variance; the Welch
test does not, and is the primary test).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind, ttost_paired

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the bootstrap's own generator: the same tables from the same runs
_CHUNK = 500  # resamples drawn at once (bounded memory for tens of thousands of queries)
_EPS = 1e-12


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` and its interval; ``relative`` is divided by ``mean(b)``."""

    diff: float
    low: float
    high: float
    relative: float
    relative_low: float
    relative_high: float


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"a and b must share their queries (columns); got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-query values must be finite")
    return a, b


def _resample_weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in ``size`` bootstrap resamples (rows sum to n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)


def bootstrap_difference(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Difference:
    """Two-level bootstrap of ``mean(a) - mean(b)`` for ``a`` (seeds_a x queries) and ``b``
    (seeds_b x queries): each resample draws the queries with replacement (the same draw for both
    methods: they are paired) and each method's seeds with replacement, independently. Percentile
    interval. A method with one seed contributes no seed spread (it has none to show)."""
    a, b = _check(a, b)
    rng = np.random.default_rng(seed)
    n_queries = a.shape[1]
    diffs, relatives = [], []
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        queries = _resample_weights(rng, n_queries, size)
        mean_a = np.einsum("rk,kq,rq->r", _resample_weights(rng, a.shape[0], size), a, queries)
        mean_b = np.einsum("rk,kq,rq->r", _resample_weights(rng, b.shape[0], size), b, queries)
        mean_a /= a.shape[0] * n_queries
        mean_b /= b.shape[0] * n_queries
        diffs.append(mean_a - mean_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            relatives.append((mean_a - mean_b) / mean_b)
    diffs, relatives = np.concatenate(diffs), np.concatenate(relatives)
    tail = 100 * (1 - confidence) / 2
    diff = float(a.mean() - b.mean())
    relative = diff / float(b.mean()) if abs(b.mean()) > _EPS else math.nan
    low, high = np.percentile(diffs, [tail, 100 - tail])
    finite = relatives[np.isfinite(relatives)]
    rel_low, rel_high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (math.nan, math.nan)
    return Difference(diff, float(low), float(high), relative, float(rel_low), float(rel_high))


def _degenerate(a: np.ndarray, b: np.ndarray) -> float | None:
    """The p-value when neither side varies (the t statistic is undefined): 1 if equal, else 0."""
    if np.ptp(a) <= _EPS and np.ptp(b) <= _EPS:
        return 1.0 if abs(a.mean() - b.mean()) <= _EPS else 0.0
    return None


def seed_test(a_seed_means: np.ndarray, b_seed_means: np.ndarray) -> float:
    """Two-sided Welch t-test over seed-level means; NaN with fewer than two seeds on a side."""
    a, b = np.asarray(a_seed_means, dtype=float), np.asarray(b_seed_means, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    degenerate = _degenerate(a, b)
    if degenerate is not None:
        return degenerate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical samples: scipy warns, the p stays valid
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def seed_interval(
    a_seed_means: np.ndarray, b_seed_means: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Welch's t-interval for ``mean(a) - mean(b)`` over seed-level means (the interval of
    :func:`seed_test`); NaN with fewer than two seeds on a side."""
    a, b = np.asarray(a_seed_means, dtype=float), np.asarray(b_seed_means, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    if _degenerate(a, b) is not None:
        diff = float(a.mean() - b.mean())
        return diff, diff
    low, high = CompareMeans(DescrStatsW(a), DescrStatsW(b)).tconfint_diff(alpha=1 - confidence, usevar="unequal")
    return float(low), float(high)


def query_tests(a_query_means: np.ndarray, b_query_means: np.ndarray) -> tuple[float, float, float]:
    """(t statistic, paired t-test p, Wilcoxon signed-rank p) over queries. All-zero differences
    give t = 0 and both p = 1; fewer than two queries give NaN."""
    a, b = np.asarray(a_query_means, dtype=float), np.asarray(b_query_means, dtype=float)
    if len(a) < 2:
        return math.nan, math.nan, math.nan
    if np.all(np.abs(a - b) <= _EPS):
        return 0.0, 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(a, b)
        w = stats.wilcoxon(a, b, zero_method="wilcox")
    return float(t.statistic), float(t.pvalue), float(w.pvalue)


def equivalence_test(a_seed_means: np.ndarray, b_seed_means: np.ndarray, margin: float) -> float:
    """TOST p-value for ``|mean(a) - mean(b)| < margin`` over seed-level means (Welch variances);
    small means equivalent within the margin. NaN with fewer than two seeds on a side."""
    a, b = np.asarray(a_seed_means, dtype=float), np.asarray(b_seed_means, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if _degenerate(a, b) is not None:
        return 0.0 if abs(a.mean() - b.mean()) < margin else 1.0
    p, _, _ = ttost_ind(a, b, -margin, margin, usevar="unequal")
    return float(p)


def equivalence_test_queries(a_query_means: np.ndarray, b_query_means: np.ndarray, margin: float) -> float:
    """Paired TOST over queries for ``|mean(a - b)| < margin`` (when a side has a single run)."""
    a, b = np.asarray(a_query_means, dtype=float), np.asarray(b_query_means, dtype=float)
    if len(a) < 2:
        return math.nan
    if np.ptp(a - b) <= _EPS:
        return 0.0 if abs((a - b).mean()) < margin else 1.0
    p, _, _ = ttost_paired(a, b, -margin, margin)
    return float(p)


def minimum_detectable_effect(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(seed-level, query-level) minimum detectable effect in metric units: the true difference
    that the Welch test over seeds and the paired t-test over queries find with power 0.8 at
    alpha 0.05, given the spread these runs show. NaN where a test cannot run."""
    a, b = _check(a, b)
    seed_mde = math.nan
    if a.shape[0] >= 2 and b.shape[0] >= 2:
        sd = math.sqrt((a.mean(axis=1).var(ddof=1) + b.mean(axis=1).var(ddof=1)) / 2)
        effect = TTestIndPower().solve_power(nobs1=a.shape[0], ratio=b.shape[0] / a.shape[0], alpha=ALPHA, power=POWER)
        seed_mde = float(effect * sd)
    differences = a.mean(axis=0) - b.mean(axis=0)
    query_mde = math.nan
    if len(differences) >= 2:
        effect = TTestPower().solve_power(nobs=len(differences), alpha=ALPHA, power=POWER)
        query_mde = float(effect * differences.std(ddof=1))
    return seed_mde, query_mde


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count in the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    present = ~np.isnan(p)
    if present.any():
        out[present] = multipletests(p[present], alpha=ALPHA, method="holm")[1]
    return out
