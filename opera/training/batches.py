"""What training draws from: the pairs, texts and known positives of a run (:class:`TrainingData`),
and the passages of a step's batch (each query's positive, then its hard negatives)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from opera.methods.sampling import Batch, PairIndex


@dataclass
class TrainingData:
    """Everything the loop draws from, indexed like ``pairs.query_ids``."""

    pairs: PairIndex
    query_texts: list[str]
    doc_texts: dict[str, str]
    negatives: list[np.ndarray]  # hard-negative pool (doc ids) per query
    positives: list[frozenset]  # every known positive per query (masked as in-batch negatives)
    corpus_ids: np.ndarray  # fallback negatives for a query with an empty pool

    @classmethod
    def build(
        cls,
        kept_pairs: pd.DataFrame,
        all_pairs: pd.DataFrame,
        negatives: pd.DataFrame,
        queries: pd.DataFrame,
        corpus_texts: dict[str, str],
    ) -> TrainingData:
        pairs = PairIndex(kept_pairs)
        query_text = queries.set_index("query_id")["text"]
        pools = negatives.groupby("query_id")["doc_id"].agg(lambda s: s.to_numpy())
        known = all_pairs.groupby("query_id")["doc_id"].agg(frozenset)
        empty = np.array([], dtype=object)
        return cls(
            pairs=pairs,
            query_texts=[query_text[q] for q in pairs.query_ids],
            doc_texts=corpus_texts,
            negatives=[pools.get(q, empty) for q in pairs.query_ids],
            positives=[known.get(q, frozenset()) for q in pairs.query_ids],
            corpus_ids=np.array(sorted(corpus_texts), dtype=object),
        )


def draw_negatives(data: TrainingData, query: int, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` hard negatives for one query: from its mined pool, else random non-positive documents."""
    if count == 0:
        return []
    pool = data.negatives[query]
    if len(pool) == 0:
        pool = np.array(
            [
                d
                for d in rng.choice(data.corpus_ids, size=min(len(data.corpus_ids), 4 * count + 8), replace=False)
                if d not in data.positives[query]
            ],
            dtype=object,
        )
    rows = rng.choice(len(pool), size=count, replace=len(pool) < count)
    return [str(pool[r]) for r in rows]


def batch_documents(data: TrainingData, batch: Batch, group: int, neg_rng: np.random.Generator) -> list[str]:
    """Passages of the global batch: per query its drawn positive, then ``group - 1`` hard negatives.

    Every process draws for the whole global batch, so the RNG streams stay identical across ranks.
    """
    docs: list[str] = []
    for query, pair in zip(batch.queries, batch.pairs, strict=True):
        docs.append(str(data.pairs.doc_ids[pair]))
        docs.extend(draw_negatives(data, int(query), group - 1, neg_rng))
    return docs
