"""Pair scoring and hard-negative mining under the base model.

Per (dataset, model) the corpus and the train queries are encoded once; every train positive pair
gets its cosine under the base model (the score static and dynamic pruning start from), and each
train query gets a pool of hard negatives: positions lo..hi (0-based, hi exclusive) of the base
model's ranking after its positives are removed. Optionally (the authors' pools, docs/comparability.md
D4) its judged non-relevant documents come first and the pool is capped.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def positive_pairs(qrels: pd.DataFrame) -> pd.DataFrame:
    """Train positives (relevance >= 1), sorted for a deterministic order."""
    pairs = qrels.loc[qrels["relevance"] > 0, ["query_id", "doc_id", "relevance"]]
    return pairs.sort_values(["query_id", "doc_id"], kind="stable").reset_index(drop=True)


def score_pairs(pairs: pd.DataFrame, query_ids: list[str], query_emb: np.ndarray, doc_ids, corpus) -> pd.DataFrame:
    """Add a ``score`` column: cosine of each (query, positive) under the given embeddings
    (``doc_ids`` a :class:`opera.data.CorpusIds`, ``corpus`` the corpus's embedding store)."""
    query_row = pd.Series(np.arange(len(query_ids)), index=query_ids)
    q = query_emb[query_row.loc[pairs["query_id"]].to_numpy()]
    d = corpus.rows_at(doc_ids.rows_of(pairs["doc_id"]))
    scored = pairs.copy()
    scored["score"] = np.einsum("ij,ij->i", q, d).astype(np.float32)
    return scored


def mine_negatives(
    pairs: pd.DataFrame,
    query_ids: list[str],
    query_emb: np.ndarray,
    doc_ids,
    corpus,
    lo: int,
    hi: int,
) -> pd.DataFrame:
    """Hard negatives per query: positions lo..hi of its base-model ranking with positives removed
    (``doc_ids`` a :class:`opera.data.CorpusIds`, ``corpus`` the corpus's embedding store).

    Returns columns query_id, doc_id, rank (1-based rank in the full base-model ranking).
    """
    positives = pairs.groupby("query_id")["doc_id"].agg(set).to_dict()
    most_positives = max((len(p) for p in positives.values()), default=0)
    k = min(len(doc_ids), hi + most_positives)
    _, ranked = corpus.search(query_emb, k)
    ranked_ids = doc_ids.at(ranked)
    rows_q, rows_d, rows_r = [], [], []
    for query_id, row_ids, ids in zip(query_ids, ranked, ranked_ids, strict=True):
        own = positives.get(query_id, set())
        kept = [(rank, d) for rank, (r, d) in enumerate(zip(row_ids, ids, strict=True), 1) if r >= 0 and d not in own]
        kept = kept[lo:hi]
        rows_q.extend([query_id] * len(kept))
        rows_d.extend(doc for _, doc in kept)
        rows_r.extend(rank for rank, _ in kept)
    negatives = pd.DataFrame({"query_id": rows_q, "doc_id": rows_d, "rank": np.asarray(rows_r, dtype=np.int32)})
    short = len(query_ids) - negatives["query_id"].nunique()
    if short:
        log.warning("%d train queries got no hard negative in ranks %d..%d (corpus too small)", short, lo, hi)
    return negatives


def judged_negatives(qrels: pd.DataFrame) -> pd.DataFrame:
    """Judged non-relevant (query, document) pairs: relevance 0 after the split's threshold."""
    judged = qrels.loc[qrels["relevance"] <= 0, ["query_id", "doc_id"]]
    return judged.sort_values(["query_id", "doc_id"], kind="stable").reset_index(drop=True)


# The score stage is shared by every seed of a grid, so its one random choice has its own fixed seed.
POOL_SEED = 0


def negative_pools(mined: pd.DataFrame, judged: pd.DataFrame | None = None, cap: int | None = None) -> pd.DataFrame:
    """Each query's hard-negative pool (query_id, doc_id, rank): its ``judged`` negatives first
    (rank 0), then its mined ones in rank order; with a ``cap``, mined negatives are first
    subsampled at random to ``cap`` and the merged pool keeps its first ``cap`` (as the authors do)."""
    if cap is not None:
        rng = np.random.default_rng(POOL_SEED)
        keep = np.ones(len(mined), dtype=bool)
        for rows in mined.groupby("query_id", sort=True).indices.values():
            if len(rows) > cap:
                keep[rows] = False
                keep[np.sort(rng.choice(rows, size=cap, replace=False))] = True
        mined = mined[keep]
    parts = [mined.assign(order=1)]
    if judged is not None:
        parts.insert(0, judged.assign(rank=np.int32(0), order=0))
    pool = pd.concat(parts, ignore_index=True).sort_values(["query_id", "order", "rank", "doc_id"], kind="stable")
    if cap is not None:
        pool = pool.groupby("query_id", sort=False).head(cap)
    pool = pool.drop(columns="order").reset_index(drop=True)
    return pool.astype({"rank": np.int32})
