"""Stages 5, 6 and 8: index a checkpoint's corpus and queries, evaluate it, aggregate every run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from opera import data as data_mod
from opera import embedding_store, io
from opera.embedding_store import EmbeddingStore, StoreLayout
from opera.errors import StageError
from opera.models.checkpoints import is_published_checkpoint, model_identity, verify_checkpoint
from opera.pipeline.data_stages import eval_tables
from opera.retrieval import metrics
from opera.retrieval import validation as validation_mod
from opera.settings import EncoderSettings, Evaluation

log = logging.getLogger(__name__)


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
    from opera.models import encoders

    began = time.perf_counter()
    if published:
        verify_checkpoint(checkpoint)  # a checkpoint changed after training is refused, not encoded
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


def _encode_eval_queries(data_dir, encoder: EncoderSettings, model, split: str, batch_size: int):
    """(query ids, embeddings, resolved encode precision) of the judged queries of ``split``, in id order."""
    from opera.models import encoders, precision

    queries, qrels = eval_tables(data_dir, split)
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


def evaluate(
    *,
    data_dir: str | Path,
    encoder: EncoderSettings,
    evaluation: Evaluation | dict,
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
    evaluation = Evaluation.of(evaluation)
    _, qrels = eval_tables(data_dir, split)
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
        from opera.models import encoders

        model = encoders.load(encoder)
        _, query_emb, encoded_at = _encode_eval_queries(data_dir, encoder, model, split, evaluation.encode_batch_size)
        trained_at = None
    else:
        raise StageError(f"evaluate: a checkpoint ({checkpoint}) comes with its index job's query embeddings")
    if query_emb.shape[1] != corpus.dim:
        raise StageError(
            f"{index_path}: embeddings of dimension {corpus.dim} differ from the queries' {query_emb.shape[1]} "
            f"({checkpoint or encoder.path}); recompute the index"
        )
    scores, rows = corpus.search(query_emb, evaluation.top_k, evaluation.index_factory)
    run = metrics.run_from_search(query_ids, doc_ids.at(rows), scores, rows)
    per_query, summary = metrics.evaluate(
        run,
        metrics.qrels_from_frame(qrels),
        evaluation.cutoffs,
        evaluation.mrr_cutoff,
        measures=metrics.measures_on(evaluation),
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
    from opera import methods as method_registry
    from opera.report import aggregate as agg
    from opera.report import plots, sampler_plots

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
                written += sampler_plots.sampler_diagnostics(main, stem, title=f"{dataset} · {model}")
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
                written += sampler_plots.schedules(main, stem, title=f"{dataset} · {model}")
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
