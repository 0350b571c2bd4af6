"""Stages 1-3 and what sits between them: download, score (and the validation pool), prune, mine."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from opera import data as data_mod
from opera import embedding_store, io
from opera.embedding_store import EmbeddingStore, StoreLayout
from opera.errors import StageError
from opera.methods import pruning
from opera.models.checkpoints import model_identity
from opera.retrieval import scoring
from opera.retrieval import validation as validation_mod
from opera.settings import EncoderSettings, Mining, PoolMetrics, PoolSettings

log = logging.getLogger(__name__)


def download(
    *, name: str, spec: dict, options: dict, out_dir: str | Path, global_batches: dict[str, int] | None = None
) -> dict:
    """Reads the dataset's source; writes the validated, normalized tables to ``out_dir``, unless its
    train split has fewer queries than a model's global batch (model -> batch_size x GPUs)."""
    return data_mod.prepare(name, spec, options, out_dir, global_batches)


def score(
    *,
    judged_negatives_first: bool = False,
    negative_pool_cap: int | None = None,
    data_dir: str | Path,
    encoder: EncoderSettings,
    mining: Mining,
    encode_batch_size: int,
    title_join: str,
    out_dir: str | Path,
    layout: StoreLayout | None = None,
    devices: tuple = (None,),
) -> dict:
    """Reads the prepared data; writes the base model's corpus and train-query embeddings, scored
    positive pairs and mined hard negatives to ``out_dir``.

    Files: corpus_embeddings/ (an embedding store, rows in corpus.parquet order),
    train_query_embeddings.npy, pairs.parquet (query_id, doc_id, relevance, score),
    negatives.parquet (query_id, doc_id, rank) and score.json.
    """
    dataset = data_mod.read_prepared(data_dir, corpus=False)
    # Without a train split (a pretrain-only config) the corpus is still encoded for evaluation.
    no_train = pd.DataFrame({"query_id": [], "doc_id": [], "relevance": np.zeros(0, dtype=np.int64)})
    pairs = scoring.positive_pairs(dataset.qrels.get("train", no_train))
    if "train" in dataset.qrels and pairs.empty:
        raise StageError(f"{data_dir}: the train split has no relevant (query, document) pair")
    query_ids = sorted(pairs["query_id"].unique())
    query_text = dataset.queries.set_index("query_id")["text"]
    out_dir = Path(out_dir)
    began = time.perf_counter()
    from opera.models import encoders

    # on one device, one model encodes the corpus and the train queries; several devices load their own
    model = encoders.load(encoder, device=devices[0]) if len(devices) == 1 else None
    manifest = embedding_store.encode_corpus(
        out_dir / "corpus_embeddings",
        data_dir=data_dir,
        title_join=title_join,
        encoder=encoder,
        batch_size=encode_batch_size,
        layout=layout or StoreLayout(),
        devices=devices,
        loaded=model,
        model=encoder.path,
        model_identity=model_identity(encoder.path),
    )
    corpus = EmbeddingStore(out_dir / "corpus_embeddings")
    encoded = time.perf_counter()
    if query_ids:
        if model is None:
            model = encoders.load(encoder, device=devices[0])
        query_emb = encoders.encode_side(
            model, encoder, "query", [query_text[q] for q in query_ids], encode_batch_size, desc="train queries"
        )
        doc_ids = data_mod.CorpusIds(data_dir)
        scored = scoring.score_pairs(pairs, query_ids, query_emb, doc_ids, corpus)
        negatives = scoring.mine_negatives(pairs, query_ids, query_emb, doc_ids, corpus, mining.lo, mining.hi)
        negatives = _pools(negatives, dataset, query_ids, judged_negatives_first, negative_pool_cap)
    else:
        query_emb = np.zeros((0, corpus.dim), dtype=np.float32)
        scored = pairs.assign(score=np.zeros(0, dtype=np.float32))
        negatives = pd.DataFrame({"query_id": [], "doc_id": [], "rank": np.zeros(0, dtype=np.int32)})

    io.save_array(out_dir / "train_query_embeddings.npy", query_emb)
    io.save_table(out_dir / "pairs.parquet", scored)
    io.save_table(out_dir / "negatives.parquet", negatives)
    report = {
        "model": encoder.path,
        "dimension": corpus.dim,
        "documents": len(corpus),
        "corpus_shards": len(manifest["shards"]),
        "train_queries": len(query_ids),
        "pairs": len(scored),
        "negatives": len(negatives),
        "mining": {"hi": mining.hi, "lo": mining.lo},
        "corpus_encode_seconds": round(encoded - began, 2),
        "total_seconds": round(time.perf_counter() - began, 2),
        "score_mean": float(scored["score"].mean()) if len(scored) else None,
    }
    io.write_json(out_dir / "score.json", report)
    return report


