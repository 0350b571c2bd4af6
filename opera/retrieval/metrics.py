"""Retrieval metrics with trec_eval semantics, through pytrec_eval.

NDCG@k uses graded gains and an ideal DCG over *all* judged-relevant documents (not only the
retrieved ones); Recall@k divides by all relevant documents; ties in the run are broken as
trec_eval does (by document id, descending). MRR@k is trec_eval's reciprocal rank on the top k.
Queries whose judgments hold no relevant document are excluded and counted, as BEIR does.

Measures beyond trec_eval's are registered by name in :data:`MEASURES` (a function of the run and
the judged qrels giving one value per query); each becomes a column of ``per_query.parquet``,
``metrics.json`` and the result tables. Adding one is one entry there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from opera import io

log = logging.getLogger(__name__)

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def qrels_from_frame(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for query_id, doc_id, relevance in frame[["query_id", "doc_id", "relevance"]].itertuples(index=False):
        qrels.setdefault(str(query_id), {})[str(doc_id)] = int(relevance)
    return qrels


def run_from_search(
    query_ids: list[str], hit_ids: np.ndarray, scores: np.ndarray, rows: np.ndarray
) -> dict[str, dict[str, float]]:
    """A run dict from search results: ``hit_ids[i]`` are the document ids of the hits of
    ``query_ids[i]`` (``rows[i]`` their corpus rows, -1 for a missing hit)."""
    run = {}
    for query_id, row_ids, ids, row_scores in zip(query_ids, rows, hit_ids, scores, strict=True):
        valid = row_ids >= 0
        run[str(query_id)] = {str(d): float(s) for d, s in zip(ids[valid], row_scores[valid], strict=True)}
    return run


AUTHORS_NDCG = "NDCG@10_authors"


def authors_ndcg(run: Run, qrels: Qrels, k: int = 10) -> dict[str, float]:
    """NDCG@k as the OPERA authors compute it (docs/comparability.md, D1): sklearn's ``ndcg_score``
    on binary labels of the *retrieved* documents, so the ideal DCG counts only relevant documents
    that were retrieved, grades are ignored and tied scores share their gain. A reported extra,
    never a replacement for trec_eval's NDCG."""
    from sklearn.metrics import ndcg_score

    values = {}
    for query_id, docs in qrels.items():
        retrieved = run.get(query_id, {})
        if len(retrieved) < 2:  # sklearn needs two documents; one relevant retrieved doc is a perfect ranking
            values[query_id] = float(any(docs.get(d, 0) > 0 for d in retrieved))
            continue
        labels = np.array([[1.0 if docs.get(d, 0) > 0 else 0.0 for d in retrieved]])
        scores = np.array([list(retrieved.values())], dtype=np.float64)
        values[query_id] = float(ndcg_score(labels, scores, k=k)) if labels.any() else 0.0
    return values


@dataclass(frozen=True)
class Measure:
    """A per-query metric beyond trec_eval's: ``per_query(run, judged qrels)`` gives one value per
    judged query. ``switch`` names the ``evaluation`` key that turns it on (None: always computed);
    ``shown`` puts it in results.md/tex beside the main metrics (the csv holds every metric)."""

    name: str
    per_query: Callable[[Run, Qrels], Mapping[str, float]]
    switch: str | None = None
    shown: bool = True


MEASURES: dict[str, Measure] = {
    measure.name: measure for measure in (Measure(AUTHORS_NDCG, authors_ndcg, switch="authors_ndcg"),)
}


def measures_on(settings: object) -> tuple[str, ...]:
    """The registered measures an evaluation computes: those without a switch and those whose
    switch is true in ``settings`` (opera.settings.Evaluation, or a pool's PoolMetrics)."""
    return tuple(m.name for m in MEASURES.values() if m.switch is None or getattr(settings, m.switch, False))


