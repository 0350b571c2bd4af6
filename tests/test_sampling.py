"""Unit tests of opera.methods.sampling against DESIGN.md "Methods" (uniform, dp, dp_query, dp_doc, infobatch).

The statistical tests use fixed seeds, so they are deterministic; their tolerances are stated in
binomial standard errors (SE) next to each assertion, wide enough that a correct sampler passes
with overwhelming probability, narrow enough that the wrong rate (e.g. no up-weighting) fails.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from opera.methods.sampling import (
    Batch,
    DynamicPruningSampler,
    InfoBatchSampler,
    PairIndex,
    Sampler,
    cosine_schedule,
    make_sampler,
)

# the defaults of DESIGN.md / opera/schema.yaml
DP = dict(r0=0.25, x0=2.0, x_start=2.0, x_end=5.0, c_start=0.25, c_end=0.5, doc_weight=5.0)
IB = dict(prune_ratio=0.5, delta=0.875, anneal=True)
PARAMS = {"basic": {}, "sp": {}, "random": {}, "dp": DP, "dp_query": DP, "dp_doc": DP, "infobatch": IB}
METHODS = ["basic", "dp", "dp_query", "dp_doc", "infobatch"]


def pair_table(n_queries: int, per_query=1, seed: int = 0) -> pd.DataFrame:
    """Synthetic pairs: ``per_query`` positives per query (int, or a list per query), distinct random scores."""
    rng = np.random.default_rng(seed)
    counts = [per_query] * n_queries if isinstance(per_query, int) else list(per_query)
    rows = [(f"q{i:05d}", f"d{i:05d}_{j}") for i, c in enumerate(counts) for j in range(c)]
    frame = pd.DataFrame(rows, columns=["query_id", "doc_id"])
    frame["score"] = rng.permutation(len(frame)) / len(frame) + rng.uniform(0, 1e-3, len(frame))
    return frame


def dp_sampler(
    pairs: pd.DataFrame, max_steps: int = 100, seed: int = 0, kind: str = "dp", **overrides
) -> DynamicPruningSampler:
    return make_sampler(kind, PairIndex(pairs), max_steps, seed, {**DP, **overrides})


def x_of(step, total, start=2.0, end=5.0):
    """DESIGN: x(t) = x_end + (x_start - x_end)(1 + cos(pi t / T)) / 2, written out independently."""
    return end + (start - end) * (1 + math.cos(math.pi * step / total)) / 2


def expected_n0(n, r0=0.25, x0=2.0):
    return round(n * (1 - r0) / x0 + r0 * n)


def expected_r(x, n0, n):
    return (x * n0 - n) / (n * (x - 1))


def feed(step: int, batch: Batch):
    """Deterministic fake model output for a batch: new positive scores and per-query losses."""
    rng = np.random.default_rng(10_000 + step)
    return rng.uniform(0, 1, len(batch.pairs)), rng.uniform(0, 3, len(batch.queries))


# --- 1. schedules ------------------------------------------------------------------------------
@pytest.mark.parametrize("start,end", [(2.0, 5.0), (0.25, 0.5)])
def test_cosine_schedule_endpoints_and_midpoint(start, end):
    T = 1000
    assert cosine_schedule(0, T, start, end) == pytest.approx(start)
    assert cosine_schedule(T / 2, T, start, end) == pytest.approx((start + end) / 2)
    assert cosine_schedule(T, T, start, end) == pytest.approx(end)
    assert cosine_schedule(T / 4, T, start, end) == pytest.approx(end + (start - end) * (1 + math.cos(math.pi / 4)) / 2)
    # slow start (cosine, not linear): a quarter of the way the value has moved less than a quarter
    assert abs(cosine_schedule(T / 4, T, start, end) - start) < abs(end - start) / 4
    # clamped outside [0, T]
    assert cosine_schedule(-5, T, start, end) == pytest.approx(start)
    assert cosine_schedule(2 * T, T, start, end) == pytest.approx(end)


def test_dp_strength_and_cutoff_follow_schedules():
    T = 400
    sampler = dp_sampler(pair_table(20), max_steps=T)
    for step in (0, T // 4, T // 2, T):
        assert sampler.strength(step) == pytest.approx(x_of(step, T, 2.0, 5.0))
        assert sampler.cutoff(step) == pytest.approx(x_of(step, T, 0.25, 0.5))
    assert (sampler.strength(0), sampler.strength(T // 2), sampler.strength(T)) == pytest.approx((2.0, 3.5, 5.0))
    assert (sampler.cutoff(0), sampler.cutoff(T // 2), sampler.cutoff(T)) == pytest.approx((0.25, 0.375, 0.5))


# --- 2. dp, query level ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n,r0,x0", [(7, 0.25, 2.0), (40, 0.25, 2.0), (200, 0.25, 2.0), (1001, 0.25, 2.0), (100, 0.1, 3.0)]
)
def test_dp_epoch_has_n0_distinct_queries(n, r0, x0):
    sampler = dp_sampler(pair_table(n, 2), max_steps=50, r0=r0, x0=x0)
    n0 = expected_n0(n, r0, x0)
    assert sampler.n0 == n0
    for step in (0, 25, 50):
        sampler.step = step
        for _ in range(3):
            epoch = [q for q, _ in sampler.new_epoch()]
            assert len(epoch) == n0 and len(set(epoch)) == n0
            assert all(0 <= q < n for q in epoch)
    # dp_query has the same epoch length; dp_doc is not pruned at the query level
    assert dp_sampler(pair_table(n, 2), kind="dp_query", r0=r0, x0=x0).n0 == n0
    assert dp_sampler(pair_table(n, 2), kind="dp_doc", r0=r0, x0=x0).n0 == n


@pytest.mark.parametrize("step", [0, 100, 300, 1000])
def test_dp_top_queries_always_in_epoch(step):
    n, T = 200, 1000
    pairs = pair_table(n, [1 + i % 3 for i in range(n)], seed=3)
    sampler = dp_sampler(pairs, max_steps=T, seed=1)
    scores = pd.Series(sampler.scores).groupby(sampler.pairs.pair_query).mean().to_numpy()
    x = x_of(step, T)
    n0 = expected_n0(n)
    r = expected_r(x, n0, n)
    top = set(np.flatnonzero(scores >= np.quantile(scores, 1 - r)))
    assert abs(len(top) - r * n) <= 1  # the quantile puts about r n queries on top
    sampler.step = step
    for _ in range(20):
        epoch = {q for q, _ in sampler.new_epoch()}
        assert top <= epoch
    assert sampler.epoch_stats["x"] == pytest.approx(x) and sampler.epoch_stats["r"] == pytest.approx(r)


def test_dp_every_query_visited_over_many_epochs():
    # at x = 5 (the strongest pruning) a non-top query is drawn with probability ~0.2 per epoch:
    # P(a given one is never drawn in >= 100 epochs) = 0.8^100 ~ 2e-10
    n, T = 200, 100
    sampler = dp_sampler(pair_table(n, 2, seed=4), max_steps=T, seed=2)
    seen = np.zeros(n, dtype=int)
    while sampler.queue.epochs < 100:
        batch = sampler.next_batch(T, 25)
        sampler.update(batch, sampler.scores[batch.pairs], np.ones(len(batch.queries)))  # scores unchanged
        seen[batch.queries] += 1
    assert (seen > 0).all()
    assert sampler.log_state()["queries_seen"] == n


@pytest.mark.parametrize("n,x,epochs", [(200, 2.0, 2000), (320, 5.0, 1500)])
def test_dp_top_queries_visited_x_times_as_often(n, x, epochs):
    # n chosen so that r n is an integer (n=200, x=2: r n = 50; n=320, x=5: r n = 170), x held fixed
    # by x_start == x_end. Each top query must be in every epoch (rate exactly 1); each other query is
    # in an epoch with probability p = 1/x, so its count over E epochs is Binomial(E, p),
    # SE(rate) = sqrt(p (1 - p) / E) (0.011 at x=2, E=2000; 0.010 at x=5, E=1500). Tolerances:
    # every single query within 5 SE (P(false alarm) < n * 6e-7), and the pooled rate of all
    # non-top queries within 3 SE of the pooled binomial SE (a tighter check of the ratio x).
    sampler = dp_sampler(pair_table(n, 1, seed=5), max_steps=10, seed=6, x_start=x, x_end=x)
    scores = sampler.query_scores()
    n0 = expected_n0(n)
    r = expected_r(x, n0, n)
    assert r * n == pytest.approx(round(r * n))
    top = scores >= np.quantile(scores, 1 - r)
    assert top.sum() == round(r * n)
    counts = np.zeros(n)
    for _ in range(epochs):
        counts[[q for q, _ in sampler.new_epoch()]] += 1
    rate = counts / epochs
    assert (rate[top] == 1.0).all()
    p = 1 / x
    se = math.sqrt(p * (1 - p) / epochs)
    assert np.abs(rate[~top] - p).max() < 5 * se
    pooled_se = math.sqrt(p * (1 - p) / (epochs * (~top).sum()))
    assert abs(rate[~top].mean() - p) < 3 * pooled_se
    assert rate[top].mean() / rate[~top].mean() == pytest.approx(x, rel=3 * pooled_se / p)


def test_dp_query_level_follows_refreshed_scores():
    # a query whose score is raised to the maximum becomes a top query and is in every epoch
    n = 40
    sampler = dp_sampler(pair_table(n, 2, seed=7), seed=3)
    low = int(np.argmin(sampler.query_scores()))
    lo, hi = sampler.pairs.offsets[low], sampler.pairs.offsets[low + 1]
    batch = Batch(np.array([low]), np.array([lo]), np.ones(1))
    sampler.update(batch, np.array([10.0]), np.ones(1))
    batch = Batch(np.array([low]), np.array([hi - 1]), np.ones(1))
    sampler.update(batch, np.array([10.0]), np.ones(1))
    assert all(low in {q for q, _ in sampler.new_epoch()} for _ in range(20))


# --- 3. dp, document level ---------------------------------------------------------------------
def mixed_pairs():
    """10 filler queries with 4 positives, and query q00010 with 6 positives: 3 high, 3 low."""
    frame = pair_table(10, 4, seed=8)
    special = pd.DataFrame(
        {"query_id": "q00010", "doc_id": [f"s{j}" for j in range(6)], "score": [0.999, 0.05, 0.998, 0.06, 0.997, 0.07]}
    )
    return pd.concat([frame, special], ignore_index=True)


@pytest.mark.parametrize("kind", ["dp", "dp_doc"])
def test_dp_doc_weights_above_tau(kind):
    T = 100
    sampler = dp_sampler(mixed_pairs(), max_steps=T, kind=kind)
    scores = sampler.scores.copy()
    for step in (0, T // 2, T):
        sampler.step = step
        c = x_of(step, T, 0.25, 0.5)
        tau = np.quantile(scores, 1 - c)
        assert sampler.tau() == pytest.approx(tau)
        for q in range(sampler.pairs.n_queries):
            lo, hi = sampler.pairs.offsets[q], sampler.pairs.offsets[q + 1]
            np.testing.assert_array_equal(sampler.positive_weights(q), np.where(scores[lo:hi] > tau, 5.0, 1.0))
    special = sampler.pairs.n_queries - 1
    np.testing.assert_array_equal(sampler.positive_weights(special), [5, 1, 5, 1, 5, 1])


def draw_counts(sampler: Sampler, query: int, batches: int, step: int = 0) -> np.ndarray:
    """How often each positive of ``query`` is drawn, over ``batches`` batches of all queries."""
    n = sampler.pairs.n_queries
    lo, hi = sampler.pairs.offsets[query], sampler.pairs.offsets[query + 1]
    counts = np.zeros(hi - lo)
    for _ in range(batches):
        batch = sampler.next_batch(step, n)
        assert sorted(batch.queries) == list(range(n))
        counts[batch.pairs[batch.queries == query] - lo] += 1
    return counts


def test_dp_doc_draws_proportional_to_weights():
    # 3000 draws of the special query; weighted probabilities 5/18 (high) and 1/18 (low).
    # Chi-square goodness of fit: a correct sampler passes at p > 1e-3, while uniform drawing
    # (1/6 each) is rejected at p < 1e-50 with these counts, so the test can fail.
    sampler = dp_sampler(mixed_pairs(), max_steps=100, seed=9, kind="dp_doc")
    special = sampler.pairs.n_queries - 1
    counts = draw_counts(sampler, special, 3000)
    weighted = np.array([5, 1, 5, 1, 5, 1]) / 18
    assert stats.chisquare(counts, counts.sum() * weighted).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(6, counts.sum() / 6)).pvalue < 1e-50
    assert sampler.scores[sampler.pairs.offsets[special] :] == pytest.approx([0.999, 0.05, 0.998, 0.06, 0.997, 0.07])


# --- 4. ablations ------------------------------------------------------------------------------
def test_dp_query_draws_positives_uniformly():
    # same chi-square as above, the other way round: uniform passes, the doc weighting is rejected
    sampler = dp_sampler(mixed_pairs(), max_steps=100, seed=9, kind="dp_query")
    special = sampler.pairs.n_queries - 1
    assert sampler.positive_weights(special) is None
    n = sampler.pairs.n_queries
    lo = sampler.pairs.offsets[special]
    counts = np.zeros(6)
    while counts.sum() < 3000:
        batch = sampler.next_batch(0, 5)
        counts[batch.pairs[batch.queries == special] - lo] += 1
    assert n > sampler.n0  # really pruned at the query level
    assert stats.chisquare(counts, np.full(6, counts.sum() / 6)).pvalue > 1e-3
    assert stats.chisquare(counts, counts.sum() * np.array([5, 1, 5, 1, 5, 1]) / 18).pvalue < 1e-50


def test_dp_doc_epochs_are_shuffles_of_all_queries():
    n = 30
    sampler = dp_sampler(pair_table(n, 2), kind="dp_doc", seed=4)
    epochs = [[q for q, w in sampler.new_epoch()] for _ in range(5)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    assert len({tuple(e) for e in epochs}) == 5  # shuffled, not a fixed order
    # through next_batch: consecutive batches covering one epoch hold every query once
    sampler = dp_sampler(pair_table(n, 2), kind="dp_doc", seed=4)
    drawn = np.concatenate([sampler.next_batch(s, 10).queries for s in range(3)])
    assert sorted(drawn) == list(range(n))


# --- 5. score refresh --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dp", "dp_query", "dp_doc"])
def test_update_overwrites_pair_scores_and_query_scores_are_means(kind):
    pairs = pair_table(12, [1, 2, 3, 4] * 3, seed=11)
    sampler = dp_sampler(pairs, kind=kind, seed=5)
    index = sampler.pairs
    before = sampler.scores.copy()
    np.testing.assert_array_equal(before, index.base_scores)
    batch = sampler.next_batch(0, 5)
    new = np.linspace(-0.5, 0.5, 5)
    sampler.update(batch, new, np.zeros(5))
    np.testing.assert_array_equal(sampler.scores[batch.pairs], new)
    untouched = np.setdiff1d(np.arange(index.n_pairs), batch.pairs)
    np.testing.assert_array_equal(sampler.scores[untouched], before[untouched])
    table = pd.DataFrame({"query_id": index.query_ids[index.pair_query], "score": sampler.scores})
    means = table.groupby("query_id", sort=False)["score"].mean()
    np.testing.assert_allclose(sampler.query_scores(), means.loc[index.query_ids].to_numpy())
    # the pair table is aligned: row i of the index is (query_ids[pair_query[i]], doc_ids[i])
    original = pairs.set_index(["query_id", "doc_id"])["score"]
    keys = list(zip(index.query_ids[index.pair_query], index.doc_ids, strict=True))
    np.testing.assert_array_equal(original.loc[keys].to_numpy(), index.base_scores)


def test_doc_weights_follow_updated_scores_at_same_step():
    # tau and the weights use the current scores, also when a batch is drawn again at the same step
    sampler = dp_sampler(mixed_pairs(), kind="dp_doc", seed=5)
    special = sampler.pairs.n_queries - 1
    lo = sampler.pairs.offsets[special]
    sampler.next_batch(0, 3)
    np.testing.assert_array_equal(sampler.positive_weights(special), [5, 1, 5, 1, 5, 1])
    tau_before = sampler.tau()
    batch = Batch(np.array([special, special]), np.array([lo + 1, lo + 3]), np.ones(2))  # raise two low positives
    sampler.update(batch, np.array([2.0, 2.0]), np.ones(2))
    assert sampler.tau() == pytest.approx(np.quantile(sampler.scores, 0.75))
    assert sampler.tau() != tau_before  # the quantile moved
    np.testing.assert_array_equal(sampler.positive_weights(special), [5, 5, 5, 5, 5, 1])
    sampler.update(
        Batch(np.array([special]), np.array([lo]), np.ones(1)), np.array([-1.0]), np.ones(1)
    )  # lower a high one
    np.testing.assert_array_equal(sampler.positive_weights(special), [1, 5, 5, 5, 5, 1])


# --- 6. infobatch ------------------------------------------------------------------------------
def info_sampler(n=20, max_steps=100, seed=0, **overrides) -> InfoBatchSampler:
    return make_sampler("infobatch", PairIndex(pair_table(n, 2, seed=12)), max_steps, seed, {**IB, **overrides})


def set_losses(sampler: Sampler, queries, losses):
    queries = np.asarray(queries)
    batch = Batch(queries, sampler.pairs.offsets[queries], np.ones(len(queries)))
    sampler.update(batch, sampler.scores[batch.pairs], np.asarray(losses, dtype=float))


def test_infobatch_prunes_nothing_before_any_loss():
    sampler = info_sampler()
    epoch = sampler.new_epoch()
    assert sorted(q for q, _ in epoch) == list(range(20)) and all(w == 1.0 for _, w in epoch)
    batch = sampler.next_batch(0, 20)
    assert sorted(batch.queries) == list(range(20)) and (batch.weights == 1.0).all()


@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.3])
def test_infobatch_skips_a_fraction_of_below_mean_queries(ratio):
    n = 20
    losses = np.arange(n, dtype=float) ** 2  # mean 123.5: queries 0..11 are below it
    below = set(range(12))
    n_skip = round(ratio * len(below))  # 6, 3, 4 (no .5 ties)
    sampler = info_sampler(n, seed=3, prune_ratio=ratio)
    set_losses(sampler, np.random.default_rng(0).permutation(n), losses[np.random.default_rng(0).permutation(n)])
    skipped_ever = np.zeros(n, dtype=bool)
    kept_ever = np.zeros(n, dtype=bool)
    for _ in range(40):
        epoch = sampler.new_epoch()
        queries = [q for q, _ in epoch]
        assert len(queries) == len(set(queries)) == n - n_skip
        assert set(range(12, n)) <= set(queries)  # above the mean: never skipped
        assert len(below - set(queries)) == n_skip
        for q, w in epoch:
            assert w == pytest.approx(1 / (1 - ratio) if q in below else 1.0)
        skipped_ever[list(below - set(queries))] = True
        kept_ever[queries] = True
    assert skipped_ever[:12].all() and kept_ever.all()  # a random subset, not a fixed one
    assert not skipped_ever[12:].any()
    assert sampler.log_state()["pruned"] == n_skip and sampler.log_state()["well_learned"] == 12


def test_infobatch_batch_weights_through_next_batch():
    n, ratio = 20, 0.5
    sampler = info_sampler(n, seed=4, prune_ratio=ratio)
    set_losses(sampler, np.arange(n), np.arange(n, dtype=float))  # mean 9.5: 0..9 below, 5 skipped
    batch = sampler.next_batch(0, 15)  # the first epoch after the losses, exactly
    assert len(set(batch.queries)) == 15
    assert set(range(10, n)) <= set(batch.queries)
    np.testing.assert_array_equal(batch.weights, np.where(batch.queries < 10, 2.0, 1.0))


def test_infobatch_unseen_queries_are_never_pruned():
    n = 20
    sampler = info_sampler(n, seed=5)
    set_losses(sampler, np.arange(10), np.arange(10, dtype=float))  # mean 4.5 over the seen only
    for _ in range(10):
        epoch = dict(sampler.new_epoch())
        assert set(range(5, n)) <= set(epoch) and len(epoch) == n - round(0.5 * 5)
        assert all(epoch[q] == 1.0 for q in range(5, n))


def test_infobatch_equal_losses_prune_nothing():
    sampler = info_sampler(seed=6)
    set_losses(sampler, np.arange(20), np.ones(20))
    epoch = sampler.new_epoch()
    assert len(epoch) == 20 and all(w == 1.0 for _, w in epoch)


def test_infobatch_stops_pruning_after_delta():
    n, T = 20, 100  # delta 0.875: pruning while step < 87.5
    for step, pruned in [(0, True), (87, True), (88, False), (100, False)]:
        sampler = info_sampler(n, max_steps=T, seed=7)
        set_losses(sampler, np.arange(n), np.arange(n, dtype=float))
        batch = sampler.next_batch(step, 15)
        epoch_left = list(sampler.queue.items)
        queries = np.concatenate([batch.queries, [q for q, _ in epoch_left]])
        weights = np.concatenate([batch.weights, [w for _, w in epoch_left]])
        if pruned:
            assert len(queries) == 15 and (weights[queries < 10] == 2.0).all()
        else:
            assert sorted(queries) == list(range(n)) and (weights == 1.0).all()
        assert sampler.log_state()["pruning"] is pruned


def test_infobatch_without_annealing_prunes_to_the_end():
    """anneal: false (the authors' runs, docs/comparability.md D7): still pruning at the last step."""
    n, T = 20, 100
    sampler = info_sampler(n, max_steps=T, seed=7, anneal=False)
    set_losses(sampler, np.arange(n), np.arange(n, dtype=float))
    batch = sampler.next_batch(T - 1, 15)
    assert len(set(batch.queries)) == 15 and not sampler.queue.items  # 5 of the 10 below the mean skipped
    assert sampler.log_state()["pruning"] is True


# --- 7. batches of distinct queries ------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n,batch_size", [(7, 3), (7, 6), (7, 7), (10, 4)])
def test_batches_never_repeat_a_query(method, n, batch_size):
    sampler = make_sampler(method, PairIndex(pair_table(n, 2, seed=13)), 60, 1, PARAMS[method])
    counts = np.zeros(n, dtype=int)
    for step in range(60):
        batch = sampler.next_batch(step, batch_size)
        assert len(batch.queries) == len(batch.pairs) == len(batch.weights) == batch_size
        assert len(set(batch.queries.tolist())) == batch_size
        # each drawn pair belongs to its query
        for q, p in zip(batch.queries, batch.pairs, strict=True):
            assert sampler.pairs.offsets[q] <= p < sampler.pairs.offsets[q + 1]
        counts[batch.queries] += 1
        sampler.update(batch, *feed(step, batch))
    if method in ("basic", "dp_doc"):  # full epochs: every query equally often, up to deferrals
        assert counts.max() - counts.min() <= 2
    with pytest.raises(ValueError):
        sampler.next_batch(60, n + 1)


# --- 8. state ----------------------------------------------------------------------------------
def roundtrip_json(state):
    return json.loads(json.dumps(state))


def roundtrip_torch(state):
    # what opera.training does: torch.save, then torch.load(weights_only=True)
    buffer = io.BytesIO()
    torch.save({"sampler": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["sampler"]


def run_steps(sampler: Sampler, steps, batch_size):
    out = []
    for step in steps:
        batch = sampler.next_batch(step, batch_size)
        out.append((batch.queries.tolist(), batch.pairs.tolist(), batch.weights.tolist(), dict(sampler.log_state())))
        sampler.update(batch, *feed(step, batch))
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("roundtrip", [roundtrip_json, roundtrip_torch])
def test_state_dict_resumes_identically(method, roundtrip):
    pairs = PairIndex(pair_table(7, [1, 2, 3, 1, 2, 3, 4], seed=14))
    T, cut = 40, 13  # 13 steps of batch 3 over 7 queries: resume mid-epoch
    reference = make_sampler(method, pairs, T, 21, PARAMS[method])
    expected = run_steps(reference, range(T), 3)

    first = make_sampler(method, pairs, T, 21, PARAMS[method])
    assert run_steps(first, range(cut), 3) == expected[:cut]
    state = roundtrip(first.state_dict())
    assert roundtrip_json(state) == roundtrip_json(first.state_dict())

    resumed = make_sampler(method, pairs, T, 999, PARAMS[method])  # a different seed: the state wins
    resumed.load_state_dict(state)
    assert resumed.log_state() == first.log_state()
    assert run_steps(resumed, range(cut, T), 3) == expected[cut:]
    assert roundtrip_json(resumed.state_dict()) == roundtrip_json(reference.state_dict())
    json.dumps(resumed.log_state(), allow_nan=False)  # the train log is strict JSON


def test_dp_log_is_strict_json_when_no_query_is_forced_in():
    # r0 = 0.1, x0 = 3 gives n0 = 0.4 n, so x = 2 < n / n0 makes r = 0: no top queries
    sampler = dp_sampler(pair_table(50, 1), r0=0.1, x0=3.0)
    sampler.next_batch(0, 5)
    assert sampler.log_state()["n_top"] == 0
    json.dumps(sampler.log_state(), allow_nan=False)


# --- 9. determinism ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_batches_different_seed_different(method):
    pairs = PairIndex(pair_table(30, [1, 2, 3] * 10, seed=15))
    runs = [run_steps(make_sampler(method, pairs, 50, seed, PARAMS[method]), range(30), 4) for seed in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert [r[:2] for r in runs[0]] != [r[:2] for r in runs[2]]


def test_make_sampler_kinds():
    pairs = PairIndex(pair_table(5))
    assert type(make_sampler("basic", pairs, 10, 0, {})) is Sampler
    assert type(make_sampler("sp", pairs, 10, 0, {})) is Sampler
    assert type(make_sampler("random", pairs, 10, 0, {})) is Sampler
    assert isinstance(make_sampler("infobatch", pairs, 10, 0, IB), InfoBatchSampler)
    for method, q, d in [("dp", True, True), ("dp_query", True, False), ("dp_doc", False, True)]:
        sampler = make_sampler(method, pairs, 10, 0, DP)
        assert isinstance(sampler, DynamicPruningSampler) and (sampler.query_level, sampler.doc_level) == (q, d)
    with pytest.raises(ValueError):
        make_sampler("nope", pairs, 10, 0, {})
    with pytest.raises(ValueError):
        Sampler(PairIndex(pair_table(0)), 10, 0)


def test_uniform_sampler_draws_positives_uniformly():
    sampler = make_sampler("basic", PairIndex(mixed_pairs()), 100, 9, {})
    special = sampler.pairs.n_queries - 1
    counts = draw_counts(sampler, special, 3000)
    assert stats.chisquare(counts, np.full(6, counts.sum() / 6)).pvalue > 1e-3


# --- 10. diagnostics (logged, never used to sample) ---------------------------------------------
def test_uniform_diagnostics_after_one_epoch():
    pairs = PairIndex(pair_table(8, [1, 2, 3, 4, 1, 2, 3, 4], seed=16))
    sampler = make_sampler("basic", pairs, 20, 3, {})
    chosen = set()
    for step in range(2):  # 2 x 4 = 8 queries: exactly one epoch
        batch = sampler.next_batch(step, 4)
        chosen |= set(batch.pairs.tolist())
        sampler.update(batch, *feed(step, batch))
    log = sampler.log_state()
    assert log["positive_tv"] == 0.0  # a uniform draw is at distance 0 from uniform
    assert log["visit_cv"] == 0.0  # every query visited once
    assert log["distinct_positives"] == len(chosen) == 8 and log["n_pairs"] == pairs.n_pairs == 20
    batch = sampler.next_batch(2, 4)  # a second epoch begins: 4 queries visited twice, 4 once
    sampler.update(batch, *feed(2, batch))
    assert sampler.log_state()["visit_cv"] == pytest.approx(np.std([2] * 4 + [1] * 4) / 1.5, abs=1e-6)


def test_dp_doc_diagnostics_match_hand_computation():
    # one query, four positives: scores 0.9, 0.8 (above tau at c = 0.5), 0.1, 0.2; doc_weight 5
    frame = pd.DataFrame({"query_id": ["q"] * 4, "doc_id": list("abcd"), "score": [0.9, 0.8, 0.1, 0.2]})
    sampler = make_sampler("dp_doc", PairIndex(frame), 10, 0, {**DP, "c_start": 0.5, "c_end": 0.5})
    batch = sampler.next_batch(0, 1)
    p = np.array([5, 5, 1, 1]) / 12
    # = 1/3, logged to 6 decimals
    assert sampler.log_state()["positive_tv"] == pytest.approx(0.5 * np.abs(p - 0.25).sum(), abs=1e-6)
    assert sampler.log_state()["fresh_above_tau"] == 0.0  # nothing trained yet: every score is the base model's
    sampler.update(batch, np.array([0.95]) if batch.pairs[0] < 2 else np.array([0.05]), np.array([1.0]))
    log = sampler.log_state()
    above = sampler.scores > np.quantile(sampler.scores, 0.5)
    assert log["fresh_above_tau"] == pytest.approx(sampler.trained_pairs[above].mean(), abs=1e-6)
    assert log["distinct_positives"] == 1
