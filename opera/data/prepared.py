"""A dataset's normalized tables: in memory (:class:`Dataset`), and as the download stage wrote them
(read and verified, or streamed batch by batch for corpora of any size); the passage text an encoder
sees; what is known of the train queries before and after the download."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from opera import io
from opera.data.records import DataError, display_path, positive_queries
from opera.data.sources import source_of


@dataclass
class Dataset:
    corpus: pd.DataFrame  # doc_id, title, text
    queries: pd.DataFrame  # query_id, text
    qrels: dict[str, pd.DataFrame]  # split -> query_id, doc_id, relevance (int64)
    summary: dict = field(default_factory=dict)


def passage_text(title: str, text: str, title_join: str = "space") -> str:
    """The string a passage encoder sees: 'space' (BEIR/MTEB), 'newline' or 'text_only'.

    'text_only' falls back to the title for a document whose text is empty, so no passage is ever
    encoded as an empty string (validation only guarantees that title or text is non-empty).
    """
    title, text = (title or "").strip(), (text or "").strip()
    if title_join == "space":
        return f"{title} {text}".strip()
    if title_join == "newline":
        return f"{title}\n{text}".strip()
    if title_join == "text_only":
        return text or title
    raise ValueError(f"title_join must be 'space', 'newline' or 'text_only', not {title_join!r}")


def passage_texts(corpus: pd.DataFrame, title_join: str = "space") -> list[str]:
    return [passage_text(t, x, title_join) for t, x in zip(corpus["title"], corpus["text"], strict=True)]


# --- record readers: each yields (line number, record) from one file or iterator --------------------


def train_queries(name: str, spec: dict) -> tuple[int, str] | None:
    """The most train queries dataset ``name`` (its resolved entry) can have once prepared, known
    without running anything, and where the number comes from; None when it is not knowable offline.

    A source with a local BEIR folder (shipped, ``beir``): the queries of ``qrels/train.tsv`` with a
    judgment at or above ``positive_threshold.train`` (the others are dropped or refused by the
    download), at most ``subsample.queries.train``; any other source: ``subsample.queries.train``
    when set. Counts are cached per file version, so validating a config again reads nothing."""
    limit = ((spec.get("subsample") or {}).get("queries") or {}).get("train")
    known: tuple[int, str] | None = None
    folder = source_of(name, spec).beir_folder(name, spec)
    qrels = folder / "qrels" / "train.tsv" if folder is not None else None
    if qrels is not None and qrels.is_file():
        threshold = int((spec.get("positive_threshold") or {}).get("train", 1))
        stat = qrels.stat()
        count = positive_queries(str(qrels.resolve()), stat.st_size, stat.st_mtime_ns, threshold)
        known = (count, f"{display_path(qrels)} judges {count} train queries relevant")
    if limit is not None and (known is None or int(limit) < known[0]):
        known = (int(limit), f"datasets.{name}.subsample.queries.train is {int(limit)}")
    return known


def check_train_queries(name: str, summary: dict, global_batches: dict[str, int]) -> None:
    """A prepared dataset (its ``summary``) has at least as many train queries as the largest
    global batch of the models that finetune on it (model -> batch_size x GPUs); DataError otherwise."""
    split = (summary.get("splits") or {}).get("train")
    if split is None or not global_batches:
        return
    count = int(split["queries"])
    short = {model: batch for model, batch in global_batches.items() if batch > count}
    if short:
        models = ", ".join(f"models.{model}.batch_size ({batch} queries a step)" for model, batch in short.items())
        raise DataError(
            f"dataset {name!r}: its prepared train split has {count} queries with a relevant document, fewer "
            f"than a training step draws for {models}; lower the batch_size to {count} or less, or give the "
            f"dataset more train queries (datasets.{name}.subsample.queries.train, positive_threshold.train)"
        )


def read_prepared(data_dir: str | Path, corpus: bool = True) -> Dataset:
    """The tables written by :func:`prepare`; checksums are verified (CorruptArtifactError otherwise).
    ``corpus=False`` leaves the corpus on disk (an empty table): stages that stream it or read
    only its ids use :func:`passage_text_batches` and :class:`CorpusIds`, whatever its size."""
    data_dir = Path(data_dir)
    summary = io.read_json(data_dir / "summary.json")
    empty = pd.DataFrame({"doc_id": [], "title": [], "text": []}, dtype=object)
    return Dataset(
        corpus=io.load_table(data_dir / "corpus.parquet") if corpus else empty,
        queries=io.load_table(data_dir / "queries.parquet"),
        qrels={split: io.load_table(data_dir / f"qrels_{split}.parquet") for split in summary["splits"]},
        summary=summary,
    )


@cache
def _recorded_rows(path: str, size: int, mtime_ns: int) -> int:
    """The rows recorded for a checksummed file, verified once per process and file version: a score
    job reads its corpus three times (size, passages, ids), and hashing tens of GB once is enough."""
    return io.verify(path)["rows"]


def _verified_corpus(data_dir: str | Path):
    import pyarrow.parquet as pq

    path = Path(data_dir) / "corpus.parquet"
    if not path.exists():
        io.verify(path)  # raises, naming the missing file
    stat = path.stat()
    rows = _recorded_rows(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    parquet = pq.ParquetFile(path)
    if parquet.metadata.num_rows != rows:
        raise io.CorruptArtifactError(f"{path}: {parquet.metadata.num_rows} rows, recorded {rows}")
    return parquet


def corpus_size(data_dir: str | Path) -> int:
    """Documents in the prepared corpus (from the parquet footer, once the file is verified)."""
    return _verified_corpus(data_dir).metadata.num_rows


def passage_text_batches(data_dir: str | Path, rows: int, title_join: str) -> Iterator[list[str]]:
    """The prepared corpus's passage texts, ``rows`` at a time in corpus order (the last batch may be
    shorter), read from disk batch by batch: memory holds one batch, whatever the corpus size."""
    import pyarrow as pa

    pending, held = [], 0
    for batch in _verified_corpus(data_dir).iter_batches(batch_size=min(rows, 65_536), columns=["title", "text"]):
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield passage_texts(table.slice(0, rows).to_pandas(), title_join)
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield passage_texts(pa.Table.from_batches(pending).to_pandas(), title_join)


def passages_at(data_dir: str | Path, rows: np.ndarray, title_join: str) -> list[str]:
    """The passage texts of corpus ``rows`` (ascending), read batch by batch: memory holds one
    batch of the corpus and the wanted passages, whatever the corpus size."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (np.any(np.diff(rows) <= 0) or rows[0] < 0):
        raise ValueError("passages_at: rows must be ascending, distinct and non-negative")
    texts: list[str] = []
    start = 0
    for batch in _verified_corpus(data_dir).iter_batches(batch_size=65_536, columns=["title", "text"]):
        end = start + batch.num_rows
        mine = rows[(rows >= start) & (rows < end)] - start
        if len(mine):
            texts += passage_texts(batch.take(mine).to_pandas(), title_join)
        start = end
    if len(texts) != len(rows):
        raise IndexError(f"{data_dir}/corpus.parquet: {start} rows, asked for row {int(rows[-1])}")
    return texts