def evaluate(
    run: Run,
    qrels: Qrels,
    cutoffs: Iterable[int] = (1, 5, 10, 20, 50, 100),
    mrr_cutoff: int = 10,
    measures: Collection[str] = (),
) -> tuple[pd.DataFrame, dict]:
    """Per-query metrics (one row per evaluated query) and a summary with means and counts.

    Queries in ``qrels`` without any relevant document are excluded (counted as ``n_excluded``);
    an evaluated query missing from the run scores 0 on every metric. ``measures`` (names in
    :data:`MEASURES`, see :func:`measures_on`) add their columns after the standard ones.
    """
    import pytrec_eval

    cutoffs = sorted(set(int(k) for k in cutoffs))
    judged = {q: dict(docs) for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())}
    excluded = sorted(set(qrels) - set(judged))
    if not judged:
        raise ValueError("no query has a relevant document in the qrels: nothing to evaluate")
    run = {q: dict(run.get(q, {})) for q in judged}
    k_list = ",".join(map(str, cutoffs))
    main = pytrec_eval.RelevanceEvaluator(judged, {f"ndcg_cut.{k_list}", f"recall.{k_list}"})
    scores = main.evaluate({q: docs for q, docs in run.items() if docs})
    top = {q: dict(_trec_order(docs)[:mrr_cutoff]) for q, docs in run.items() if docs}
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top)

    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; registered: {sorted(MEASURES)}")
    extra = {name: MEASURES[name].per_query(run, judged) for name in MEASURES if name in measures}
    rows = []
    for query_id in sorted(judged):
        values = scores.get(query_id, {})
        row = {"query_id": query_id}
        for k in cutoffs:
            row[f"NDCG@{k}"] = values.get(f"ndcg_cut_{k}", 0.0)
        for k in cutoffs:
            row[f"Recall@{k}"] = values.get(f"recall_{k}", 0.0)
        row[f"MRR@{mrr_cutoff}"] = mrr.get(query_id, {}).get("recip_rank", 0.0)
        for name, values_of in extra.items():
            row[name] = values_of[query_id]
        rows.append(row)
    per_query = pd.DataFrame(rows)
    summary = {
        "n_queries": len(per_query),
        "n_excluded": len(excluded),
        "metrics": {name: float(per_query[name].mean()) for name in per_query.columns if name != "query_id"},
    }
    if excluded:
        log.info("excluded %d queries without a relevant document", len(excluded))
    return per_query, summary


def _trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``docs`` ranked as trec_eval ranks them: score descending, compared in single precision
    (trec_eval stores scores as C floats), then doc id descending."""
    return sorted(docs.items(), key=lambda kv: (-float(np.float32(kv[1])), _neg_key(kv[0])))


class _neg_key(str):
    """Sort key that orders strings descending inside an ascending sort (trec_eval's tie-break)."""

    def __lt__(self, other):  # type: ignore[override]
        return str.__gt__(self, other)


def write_trec_run(path: str | Path, run: Run, tag: str = "opera") -> None:
    """Write ``run`` as a standard TREC run file: ``qid Q0 docid rank score tag``, best first.

    Scores are written at full precision (shortest round-trip repr), not rounded: rounding would
    turn near-ties into exact ties that trec_eval (which ranks by score, then doc id descending)
    would order differently from the ranks written here and from :func:`evaluate` on ``run``.
    """
    lines = []
    for query_id in sorted(run):
        ranked = _trec_order(run[query_id])
        lines.extend(
            f"{query_id} Q0 {doc_id} {rank} {float(score)!r} {tag}" for rank, (doc_id, score) in enumerate(ranked, 1)
        )
    io.write_text(path, "".join(line + "\n" for line in lines))


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for number, line in enumerate(io.read_text(path, "TREC run").splitlines(), 1):
        parts = line.split()
        if not parts:  # blank line (e.g. trailing newline)
            continue
        if len(parts) != 6:
            raise io.FileFormatError(
                f"{path}:{number}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}; "
                "likely cause: not a TREC run file, or a line cut short (truncated)"
            )
        try:
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
        except ValueError:
            raise io.FileFormatError(
                f"{path}:{number}: score {parts[4]!r} (column 5) is not a number; likely cause: not a TREC run file"
            ) from None
    return run
