"""Static pruning of training pairs, before finetuning.

- sp: keep the top ``kept_pct`` of pairs by base-model score; queries left without a positive drop out.
- random: keep a uniform ``kept_pct`` of pairs (seeded): the control for sp.
- every other method trains on all pairs.

Pure functions over the pair table (columns query_id, doc_id, score, ...).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

STATIC_METHODS = ("sp", "random")


def n_kept(n_pairs: int, kept_pct: float) -> int:
    """How many pairs a ``kept_pct`` keeps: rounded up, and at least one."""
    return max(1, min(n_pairs, math.ceil(kept_pct * n_pairs - 1e-9)))


def static_prune(pairs: pd.DataFrame, kept_pct: float) -> pd.DataFrame:
    """The top ``kept_pct`` pairs by score; ties at the cut broken by (query_id, doc_id) for determinism."""
    order = pairs.sort_values(["score", "query_id", "doc_id"], ascending=[False, True, True], kind="stable")
    kept = order.head(n_kept(len(pairs), kept_pct))
    return kept.sort_values(["query_id", "doc_id"], kind="stable").reset_index(drop=True)


def random_prune(pairs: pd.DataFrame, kept_pct: float, seed: int) -> pd.DataFrame:
    """A uniform random ``kept_pct`` of pairs, chosen with ``seed``."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(pairs), size=n_kept(len(pairs), kept_pct), replace=False))
    return pairs.iloc[rows].reset_index(drop=True)


def prune(pairs: pd.DataFrame, method: str, params: dict, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Pairs the trainer may draw from for ``method`` and a report of what was kept."""
    if method == "sp":
        kept = static_prune(pairs, params["kept_pct"])
    elif method == "random":
        kept = random_prune(pairs, params["kept_pct"], seed)
    else:
        kept = pairs.reset_index(drop=True)
    report = {
        "method": method,
        "pairs_total": int(len(pairs)),
        "pairs_kept": int(len(kept)),
        "queries_total": int(pairs["query_id"].nunique()),
        "queries_kept": int(kept["query_id"].nunique()),
        "score_threshold": float(kept["score"].min()) if method == "sp" else None,
        **({"kept_pct": params["kept_pct"]} if method in STATIC_METHODS else {}),
    }
    return kept, report
