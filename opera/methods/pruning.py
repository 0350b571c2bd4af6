"""Static pruning of training pairs, before finetuning.

A method's ``pruner`` (opera.methods) names one of :data:`PRUNERS`:

- ``top_score`` (sp): keep the top ``kept_pct`` of pairs by base-model score; queries left without
  a positive drop out.
- ``random`` (random): keep a uniform ``kept_pct`` of pairs, chosen with the params' ``seed``, by
  default the training run's own: the control for sp, whose spread over seeds then includes
  subset-to-subset variance.

A method without a pruner trains on all pairs.

Pure functions over the pair table (columns query_id, doc_id, score, ...).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from opera import methods
from opera.methods.params import RandomParams, SpParams


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


def _random_prune(pairs: pd.DataFrame, params: dict) -> pd.DataFrame:
    typed = RandomParams.of(params)
    return random_prune(pairs, typed.kept_pct, typed.seed)


def _top_score_prune(pairs: pd.DataFrame, params: dict) -> pd.DataFrame:
    return static_prune(pairs, SpParams.of(params).kept_pct)


# pruner name -> function(pairs, method params) -> kept pairs
PRUNERS = {"top_score": _top_score_prune, "random": _random_prune}
# pruners that draw at random: what they keep depends on a seed, so seeds may keep different pairs
SEEDED = frozenset({"random"})


def run_params(method: str, params: dict, run_seed: int) -> dict:
    """The params one training run's pruning uses: a seeded pruner without a ``seed`` of its own
    takes the run's."""
    if methods.get(method).pruner in SEEDED and params.get("seed") is None:
        return {**params, "seed": run_seed}
    return params


def subset(method: str, params: dict) -> str:
    """The name of the pair set ``method`` keeps with ``params`` (from :func:`run_params`): ``all``
    when its pruning draws nothing at random (one set serves every seed), else ``seed{S}``."""
    return f"seed{params['seed']}" if methods.get(method).pruner in SEEDED else "all"


def run_subset(method: str, params: dict, run_seed: int) -> str:
    """The pair set a run of ``run_seed`` trains on: :func:`subset` of its :func:`run_params`."""
    return subset(method, run_params(method, params, run_seed))


def subset_seed(name: str) -> int | None:
    """The seed a :func:`subset` name was drawn with (None for ``all``)."""
    return int(name.removeprefix("seed")) if name.startswith("seed") else None


def prune(pairs: pd.DataFrame, method: str, params: dict) -> tuple[pd.DataFrame, dict]:
    """Pairs the trainer may draw from for ``method`` and a report of what was kept."""
    pruner = methods.get(method).pruner
    kept = PRUNERS[pruner](pairs, params) if pruner else pairs.reset_index(drop=True)
    report = {
        "method": method,
        "pairs_total": int(len(pairs)),
        "pairs_kept": int(len(kept)),
        "queries_total": int(pairs["query_id"].nunique()),
        "queries_kept": int(kept["query_id"].nunique()),
        "score_threshold": float(kept["score"].min()) if pruner == "top_score" else None,
        **({"kept_pct": params["kept_pct"]} if pruner else {}),
    }
    return kept, report
