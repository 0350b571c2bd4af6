"""The pipeline's stages, one function each: download, score, prune, finetune, index, evaluate, aggregate.

Each function reads its inputs from files, calls the concern modules (data, encoders, scoring,
pruning, training, index, metrics, aggregate, plots) and writes its outputs atomically. The
Snakemake workflow scripts only translate ``snakemake.input/output/params`` into keyword calls of
these functions, and the ``opera`` CLI calls the same functions, so the library runs with or
without Snakemake. Process-wide job set-up (log files, threads, signals) is opera.job's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from opera import data as data_mod
from opera import embedding_store, io, metrics, pruning, scoring
from opera import validation as validation_mod
from opera.embedding_store import EmbeddingStore, StoreLayout
from opera.settings import EncoderSettings, Mining, ModelSettings, PoolMetrics, PoolSettings, Validation
from opera.tracking import Tracking

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot run on its inputs; the message says which file and why."""


# --- 1. download ------------------------------------------------------------------------------------


def download(
    *, name: str, spec: dict, options: dict, out_dir: str | Path, global_batches: dict[str, int] | None = None
) -> dict:
    """Reads the dataset's source; writes the validated, normalized tables to ``out_dir``, unless its
    train split has fewer queries than a model's global batch (model -> batch_size x GPUs)."""
    return data_mod.prepare(name, spec, options, out_dir, global_batches)


# --- 2. score ---------------------------------------------------------------------------------------


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
    from opera import encoders

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
    writes the validation pool (opera.validation) as validation_pool.parquet (doc_id, row, reason)
    and validation_pool.json: its queries, its size by reason, and the base model's pool metrics
    (the curves' step 0)."""
    from opera import encoders

    began = time.perf_counter()
    queries, qrels = _eval_qrels(data_dir, split)
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


# --- 3. prune ---------------------------------------------------------------------------------------


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


# --- 4. finetune ------------------------------------------------------------------------------------


def finetune(
    *,
    data_dir: str | Path,
    pairs_path: str | Path,
    negatives_path: str | Path,
    kept_pairs_path: str | Path,
    settings: ModelSettings,
    method: str,
    method_params: dict,
    seed: int,
    title_join: str,
    out_dir: str | Path,
    work_dir: str | Path,
    stop_after: int | None = None,
    tracking_settings: Tracking | None = None,
    validation: Validation | None = None,
    pool_path: str | Path | None = None,
) -> dict:
    """Reads the prepared data, the scored pairs, the mined negatives and the method's kept pairs; writes
    the finished run (checkpoints, train_log.jsonl, run.json) to ``out_dir``, resuming from
    ``work_dir`` if an earlier attempt left checkpoints there; its curves also go to
    ``tracking_settings`` (opera.tracking) while it trains. With ``validation`` (and the model's
    ``validate_every``) it scores the weights on the validation pool at ``pool_path`` as it trains."""
    from opera import training

    dataset = data_mod.read_prepared(data_dir)
    corpus_texts = dict(zip(dataset.corpus["doc_id"], data_mod.passage_texts(dataset.corpus, title_join), strict=True))
    train_data = training.TrainingData.build(
        kept_pairs=io.load_table(kept_pairs_path),
        all_pairs=io.load_table(pairs_path),
        negatives=io.load_table(negatives_path),
        queries=dataset.queries,
        corpus_texts=corpus_texts,
    )
    # a resumed run must have been trained on the same data: the files' checksums and the passage format
    inputs = {"pairs": pairs_path, "negatives": negatives_path, "kept_pairs": kept_pairs_path}
    inputs |= {name: Path(data_dir) / f"{name}.parquet" for name in ("corpus", "queries")}
    fingerprint = {name: io.recorded_digest(path) for name, path in inputs.items()} | {"title_join": title_join}
    if (validation is None) != (settings.validate_every is None) or (validation and pool_path is None):
        raise StageError(
            f"finetune: validate_every is {settings.validate_every}, but the job has "
            f"{'a' if validation else 'no'} validation and {'a' if pool_path else 'no'} pool; they come together"
        )
    validator = validation_mod.PoolValidator(validation, pool_path, data_dir, settings.encoder) if validation else None
    return training.finetune(
        train_data,
        settings,
        method,
        method_params,
        seed,
        out_dir,
        work_dir,
        stop_after=stop_after,
        data_fingerprint=fingerprint,
        tracking_settings=tracking_settings,
        validator=validator,
    )


def finetune_job(*, gpus: int = 0, **job) -> dict | None:
    """Run :func:`finetune` here, or under torchrun, one process per GPU, when the job holds several
    GPUs; without CUDA those are gloo CPU processes, so the global batch is ``batch_size x gpus`` either way."""
    if gpus > 1:
        import json
        import os
        import subprocess
        import sys

        job_file = Path(f"{job['work_dir']}.job.json")  # beside the work dir, which the trainer owns
        job_file.parent.mkdir(parents=True, exist_ok=True)
        serialized = {
            k: (
                v.to_dict()
                if isinstance(v, ModelSettings | Tracking | Validation)
                else str(v)
                if isinstance(v, Path)
                else v
            )
            for k, v in job.items()
        }
        job_file.write_text(json.dumps(serialized))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "opera.cli",
            "finetune",
            "--job",
            str(job_file),
        ]
        # the job's threads (opera.job sets OMP_NUM_THREADS) shared by its processes; torchrun's default is 1
        threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")) // gpus)
        log.info("launching %s", " ".join(command))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, stdout=sys.stderr, stderr=sys.stderr, env=env)
        return None
    return finetune(**job)


