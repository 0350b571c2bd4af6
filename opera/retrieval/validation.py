"""Validation on a pool: learning curves without re-encoding the whole corpus at every checkpoint.

Per (dataset, model) a pool of documents is built once from the base model (rule validation_pool,
beside the score stage's files): every judged document of the validation queries, each query's top
``candidates`` under the base model, and a seeded random sample of the rest of the corpus. A
finetune run whose model sets ``validate_every`` encodes the pool and the queries with its current
weights every that many steps and at its last, searches the pool exactly and logs the pool's
metrics in its train log (and its tracking); that time is not training time.

The validation queries are the evaluation split's judged queries (all of them, or a seeded
``queries`` of them), so a pool curve estimates the curve of the exact full-corpus evaluation, on
the same queries, at a fraction of its cost. Pool metrics are optimistic (the pool lacks most of
the corpus's distractors); bench/pool_fidelity.py measures how far they are from the exact ones and
whether they order the methods the same way. The result tables always come from the exact
evaluation of each run's final checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from opera import data, io
from opera.retrieval import index, metrics
from opera.settings import EncoderSettings, PoolMetrics, PoolSettings, Validation

log = logging.getLogger(__name__)

POOL_FILE = "validation_pool.parquet"
POOL_REPORT = "validation_pool.json"
# The pool's columns: why each document is in it, in this order of precedence.
REASONS = ("judged", "candidate", "random")
# Tables and plots label pool metrics with this prefix (pool_NDCG@10), never as the exact ones.
POOL_PREFIX = "pool_"
POOL_METRICS = (POOL_PREFIX + "NDCG@10", POOL_PREFIX + "Recall@20")  # the curves' panels


def validation_queries(qrels: pd.DataFrame, settings: PoolSettings) -> list[str]:
    """The judged queries (at least one relevant document) of the evaluation split, in id order, or
    a seeded sample of ``settings.queries`` of them."""
    judged = sorted(qrels.loc[qrels["relevance"] > 0, "query_id"].unique())
    if settings.queries is None or settings.queries >= len(judged):
        return judged
    rng = np.random.default_rng([settings.seed, 1])
    return sorted(rng.choice(np.asarray(judged, dtype=object), size=settings.queries, replace=False))


def build_pool(
    qrels: pd.DataFrame,
    query_ids: list[str],
    ranked_rows: np.ndarray,
    doc_ids: data.CorpusIds,
    settings: PoolSettings,
) -> pd.DataFrame:
    """The pool (doc_id, row, reason) in corpus-row order: the judged documents of ``query_ids``,
    their base-model top candidates (``ranked_rows``: one row of corpus rows per query, -1 for none)
    and ``settings.random`` others drawn with ``settings.seed``. A document is listed once, under the
    first of :data:`REASONS` that put it there."""
    judged_ids = qrels.loc[qrels["query_id"].isin(query_ids), "doc_id"].unique()
    judged = np.unique(doc_ids.rows_of(judged_ids)) if len(judged_ids) else np.zeros(0, dtype=np.int64)
    candidates = np.setdiff1d(np.unique(ranked_rows[ranked_rows >= 0]), judged)
    taken = np.union1d(judged, candidates)
    rest = np.setdiff1d(np.arange(len(doc_ids), dtype=np.int64), taken)
    wanted = settings.random_count(len(doc_ids))
    if wanted > len(rest):
        # the defaults are sized for large corpora: on a small one the pool takes the whole rest
        log.info("validation pool: %d random documents asked, %d left outside the pool: taking all", wanted, len(rest))
    rng = np.random.default_rng([settings.seed, 2])
    drawn = np.sort(rng.choice(rest, size=min(wanted, len(rest)), replace=False)) if len(rest) else rest
    rows = np.concatenate([judged, candidates, drawn])
    reasons = np.repeat(np.array(REASONS, dtype=object), [len(judged), len(candidates), len(drawn)])
    order = np.argsort(rows, kind="stable")
    pool = pd.DataFrame({"doc_id": doc_ids.at(rows[order]), "row": rows[order], "reason": reasons[order]})
    return pool.astype({"doc_id": str, "reason": str})


def score_pool(
    query_ids: list[str],
    query_emb: np.ndarray,
    pool: pd.DataFrame,
    pool_emb: np.ndarray,
    qrels: pd.DataFrame,
    scoring: PoolMetrics,
) -> dict:
    """Mean metrics of ``query_ids`` searched exactly over the pool's embeddings (a flat index)."""
    scores, hits = index.search(index.build_index(pool_emb), query_emb, min(scoring.top_k, len(pool)))
    ids = np.where(hits >= 0, pool["doc_id"].to_numpy(dtype=object)[np.maximum(hits, 0)], None)
    run = metrics.run_from_search(query_ids, ids, scores, hits)
    judged = qrels[qrels["query_id"].isin(query_ids)]
    _, summary = metrics.evaluate(
        run,
        metrics.qrels_from_frame(judged),
        scoring.cutoffs,
        scoring.mrr_cutoff,
        measures=metrics.measures_on(scoring),
    )
    return summary["metrics"]


def read_pool(path: str | Path) -> pd.DataFrame:
    """A pool written by the validation_pool rule, verified against its checksum and its columns."""
    pool = io.load_table(path)
    missing = {"doc_id", "row", "reason"} - set(pool.columns)
    if missing:
        raise io.CorruptArtifactError(f"{path}: a validation pool lacks the column(s) {sorted(missing)}")
    unknown = sorted(set(pool["reason"]) - set(REASONS))
    if unknown:
        raise io.CorruptArtifactError(f"{path}: unknown reason(s) {unknown}; expected {list(REASONS)}")
    return pool


