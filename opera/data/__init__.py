"""Datasets: a source (shipped, BEIR folder, ir_datasets, Hugging Face: one module each in
``sources/``) read into three normalized tables, validated, and written for the stages after.

Whatever the source, a dataset becomes three normalized tables:

* ``corpus``: ``doc_id, title, text`` (strings; ``title`` may be empty),
* ``queries``: ``query_id, text`` (every query judged in at least one split; a source whose query
  ids restart in each split, ``source.query_ids_per_split: true``, gets ids ``<split>:<id>``),
* ``qrels[split]``: ``query_id, doc_id, relevance`` (int64; after ``positive_threshold``, 0 means
  judged non-relevant and >= 1 relevant).

Everything is validated before anything is written; a violation raises :class:`DataError` naming
the file, the 1-based line and the offending id (``records``). The modules: ``records`` (readers and
record checks), ``sources`` (one per kind, behind ``sources.base.Source``), ``load`` (what follows
the read, the same for every source, and ``prepare``), ``prepared`` (the tables as written, read back
and streamed).
"""

from opera.data.load import DEFAULT_OPTIONS, load_dataset, prepare
from opera.data.prepared import (
    CorpusIds,
    Dataset,
    check_train_queries,
    corpus_size,
    passage_text,
    passage_text_batches,
    passage_texts,
    passages_at,
    read_prepared,
    summary_lines,
    train_queries,
)
from opera.data.records import SPLIT_ORDER, DataError, iter_jsonl
from opera.data.sources import check_source, source_files

__all__ = [
    "DEFAULT_OPTIONS",
    "SPLIT_ORDER",
    "CorpusIds",
    "DataError",
    "Dataset",
    "check_source",
    "check_train_queries",
    "corpus_size",
    "iter_jsonl",
    "load_dataset",
    "passage_text",
    "passage_text_batches",
    "passage_texts",
    "passages_at",
    "prepare",
    "read_prepared",
    "source_files",
    "summary_lines",
    "train_queries",
]
