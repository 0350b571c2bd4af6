"""Unit tests of opera.methods.pruning: sp keeps the top kept_pct pairs by score, random a seeded uniform kept_pct."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from opera import methods
from opera.methods.pruning import n_kept, prune, random_prune, static_prune


def pair_table(n_queries: int = 40, seed: int = 0, ties: bool = False) -> pd.DataFrame:
    """1 to 5 positives per query, an extra column, distinct scores (or coarse scores with ties)."""
    rng = np.random.default_rng(seed)
    rows = [(f"q{i:03d}", f"d{i:03d}_{j}") for i in range(n_queries) for j in range(rng.integers(1, 6))]
    frame = pd.DataFrame(rows, columns=["query_id", "doc_id"])
    frame["score"] = np.round(rng.uniform(0, 1, len(frame)), 1) if ties else rng.permutation(len(frame)) / len(frame)
    frame["relevance"] = rng.integers(1, 3, len(frame))
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # unsorted input


def keys(frame: pd.DataFrame) -> set:
    return set(zip(frame["query_id"], frame["doc_id"], strict=True))


@pytest.mark.parametrize(
    "n,pct,expected",
    [
        (100, 0.25, 25),
        (30, 0.1, 3),
        (10, 0.25, 3),
        (7, 0.5, 4),
        (3, 0.01, 1),
        (8, 1.0, 8),
        (40, 0.33, 14),
        (200, 0.07, 14),
    ],
)
def test_n_kept_is_ceil_and_at_least_one(n, pct, expected):
    assert n_kept(n, pct) == expected


@pytest.mark.parametrize("pct", [0.1, 0.25, 0.33, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_sp_keeps_top_pairs_by_score(pct, ties):
    pairs = pair_table(seed=1, ties=ties)
    kept, report = prune(pairs, "sp", {"kept_pct": pct})
    k = math.ceil(round(pct * len(pairs), 9))
    # brute force: sort by score (descending), ties by (query_id, doc_id)
    ranked = sorted(pairs.itertuples(index=False), key=lambda r: (-r.score, r.query_id, r.doc_id))
    assert keys(kept) == {(r.query_id, r.doc_id) for r in ranked[:k]}
    assert len(kept) == k
    # no pair outside the kept set scores higher than a kept one
    dropped = pairs[~pairs.set_index(["query_id", "doc_id"]).index.isin(list(keys(kept)))]
    if len(dropped):
        assert dropped["score"].max() <= kept["score"].min()
    # rows are unchanged (extra columns travel along), sorted by (query_id, doc_id)
    merged = kept.merge(pairs, on=["query_id", "doc_id"], suffixes=("", "_in"))
    assert (merged["score"] == merged["score_in"]).all() and (merged["relevance"] == merged["relevance_in"]).all()
    assert list(kept.columns) == list(pairs.columns)
    assert kept[["query_id", "doc_id"]].equals(
        kept.sort_values(["query_id", "doc_id"])[["query_id", "doc_id"]].reset_index(drop=True)
    )
    # queries left without a pair drop out, and the report counts them
    assert set(kept["query_id"]) == {r.query_id for r in ranked[:k]}
    assert report == {
        "method": "sp",
        "pairs_total": len(pairs),
        "pairs_kept": k,
        "queries_total": pairs["query_id"].nunique(),
        "queries_kept": len({r.query_id for r in ranked[:k]}),
        "score_threshold": ranked[k - 1].score,
        "kept_pct": pct,
    }
    if pct <= 0.25:
        assert report["queries_kept"] < report["queries_total"]  # some queries really dropped out


def test_sp_is_deterministic_under_input_order():
    pairs = pair_table(seed=2, ties=True)
    a = static_prune(pairs, 0.3)
    b = static_prune(pairs.sample(frac=1.0, random_state=5), 0.3)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("pct", [0.1, 0.25, 0.5])
def test_random_keeps_a_seeded_subset(pct):
    pairs = pair_table(seed=3)
    k = math.ceil(round(pct * len(pairs), 9))
    kept, report = prune(pairs, "random", {"kept_pct": pct, "seed": 7})
    assert len(kept) == k and report["pairs_kept"] == k and report["kept_pct"] == pct
    # a subset of the input rows, unchanged, no duplicates
    assert len(keys(kept)) == k and keys(kept) <= keys(pairs)
    merged = kept.merge(pairs, on=["query_id", "doc_id"], suffixes=("", "_in"))
    assert len(merged) == k and (merged["score"] == merged["score_in"]).all()
    assert report["queries_kept"] == kept["query_id"].nunique() and report["score_threshold"] is None
    again, _ = prune(pairs, "random", {"kept_pct": pct, "seed": 7})
    pd.testing.assert_frame_equal(kept, again)
    other, _ = prune(pairs, "random", {"kept_pct": pct, "seed": 8})
    assert keys(other) != keys(kept)
    # not the top by score: random is the control for sp
    assert keys(kept) != keys(static_prune(pairs, pct))


def test_random_is_uniform_over_pairs():
    # each pair is kept with probability k / n. Over 400 seeds its count is Binomial(400, 0.25):
    # SE = sqrt(400 * 0.25 * 0.75) = 8.7; every pair within 5 SE of 100 (P(false alarm) < 1e-4).
    pairs = pair_table(20, seed=4)
    n, k = len(pairs), n_kept(len(pairs), 0.25)
    keys = pairs["query_id"].astype(str) + "\t" + pairs["doc_id"].astype(str)
    kept_keys = pd.concat(
        [
            kept["query_id"].astype(str) + "\t" + kept["doc_id"].astype(str)
            for kept in (random_prune(pairs, 0.25, s) for s in range(400))
        ]
    )
    counts = kept_keys.value_counts().reindex(keys, fill_value=0)  # a pair never kept counts 0
    assert len(counts) == n
    expected = 400 * k / n
    se = math.sqrt(400 * (k / n) * (1 - k / n))
    assert (counts - expected).abs().max() < 5 * se


@pytest.mark.parametrize("method", ["basic", "dp", "dp_query", "dp_doc", "infobatch", "pretrain"])
def test_other_methods_keep_all_pairs(method):
    pairs = pair_table(seed=5)
    kept, report = prune(pairs, method, {})
    pd.testing.assert_frame_equal(kept, pairs.reset_index(drop=True))
    assert report["pairs_kept"] == report["pairs_total"] == len(pairs)
    assert report["queries_kept"] == report["queries_total"]
    assert "kept_pct" not in report and methods.get(method).pruner is None


def test_random_draws_per_run_seed_unless_its_params_fix_one():
    from opera.methods.pruning import run_params, subset, subset_seed

    unset = {"kept_pct": 0.25, "seed": None}
    assert run_params("random", unset, 3) == {"kept_pct": 0.25, "seed": 3}
    assert subset("random", run_params("random", unset, 3)) == "seed3"
    fixed = {"kept_pct": 0.25, "seed": 0}
    assert subset("random", run_params("random", fixed, 3)) == subset("random", run_params("random", fixed, 5))
    assert subset("random", run_params("random", fixed, 3)) == "seed0"
    # top-score pruning and no pruning draw nothing: one pair set serves every seed
    assert subset("sp", run_params("sp", {"kept_pct": 0.25}, 3)) == "all"
    assert subset("dp", run_params("dp", {}, 3)) == "all"
    assert subset_seed("seed12") == 12 and subset_seed("all") is None
    pairs = pair_table(40, seed=5)
    first, _ = prune(pairs, "random", run_params("random", unset, 1))
    second, _ = prune(pairs, "random", run_params("random", unset, 2))
    assert not first.equals(second) and len(first) == len(second)