def validation_pool(
    *,
    data_dir: str | Path,
    corpus_path: str | Path,
    encoder: EncoderSettings,
    split: str,
    pool: PoolSettings,
    scoring: PoolMetrics,
    encode_batch_size: int,
    out_dir: str | Path,
) -> dict:
    """Reads the prepared qrels of ``split`` and the base model's corpus embeddings (score's);
    writes the validation pool (opera.retrieval.validation) as validation_pool.parquet (doc_id, row, reason)
    and validation_pool.json: its queries, its size by reason, and the base model's pool metrics
    (the curves' step 0)."""
    from opera.models import encoders

    began = time.perf_counter()
    queries, qrels = eval_tables(data_dir, split)
    query_ids = validation_mod.validation_queries(qrels, pool)
    corpus = EmbeddingStore(corpus_path)
    doc_ids = data_mod.CorpusIds(data_dir)
    corpus.check_encoded_by(model_identity(encoder.path), encoder.path)
    text = queries.set_index("query_id")["text"]
    model = encoders.load(encoder)
    query_emb = encoders.encode_side(
        model, encoder, "query", [text[q] for q in query_ids], encode_batch_size, desc=f"{split} queries"
    )
    _, ranked = corpus.search(query_emb, pool.candidates) if pool.candidates else (None, np.zeros((0, 0), np.int64))
    table = validation_mod.build_pool(qrels, query_ids, ranked, doc_ids, pool)
    base = validation_mod.score_pool(
        query_ids, query_emb, table, corpus.rows_at(table["row"].to_numpy()), qrels, scoring
    )
    out_dir = Path(out_dir)
    io.save_table(out_dir / validation_mod.POOL_FILE, table)
    report = {
        "model": encoder.path,
        "split": split,
        "settings": dataclasses.asdict(pool),
        "corpus_documents": len(doc_ids),
        "documents": len(table),
        "fraction_of_corpus": round(len(table) / len(doc_ids), 6),
        "by_reason": {reason: int((table["reason"] == reason).sum()) for reason in validation_mod.REASONS},
        "query_ids": list(query_ids),
        "base_metrics": base,
        "seconds": round(time.perf_counter() - began, 2),
    }
    io.write_json(out_dir / validation_mod.POOL_REPORT, report)
    log.info(
        "validation pool: %d of %d documents (%.1f%%) for %d queries; base NDCG@10 %.4f on the pool",
        len(table),
        len(doc_ids),
        100 * report["fraction_of_corpus"],
        len(query_ids),
        base.get("NDCG@10", float("nan")),
    )
    return report


def _pools(mined: pd.DataFrame, dataset, query_ids, judged_first: bool, cap: int | None) -> pd.DataFrame:
    """The authors' negative pools when asked (docs/comparability.md D4); else the mined ones as they are."""
    if not judged_first and cap is None:
        return mined
    judged = None
    if judged_first:
        judged = scoring.judged_negatives(dataset.qrels["train"])
        judged = judged[judged["query_id"].isin(set(query_ids))]
    return scoring.negative_pools(mined, judged, cap)