class PoolValidator:
    """Scores the model being trained on the pool: its texts are read once, encoded at every call."""

    def __init__(self, validation: Validation, pool_path: str | Path, data_dir: str | Path, encoder: EncoderSettings):
        report = io.read_json(Path(pool_path).with_name(POOL_REPORT))
        if report["split"] != validation.split:
            raise ValueError(
                f"{pool_path}: a pool of split {report['split']!r}, the job validates on {validation.split!r}"
            )
        self.validation, self.encoder = validation, encoder
        self.pool = read_pool(pool_path)
        rows = self.pool["row"].to_numpy()
        if not np.array_equal(data.CorpusIds(data_dir).at(rows), self.pool["doc_id"].to_numpy(dtype=object)):
            raise io.CorruptArtifactError(
                f"{pool_path}: its rows are not those documents in {data_dir}; rebuild the pool"
            )
        self.passages = data.passages_at(data_dir, rows, validation.title_join)
        dataset = data.read_prepared(data_dir, corpus=False)
        self.query_ids = list(report["query_ids"])
        text = dataset.queries.set_index("query_id")["text"]
        self.query_texts = [text[q] for q in self.query_ids]
        self.qrels = dataset.qrels[validation.split]

    def __call__(self, model) -> dict:
        """``{"seconds", "documents", "queries", "metrics"}`` of ``model``'s current weights; leaves the
        model in eval mode (the caller puts it back to training)."""
        from opera.models import encoders

        began = time.perf_counter()
        batch = self.validation.encode_batch_size
        quiet = {"show_progress": False}
        pool_emb = encoders.encode_side(model, self.encoder, "passage", self.passages, batch, "pool", **quiet)
        query_emb = encoders.encode_side(model, self.encoder, "query", self.query_texts, batch, "queries", **quiet)
        scored = score_pool(self.query_ids, query_emb, self.pool, pool_emb, self.qrels, self.validation.scoring)
        return {
            "seconds": round(time.perf_counter() - began, 4),
            "documents": len(self.pool),
            "queries": len(self.query_ids),
            "metrics": scored,
        }


def curves(train_logs: dict[tuple, list[dict]], pool_reports: dict[tuple, dict]) -> pd.DataFrame:
    """Every validation of every run as rows (dataset, model, method, seed, budget, step, main_run,
    train_seconds, validation_seconds, pool_<metric>...), with a step-0 row per (dataset, model) for
    the base model (method pretrain) from its pool report. ``train_logs`` maps (dataset, model,
    method, seed, budget) to a run's train-log entries; ``pool_reports`` maps (dataset, model) to its
    validation_pool.json. A run is main when its budget is the longest of its model's."""
    rows = []
    for (dataset, model), report in sorted(pool_reports.items()):
        base = {POOL_PREFIX + name: value for name, value in report["base_metrics"].items()}
        rows.append(
            {"dataset": dataset, "model": model, "method": "pretrain", "seed": None, "budget": None, "step": 0}
            | {"main_run": True, "train_seconds": 0.0, "validation_seconds": 0.0}
            | base
        )
    longest = {}
    for _, model, _, _, budget in train_logs:
        longest[model] = max(longest.get(model, 0), budget)
    for (dataset, model, method, seed, budget), entries in sorted(train_logs.items()):
        for entry in entries:
            if "validation" not in entry:
                continue
            rows.append(
                {"dataset": dataset, "model": model, "method": method, "seed": seed, "budget": budget}
                | {"step": entry["step"], "main_run": budget == longest[model], "train_seconds": entry["elapsed"]}
                | {"validation_seconds": entry["validation"]["seconds"]}
                | {POOL_PREFIX + name: value for name, value in entry["validation"]["metrics"].items()}
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    from opera.report.frames import metric_columns  # lazy: pandas

    pooled = {column.removeprefix(POOL_PREFIX): column for column in frame.columns if column.startswith(POOL_PREFIX)}
    ordered = [pooled[name] for name in metric_columns(pd.DataFrame(columns=list(pooled)))]
    frame = frame[[column for column in frame.columns if column not in ordered] + ordered]
    for column in ("seed", "budget"):
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
    return frame.sort_values(["dataset", "model", "method", "seed", "budget", "step"], kind="stable").reset_index(
        drop=True
    )


def write_tables(
    curves_frame: pd.DataFrame,
    tables_dir: str | Path,
    global_batch: dict[str, int] | None = None,
    ttq_tolerance: float = 0.01,
) -> dict[str, pd.DataFrame]:
    """``validation.csv`` (every validation, :func:`curves`) and ``time_to_quality_pool.csv`` (time to
    quality read from the pool curves: the step at which a method first reaches basic's final pool
    NDCG@10 within a tolerance; metric ``pool_NDCG@10``, never the exact table's)."""
    from opera.report import frames, time_to_quality

    tables_dir = Path(tables_dir)
    ttq = time_to_quality.time_to_quality(
        curves_frame, global_batch, metric=POOL_PREFIX + "NDCG@10", tolerance=ttq_tolerance
    )
    frames.write_table(curves_frame, tables_dir / "validation.csv")
    frames.write_table(ttq, tables_dir / "time_to_quality_pool.csv")
    return {"validation": curves_frame, "time_to_quality_pool": ttq}