class CorpusIds:
    """The prepared corpus's document ids as one Arrow column (a few bytes per document, not a
    Python object each), to turn search hits into ids and ids into rows."""

    def __init__(self, data_dir: str | Path):
        self.column = _verified_corpus(data_dir).read(columns=["doc_id"]).column("doc_id").combine_chunks()

    def __len__(self) -> int:
        return len(self.column)

    def at(self, rows: np.ndarray) -> np.ndarray:
        """Document ids at corpus ``rows`` (any shape; -1, a missing hit, gives None)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full(rows.shape, None, dtype=object)
        hit = rows >= 0
        out[hit] = self.column.take(rows[hit].ravel()).to_numpy(zero_copy_only=False)
        return out

    def rows_of(self, doc_ids: Iterable[str]) -> np.ndarray:
        """Corpus rows of ``doc_ids``; a KeyError names the first id the corpus lacks."""
        import pyarrow as pa
        import pyarrow.compute as pc

        wanted = pa.array(list(doc_ids), type=pa.string())
        rows = pc.index_in(wanted, value_set=self.column)
        if rows.null_count:
            first = wanted[int(np.flatnonzero(pc.is_null(rows).to_numpy(zero_copy_only=False))[0])].as_py()
            raise KeyError(f"document {first!r} is not in the corpus")
        return rows.to_numpy().astype(np.int64)


def summary_lines(name: str, summary: dict) -> list[str]:
    """One line per split, e.g. ``nfcorpus/train: 3,633 documents, 2,590 queries, 110,575 judged pairs``."""
    return [
        f"{name}/{split}: {s['documents']:,} documents, {s['queries']:,} queries, {s['judged_pairs']:,} judged pairs"
        for split, s in summary["splits"].items()
    ]
