"""Loading a dataset: read its source, then thresholds, drops, subsampling and the overlap check
(the same for every source), and writing the prepared tables (the download stage)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from opera import io
from opera.data.prepared import Dataset, check_train_queries, summary_lines
from opera.data.records import SPLIT_ORDER, DataError, SourceTables
from opera.data.sources import source_of
from opera.data.sources.base import splits_of

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = {
    "title_join": "space",
    "queries_without_positives": "drop",
    "duplicate_documents": "error",
    "eval_overlap": "warn",
}


def load_dataset(name: str, spec: dict, options: dict | None = None) -> Dataset:
    """Load, validate and normalize dataset ``name`` from its resolved registry entry ``spec``.

    ``options`` is ``config["data"]`` (``title_join``, ``queries_without_positives``,
    ``duplicate_documents``, ``eval_overlap``). Steps, in order:

    1. read the source (shipped name, local BEIR folder or ir_datasets ids) and validate it
       (its :class:`~opera.data.sources.base.Source`); an ir_datasets source with ``query_ids_per_split: true`` scopes
       each query id by its split (``train:0``, ``dev:0``), for sources that number queries
       afresh in each split;
    2. per split, relevance below ``positive_threshold[split]`` (default 1) becomes 0 (judged
       non-relevant);
    3. train queries without a relevant document are dropped (counted) or raise, per
       ``queries_without_positives``; other splits keep them (the evaluator excludes them)
       (steps 2 and 3: :func:`_apply_thresholds_and_drops`);
    4. optional ``subsample`` {docs, queries: {split: n}, seed}, deterministic under its seed:
       for each split in the order train, dev, test with a ``queries[split]`` count, that many
       query ids are drawn without replacement (numpy ``default_rng(seed).choice``, one generator
       for all draws, over the sorted ids of that split's queries with a relevant document); other
       splits keep all their queries. With ``docs``, the kept corpus is every relevant document of
       every kept query, plus documents drawn from the sorted remaining ids up to ``docs`` in total
       (when the relevant documents alone exceed ``docs``, they are all kept and this is logged).
       Qrels keep only kept queries and kept documents;
    5. train queries that an evaluation split also has (same id, or same text) are counted in
       ``eval_overlap`` and warned about, refused or dropped from train, per ``eval_overlap``
       (:func:`_eval_overlap`);
    6. the queries table keeps the queries judged in at least one split (those in no split's qrels
       from the start are counted as ``dropped.unjudged_queries``).
    """
    options = {**DEFAULT_OPTIONS, **(options or {})}
    raw = source_of(name, spec).read(name, spec, splits_of(spec), options)
    qrels, dropped = _apply_thresholds_and_drops(
        raw, spec.get("positive_threshold") or {}, options["queries_without_positives"]
    )
    corpus = raw.corpus
    summary: dict = {"dataset": name, "source": dict(spec.get("source") or {}), "dropped": dropped}
    if spec.get("subsample"):
        corpus, qrels = _subsample(corpus, qrels, spec["subsample"])
        summary["subsample"] = dict(spec["subsample"])

    qrels = {s: t.drop(columns="line").reset_index(drop=True) for s, t in qrels.items()}
    qrels, summary["eval_overlap"] = _eval_overlap(name, raw.queries, qrels, options["eval_overlap"])
    judged = set().union(*(set(t["query_id"]) for t in qrels.values()))
    queries = raw.queries.loc[raw.queries["query_id"].isin(judged)].reset_index(drop=True)
    summary["splits"] = {
        split: {
            "documents": len(corpus),
            "queries": int(t["query_id"].nunique()),
            "judged_pairs": len(t),
            "relevant_pairs": int((t["relevance"] >= 1).sum()),
        }
        for split, t in qrels.items()
    }
    return Dataset(corpus=corpus, queries=queries, qrels=qrels, summary=summary)


def _apply_thresholds_and_drops(raw: SourceTables, thresholds: dict, without_positives: str):
    """Steps 2 and 3 of :func:`load_dataset`; returns (qrels, the ``dropped`` counts of the summary).

    ``raw.qrels`` is left as read; the returned tables keep their ``line`` column for messages.
    """
    judged = set().union(*(set(t["query_id"]) for t in raw.qrels.values()))
    dropped = {
        "duplicate_documents": raw.duplicate_documents,
        "unjudged_queries": int((~raw.queries["query_id"].isin(judged)).sum()),  # in no split's qrels
        "train_queries_without_positives": 0,
    }
    qrels = {}
    for split, table in raw.qrels.items():
        threshold = int(thresholds.get(split, 1))
        table = table.assign(relevance=table["relevance"].where(table["relevance"] >= threshold, 0))
        qrels[split] = table
        if split != "train":
            if len(table) and not (table["relevance"] >= 1).any():  # nothing to evaluate against, after training
                raise DataError(
                    f"{raw.where[split]}: no judgment of split {split!r} is relevant (relevance >= {threshold}); "
                    f"every metric would be undefined. Check the file or positive_threshold.{split}"
                )
            continue
        has_positive = table.groupby("query_id", sort=False)["relevance"].transform("max") >= 1
        if has_positive.all():
            continue
        bad = table.loc[~has_positive].drop_duplicates("query_id")
        if without_positives == "error":
            first = bad.iloc[0]
            raise DataError(
                f"{raw.where[split]}:{first['line']}: train query {first['query_id']!r} has no relevant document "
                f"(relevance >= {threshold}; {len(bad)} train queries have none). "
                "Set data.queries_without_positives: drop to drop them"
            )
        qrels[split] = table.loc[has_positive].reset_index(drop=True)
        dropped["train_queries_without_positives"] = len(bad)
        log.warning("%s: dropped %d train queries without a relevant document", raw.where[split], len(bad))
    return qrels, dropped


def _eval_overlap(name: str, queries: pd.DataFrame, qrels: dict[str, pd.DataFrame], policy: str):
    """Step 5 of :func:`load_dataset`: train queries that an evaluation split (every split but train,
    dev included) also judges (same id) or asks again (same text), which would let training see the
    test. Counted per split in the summary; ``policy`` (``data.eval_overlap``) warns, stops, or drops
    them from train so that the evaluation split stays the benchmark's."""
    record: dict = {"policy": policy, "splits": {}, "dropped_train_queries": 0}
    if "train" not in qrels:
        return qrels, record
    train_ids = set(qrels["train"]["query_id"])
    text = queries.set_index("query_id")["text"]
    train_texts = {text.get(q) for q in train_ids} - {None}
    leaking: set = set()
    for split, table in qrels.items():
        if split == "train":
            continue
        eval_ids = set(table["query_id"])
        same_id = train_ids & eval_ids
        same_text = {q for q in eval_ids - same_id if text.get(q) in train_texts}
        record["splits"][split] = {"same_id": len(same_id), "same_text": len(same_text)}
        asked_again = {text.get(q) for q in same_text}
        leaking |= same_id | {q for q in train_ids if text.get(q) in asked_again}
        if not same_id and not same_text:
            continue
        examples = sorted(same_id | same_text)[:3]
        message = (
            f"dataset {name!r}: {len(same_id)} {split} queries are also train queries (same id) and "
            f"{len(same_text)} more have a train query's text (e.g. {examples})"
        )
        if policy == "error":
            raise DataError(
                f"{message}; training would see the evaluation. Set data.eval_overlap: drop to "
                "drop them from train, or warn to keep them"
            )
        kept = "kept (data.eval_overlap: warn; drop removes them from train)"
        log.warning("%s; %s", message, kept if policy == "warn" else "their train queries are dropped")
    if policy == "drop" and leaking:
        qrels = {**qrels, "train": qrels["train"].loc[~qrels["train"]["query_id"].isin(leaking)].reset_index(drop=True)}
        record["dropped_train_queries"] = len(leaking)
        log.warning("dataset %r: dropped %d train queries that an evaluation split also has", name, len(leaking))
    return qrels, record


def _subsample(corpus: pd.DataFrame, qrels: dict[str, pd.DataFrame], sub: dict):
    """See :func:`load_dataset`, step 4."""
    rng = np.random.default_rng(int(sub.get("seed", 0)))
    counts = sub.get("queries") or {}
    for split in [s for s in SPLIT_ORDER if s in qrels] + [s for s in qrels if s not in SPLIT_ORDER]:
        if split not in counts:
            continue
        table = qrels[split]
        candidates = np.array(sorted(set(table.loc[table["relevance"] >= 1, "query_id"])), dtype=object)
        n = min(int(counts[split]), len(candidates))
        chosen = set(rng.choice(candidates, size=n, replace=False)) if n else set()
        qrels[split] = table.loc[table["query_id"].isin(chosen)]
    if sub.get("docs"):
        relevant = set().union(*(set(t.loc[t["relevance"] >= 1, "doc_id"]) for t in qrels.values()))
        target = int(sub["docs"])
        if len(relevant) >= target:
            if len(relevant) > target:
                log.info(
                    "subsample: the kept queries have %d relevant documents (> docs=%d); keeping them all",
                    len(relevant),
                    target,
                )
            keep = relevant
        else:
            others = np.array(sorted(set(corpus["doc_id"]) - relevant), dtype=object)
            keep = relevant | set(rng.choice(others, size=min(target - len(relevant), len(others)), replace=False))
        corpus = corpus.loc[corpus["doc_id"].isin(keep)].reset_index(drop=True)
        qrels = {s: t.loc[t["doc_id"].isin(keep)] for s, t in qrels.items()}
    return corpus, {s: t.reset_index(drop=True) for s, t in qrels.items()}


# --- prepared artifacts ----------------------------------------------------------------------------


def prepare(
    name: str, spec: dict, options: dict | None, out_dir: str | Path, global_batches: dict[str, int] | None = None
) -> dict:
    """Load and validate ``name``, then write ``out_dir`` atomically; return its summary.

    ``out_dir`` receives ``corpus.parquet``, ``queries.parquet``, ``qrels_<split>.parquet`` (each
    with a ``.sha256`` sidecar) and ``summary.json``. A failure leaves ``out_dir`` untouched. The
    summary is logged here (INFO, one line per split), and only here. ``global_batches`` (model ->
    batch_size x GPUs) refuses a train split too small for a model's batch, before anything is written.
    """
    dataset = load_dataset(name, spec, options)
    check_train_queries(name, dataset.summary, global_batches or {})
    with io.atomic_dir(out_dir) as tmp:
        io.save_table(tmp / "corpus.parquet", dataset.corpus)
        io.save_table(tmp / "queries.parquet", dataset.queries)
        for split, table in dataset.qrels.items():
            io.save_table(tmp / f"qrels_{split}.parquet", table)
        io.write_json(tmp / "summary.json", dataset.summary)
    for line in summary_lines(name, dataset.summary):  # the one place the summary is logged
        log.info(line)
    return dataset.summary