# --- 5. index ---------------------------------------------------------------------------------------


def is_published_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a step folder of a published finetune run (its run.json beside it), to be
    verified against its checksums.json (a missing one is an error), rather than another model: a
    hub id, the shipped model's name, a plain local model folder."""
    return (Path(path).parent / "run.json").is_file()


def model_identity(path: str | Path) -> str:
    """What encoded a store or a set of query embeddings, by content: a published checkpoint's
    checksums.json digest (it binds every file of the checkpoint), else the model's files' digest
    (opera.preflight.model_digest: the shipped model, a local folder, a cached hub snapshot)."""
    from opera import preflight

    if is_published_checkpoint(path):
        return "checkpoint:" + io.sha256_of(Path(path) / io.DIR_CHECKSUMS)
    return "model:" + preflight.model_digest(str(path))


def _verify_checkpoint(checkpoint: str | Path) -> None:
    """A published checkpoint matches its checksums.json, or CorruptArtifactError says how to get it back."""
    try:
        io.verify_dir(checkpoint)
    except io.CorruptArtifactError as exc:
        run = Path(checkpoint).parent
        raise io.CorruptArtifactError(
            f"{exc}. To get the checkpoint back, delete its run {run} and rerun the workflow: the finetune "
            "job publishes the finished run again from its work folder if that copy is intact, else trains it again"
        ) from None


def index(
    *,
    data_dir: str | Path,
    encoder: EncoderSettings,
    checkpoint: str | Path,
    encode_batch_size: int,
    title_join: str,
    layout: StoreLayout,
    split: str,
    out_dir: str | Path,
    out_queries: str | Path,
    devices: tuple = (None,),
    published: bool = True,
) -> dict:
    """Reads the prepared corpus, the queries of the evaluation ``split`` and a checkpoint; writes
    the corpus's embeddings under it as a store at ``out_dir`` (the base model's store is the one
    `score` wrote) and the split's query embeddings to ``out_queries``, so that evaluate, which
    searches them, needs no model (no torch or sentence-transformers import in its job).

    ``published``: ``checkpoint`` is a finetune run's step folder, verified against its
    checksums.json; False for any other model (a hub id, a local model folder: `opera evaluate`)."""
    from opera import encoders

    began = time.perf_counter()
    if published:
        _verify_checkpoint(checkpoint)  # a checkpoint changed after training is refused, not encoded
    identity = model_identity(checkpoint)
    # on one device, one model encodes the corpus and the queries; several devices load their own
    model = encoders.load(encoder, device=devices[0], path=str(checkpoint)) if len(devices) == 1 else None
    manifest = embedding_store.encode_corpus(
        out_dir,
        data_dir=data_dir,
        title_join=title_join,
        encoder=encoder,
        batch_size=encode_batch_size,
        layout=layout,
        checkpoint=checkpoint,
        devices=devices,
        loaded=model,
        model=str(checkpoint),
        model_identity=identity,
    )
    if model is None:
        model = encoders.load(encoder, device=devices[0], path=str(checkpoint))
    query_ids, query_emb, encoded_at = _encode_eval_queries(data_dir, encoder, model, split, encode_batch_size)
    io.save_array(
        out_queries, query_emb, split=split, query_ids=query_ids, encode_precision=encoded_at, model_identity=identity
    )
    return {
        "documents": manifest["rows"],
        "shards": len(manifest["shards"]),
        "queries": len(query_ids),
        "seconds": round(time.perf_counter() - began, 2),
    }