def prune(
    *,
    pairs_path: str | Path,
    method: str,
    params: dict,
    out_pairs: str | Path,
    out_report: str | Path,
    global_batch: int | None = None,
    dataset: str = "",
    model: str = "",
) -> dict:
    """Reads the scored pairs; writes the pairs ``method`` may train on and a report of what it kept.

    ``global_batch`` (batch_size x GPUs: the distinct queries one training step draws): the kept
    pairs must cover at least that many queries, else a StageError before anything is written, so
    that no finetune job is spent on a batch that cannot be filled."""
    kept, report = pruning.prune(io.load_table(pairs_path), method, params)
    if global_batch is not None and report["queries_kept"] < global_batch:
        from opera import methods

        ratio, key = "", methods.get(method).params_key
        if "kept_pct" in report:
            ratio = f", or keep more (method_params.{key}.kept_pct, now {report['kept_pct']})"
        raise StageError(
            f"{pairs_path}: method {method!r} keeps {report['queries_kept']} of {report['queries_total']} train "
            f"queries of dataset {dataset!r}, fewer than the {global_batch} distinct queries a training step of "
            f"model {model!r} draws (batch_size x GPUs); lower models.{model}.batch_size so that at most "
            f"{report['queries_kept']} are drawn{ratio}"
        )
    io.save_table(out_pairs, kept)
    io.write_json(out_report, report)
    log.info(
        "%s keeps %d of %d pairs, %d of %d queries",
        method,
        report["pairs_kept"],
        report["pairs_total"],
        report["queries_kept"],
        report["queries_total"],
    )
    return report


def mine(
    *,
    data_dir: str | Path,
    scored_pairs_path: str | Path,
    kept_pairs_path: str | Path,
    corpus_embeddings_path: str | Path,
    query_embeddings_path: str | Path,
    mining: Mining,
    judged_negatives_first: bool = False,
    negative_pool_cap: int | None = None,
    out_negatives: str | Path,
) -> dict:
    """Reads the base model's embeddings of `score` and a method's kept pairs; writes hard negatives
    mined excluding only the kept positives, so a pruned positive may become its query's negative
    (the authors' order: prune, then mine; docs/comparability.md D6)."""
    dataset = data_mod.read_prepared(data_dir, corpus=False)
    query_ids = sorted(io.load_table(scored_pairs_path)["query_id"].unique())  # the rows of the query embeddings
    kept = io.load_table(kept_pairs_path)
    query_emb = io.load_array(query_embeddings_path)
    corpus = EmbeddingStore(corpus_embeddings_path)
    doc_ids = data_mod.CorpusIds(data_dir)
    if len(query_emb) != len(query_ids) or len(corpus) != len(doc_ids):
        raise StageError(f"{query_embeddings_path} or {corpus_embeddings_path}: rows do not match the scored data")
    keep = np.isin(np.asarray(query_ids, dtype=object), kept["query_id"].unique())
    trained = [q for q, k in zip(query_ids, keep, strict=True) if k]
    mined = scoring.mine_negatives(kept, trained, query_emb[keep], doc_ids, corpus, mining.lo, mining.hi)
    negatives = _pools(mined, dataset, trained, judged_negatives_first, negative_pool_cap)
    io.save_table(out_negatives, negatives)
    log.info("mined %d negatives for %d queries after pruning", len(negatives), len(trained))
    return {"queries": len(trained), "negatives": len(negatives)}


def eval_tables(data_dir: str | Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prepared queries and the qrels of ``split``, or a StageError naming the splits there are."""
    dataset = data_mod.read_prepared(data_dir, corpus=False)
    if split not in dataset.qrels:
        raise StageError(f"{data_dir}: no qrels for split {split!r} (available: {sorted(dataset.qrels)})")
    return dataset.queries, dataset.qrels[split]