def _eval_qrels(data_dir: str | Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prepared queries and the qrels of ``split``, or a StageError naming the splits there are."""
    dataset = data_mod.read_prepared(data_dir, corpus=False)
    if split not in dataset.qrels:
        raise StageError(f"{data_dir}: no qrels for split {split!r} (available: {sorted(dataset.qrels)})")
    return dataset.queries, dataset.qrels[split]


def _encode_eval_queries(data_dir, encoder: EncoderSettings, model, split: str, batch_size: int):
    """(query ids, embeddings, resolved encode precision) of the judged queries of ``split``, in id order."""
    from opera import encoders, precision

    queries, qrels = _eval_qrels(data_dir, split)
    query_ids = sorted(qrels["query_id"].unique())
    text = queries.set_index("query_id")["text"]
    embeddings = encoders.encode_side(
        model, encoder, "query", [text[q] for q in query_ids], batch_size, desc=f"{split} queries"
    )
    return query_ids, embeddings, precision.resolve(encoder.encode_precision, model.device)


def _read_eval_queries(
    path: str | Path, split: str, query_ids: list[str], identity: str
) -> tuple[np.ndarray, str | None]:
    """The query embeddings an index job wrote, checked to be those of ``split``'s judged queries,
    encoded by the model whose :func:`model_identity` is ``identity``."""
    record = io.verify(path)
    if record.get("model_identity") != identity:
        raise StageError(
            f"{path}: query embeddings encoded by another model ({record.get('model_identity')}) than the "
            f"checkpoint this evaluation reports ({identity}); delete it and rerun its index job"
        )
    if record.get("split") != split or record.get("query_ids") != list(query_ids):
        raise StageError(
            f"{path}: query embeddings of split {record.get('split')!r} with {len(record.get('query_ids') or [])} "
            f"queries, but the evaluation wants the {len(query_ids)} judged queries of split {split!r}; "
            "delete it and rerun its index job"
        )
    return io.load_array(path), record.get("encode_precision")


# --- 6. evaluate ------------------------------------------------------------------------------------


def evaluate(
    *,
    data_dir: str | Path,
    encoder: EncoderSettings,
    evaluation: dict,
    index_path: str | Path,
    split: str,
    out_run: str | Path,
    out_per_query: str | Path,
    out_metrics: str | Path,
    run_meta: dict,
    checkpoint: str | Path | None = None,
    query_embeddings: str | Path | None = None,
) -> dict:
    """Reads the prepared qrels of ``split``, the corpus's embedding store (``index_path``) and the
    split's query embeddings (a checkpoint's: ``query_embeddings``, written by its index job; the
    base model's are encoded here); writes the TREC run, per-query metrics and mean metrics. The
    store is searched shard by shard (``evaluation.index_factory`` per shard)."""
    _, qrels = _eval_qrels(data_dir, split)
    query_ids = sorted(qrels["query_id"].unique())
    corpus = EmbeddingStore(index_path)
    doc_ids = data_mod.CorpusIds(data_dir)
    if len(corpus) != len(doc_ids):
        raise StageError(f"{index_path}: {len(corpus)} embeddings but {data_dir} has {len(doc_ids)} documents")
    identity = model_identity(checkpoint or encoder.path)
    corpus.check_encoded_by(identity, str(checkpoint or encoder.path))
    if checkpoint and query_embeddings:
        query_emb, encoded_at = _read_eval_queries(query_embeddings, split, query_ids, identity)
        published = is_published_checkpoint(checkpoint)  # only a finetune run has a training precision
        trained_at = io.read_json(Path(checkpoint).parent / "run.json").get("precision") if published else None
    elif checkpoint is None and query_embeddings is None:
        from opera import encoders

        model = encoders.load(encoder)
        _, query_emb, encoded_at = _encode_eval_queries(
            data_dir, encoder, model, split, evaluation["encode_batch_size"]
        )
        trained_at = None
    else:
        raise StageError(f"evaluate: a checkpoint ({checkpoint}) comes with its index job's query embeddings")
    if query_emb.shape[1] != corpus.dim:
        raise StageError(
            f"{index_path}: embeddings of dimension {corpus.dim} differ from the queries' {query_emb.shape[1]} "
            f"({checkpoint or encoder.path}); recompute the index"
        )
    scores, rows = corpus.search(query_emb, evaluation["top_k"], evaluation["index_factory"])
    run = metrics.run_from_search(query_ids, doc_ids.at(rows), scores, rows)
    per_query, summary = metrics.evaluate(
        run,
        metrics.qrels_from_frame(qrels),
        evaluation["cutoffs"],
        evaluation["mrr_cutoff"],
        with_authors_ndcg=evaluation["authors_ndcg"],
    )
    metrics.write_trec_run(out_run, run, tag=f"opera-{run_meta.get('method', 'run')}")
    io.save_table(out_per_query, per_query)
    # what the run was computed in (`auto` resolves per machine, so a store made elsewhere may differ)
    computed = {"train": trained_at, "corpus": corpus.manifest.get("encode_precision"), "queries": encoded_at}
    record = {**run_meta, "split": split, "precision": computed, **summary}
    io.write_json(out_metrics, record)
    log.info(
        "%s: NDCG@10 %.4f Recall@20 %.4f on %d queries",
        run_meta,
        summary["metrics"].get("NDCG@10", float("nan")),
        summary["metrics"].get("Recall@20", float("nan")),
        summary["n_queries"],
    )
    return record


# --- 7. publish -------------------------------------------------------------------------------------


def publish(
    *,
    finetune_dir: str | Path,
    metrics_paths: list[str | Path],
    out_dir: str | Path,
    settings: ModelSettings,
    method_params: dict,
    tracking_settings: Tracking | None = None,
) -> list[Path]:
    """Reads a finished finetune run and its checkpoints' metrics.json; writes each evaluated
    checkpoint as a model folder with a model card into ``out_dir`` and the metrics to the run's
    tracking (opera.publish)."""
    from opera import publish as publish_mod

    io.verify_dir(finetune_dir)  # the run's log and run.json, as the finetune job recorded them
    return publish_mod.publish_run(
        finetune_dir=finetune_dir,
        metrics_paths=metrics_paths,
        out_dir=out_dir,
        settings=settings,
        method_params=method_params,
        tracking_settings=tracking_settings,
    )


# --- 8. aggregate -----------------------------------------------------------------------------------


def aggregate(
    *,
    metrics_paths: list[str | Path],
    tables_dir: str | Path,
    plots_dir: str | Path,
    train_logs: dict[tuple, str | Path],
    cards: list[dict] | None = None,
    ttq_tolerance: float = 0.01,
    equivalence_margin: float = 0.01,
    rank_pretrain: bool = True,
    global_batch: dict[str, int] | None = None,
    display_names: dict[str, str] | None = None,
    pool_reports: dict[tuple, str | Path] | None = None,
) -> list[Path]:
    """Reads every metrics.json (with its per_query.parquet) and train log; writes the tables to
    ``tables_dir`` and the plots to ``plots_dir``.

    ``train_logs`` maps (dataset, model, method, seed, budget) to a run's train_log.jsonl (the
    source of training wall times and sampler diagnostics); ``cards`` lists pruning data cards as
    {dataset, model, pruner, score_pairs, pruned_pairs, train_logs: {method: train_log path}};
    ``global_batch`` maps a model to the queries of one optimizer step; ``display_names`` (method
    -> name) label the plots and the Markdown, LaTeX and HTML tables (the CSVs keep method ids);
    ``pool_reports`` maps (dataset, model) to its validation_pool.json when runs validate on a pool:
    then the pool's curves and time to quality are written too (validation.csv,
    time_to_quality_pool.csv, the metric_vs_steps_pool plot), labelled as the pool's.
    """
    from opera import aggregate as agg
    from opera import methods as method_registry
    from opera import plots

    with method_registry.display_names(display_names):  # plots and the tables' md, tex and html
        for path in train_logs.values():  # a finished run records its log's checksum
            io.verify_dir(Path(path).parent)
        logs = {run: io.read_train_log(path) for run, path in train_logs.items()}  # read once: times and diagnostics
        frames = agg.aggregate(
            metrics_paths,
            tables_dir,
            agg.train_seconds_from_logs(logs),
            ttq_tolerance=ttq_tolerance,
            equivalence_margin=equivalence_margin,
            rank_pretrain=rank_pretrain,
            global_batch=global_batch,
        )
        plots_dir = Path(plots_dir)
        written = []
        for x in plots.PROGRESS_AXES:
            written += plots.metric_vs_progress(frames["main"], plots_dir, x=x)
        written += plots.training_time(frames["final"], plots_dir)
        if not frames["long"]["main_run"].all():  # the grid has extra budgets
            written += plots.metric_vs_budget(frames["budgets"], plots_dir)
        if pool_reports:
            reports = {cell: io.read_json(path) for cell, path in pool_reports.items()}
            curves = validation_mod.curves(logs, reports)
            pool_frames = validation_mod.write_tables(curves, tables_dir, global_batch, ttq_tolerance)
            frames |= pool_frames
            written += plots.metric_vs_progress(
                curves[curves["main_run"]], plots_dir, metrics=validation_mod.POOL_METRICS, pool=True
            )
        diagnostics = agg.sampler_diagnostics(logs)
        summary = agg.diagnostics_summary(diagnostics)
        agg.write_table(summary, Path(tables_dir) / "sampler_diagnostics.csv")
        agg.write_html_pages(tables_dir, frames | {"sampler_diagnostics": summary})
        if train_logs:  # a plot only where something trained (a pretrain-only config has a header-only table)
            main_steps = frames["long"].groupby("model")["step"].max()  # main runs only: budgets end earlier
            for (dataset, model), cell in diagnostics.groupby(["dataset", "model"], sort=True):
                main = cell[cell["budget"] == main_steps.get(model)]
                stem = plots_dir / f"{dataset}__{model}__sampler_diagnostics"
                written += plots.sampler_diagnostics(main, stem, title=f"{dataset} · {model}")
            # the samplers' schedules, from each method's main run of the first seed (whether or not the
            # config has a pruning card: the workflow declares the plot for any non-uniform sampler)
            first_seed = min(seed for _, _, _, seed, _ in logs)
            for dataset, model in sorted({(d, m) for d, m, _, _, _ in logs}):
                main = {
                    method: entries
                    for (d, m, method, seed, budget), entries in logs.items()
                    if (d, m, seed, budget) == (dataset, model, first_seed, main_steps.get(model))
                }
                stem = plots_dir / f"{dataset}__{model}__schedules"
                written += plots.schedules(main, stem, title=f"{dataset} · {model}")
        by_path = {str(path): logs[run] for run, path in train_logs.items()}  # a card's logs are read already
        for card in cards or []:
            card_logs = {
                method: by_path[str(path)] if str(path) in by_path else io.read_train_log(path)
                for method, path in card["train_logs"].items()
            }
            stem = plots_dir / f"{card['dataset']}__{card['model']}__pruning_card"
            title = f"{card['dataset']} · {card['model']}"
            written += plots.pruning_card(
                io.load_table(card["score_pairs"]),
                io.load_table(card["pruned_pairs"]),
                card_logs,
                stem,
                pruner=card["pruner"],
                title=title,
            )
        return written
