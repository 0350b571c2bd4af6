"""Datasets: loading from a shipped/BEIR/ir_datasets/Hugging Face source, validation, and normalized tables.

Whatever the source, a dataset becomes three normalized tables:

* ``corpus``: ``doc_id, title, text`` (strings; ``title`` may be empty),
* ``queries``: ``query_id, text`` (every query judged in at least one split; a source whose query
  ids restart in each split, ``source.query_ids_per_split: true``, gets ids ``<split>:<id>``),
* ``qrels[split]``: ``query_id, doc_id, relevance`` (int64; after ``positive_threshold``, 0 means
  judged non-relevant and >= 1 relevant).

Everything is validated before anything is written; a violation raises :class:`DataError` naming
the file, the 1-based line and the offending id, e.g.
``opera/datasets/x/corpus.jsonl.gz:17: duplicate document id 'MED-10' (first seen on line 3)``; rows
of a Hugging Face dataset are numbered the same way (``hf:mteb/nfcorpus[corpus]:17``).
"""

from __future__ import annotations

import difflib
import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from opera import io

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent / "datasets"  # package data: NFCorpus and SciFact, BEIR layout
SPLIT_ORDER = ("train", "dev", "test")
DEFAULT_OPTIONS = {
    "title_join": "space",
    "queries_without_positives": "drop",
    "duplicate_documents": "error",
    "eval_overlap": "warn",
}


class DataError(ValueError):
    """Invalid or unobtainable data; the message names the file, the line and the offending id."""


@dataclass
class Dataset:
    corpus: pd.DataFrame  # doc_id, title, text
    queries: pd.DataFrame  # query_id, text
    qrels: dict[str, pd.DataFrame]  # split -> query_id, doc_id, relevance (int64)
    summary: dict = field(default_factory=dict)


# --- passages --------------------------------------------------------------------------------------


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


def _display(path: Path) -> str:
    """A path as messages show it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _progress(iterable: Iterable, desc: str) -> tqdm:
    # delay: small files (and tests) read without a bar; big ones show progress after 2 s
    return tqdm(iterable, desc=desc, unit=" lines", mininterval=2.0, delay=2.0, leave=False)


def _find_jsonl(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.jsonl", folder / f"{stem}.jsonl.gz"):
        if candidate.exists():
            return candidate
    raise DataError(f"{_display(folder)}: neither {stem}.jsonl nor {stem}.jsonl.gz exists")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a text file (gzip-compressed when its name ends in .gz), numbered from 1. A byte
    that is not UTF-8 or a truncated gzip stream is a DataError naming the file and the line; a
    byte-order mark before the first line is dropped. Lines are decoded one by one, so the line
    named is the one that holds the bad byte."""
    where = _display(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(_progress(handle, f"reading {path.name}"), start=1):
                try:
                    yield line_no, raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{where}:{line_no}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                        "save the file as UTF-8"
                    ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{where}: the gzip stream is truncated or damaged after line {line_no} ({exc}); "
            "the file is incomplete: download or copy it again"
        ) from None


def count_records(folder: Path, stem: str) -> int | None:
    """Non-blank lines of ``folder/stem.jsonl`` (or .jsonl.gz), or None when neither exists."""
    try:
        path = _find_jsonl(folder, stem)
    except DataError:
        return None
    return sum(1 for _, line in _lines(path) if line.strip())


def judged_queries(path: Path) -> int:
    """Distinct query ids of a BEIR qrels file (0 when it does not exist)."""
    return len({query for _, query, _, _ in _read_qrels_tsv(path)}) if path.is_file() else 0


def judgments(path: Path) -> int | None:
    """(query, document) lines of a BEIR qrels file (None when it does not exist)."""
    return sum(1 for _ in _read_qrels_tsv(path)) if path.is_file() else None


def train_queries(name: str, spec: dict) -> tuple[int, str] | None:
    """The most train queries dataset ``name`` (its resolved entry) can have once prepared, known
    without running anything, and where the number comes from; None when it is not knowable offline.

    A local BEIR source (shipped or ``source.path``): the queries of ``qrels/train.tsv`` with a
    judgment at or above ``positive_threshold.train`` (the others are dropped or refused by the
    download), at most ``subsample.queries.train``; any other source: ``subsample.queries.train``
    when set. Counts are cached per file version, so validating a config again reads nothing."""
    source = spec.get("source") or {}
    limit = ((spec.get("subsample") or {}).get("queries") or {}).get("train")
    known: tuple[int, str] | None = None
    folder = None
    if source.get("type") == "shipped":
        folder = SHIPPED_DIR / source.get("name", name)
    elif source.get("type") == "beir" and source.get("path"):
        folder = Path(source["path"]).expanduser()
    qrels = folder / "qrels" / "train.tsv" if folder is not None else None
    if qrels is not None and qrels.is_file():
        threshold = int((spec.get("positive_threshold") or {}).get("train", 1))
        stat = qrels.stat()
        count = _positive_queries(str(qrels.resolve()), stat.st_size, stat.st_mtime_ns, threshold)
        known = (count, f"{_display(qrels)} judges {count} train queries relevant")
    if limit is not None and (known is None or int(limit) < known[0]):
        known = (int(limit), f"datasets.{name}.subsample.queries.train is {int(limit)}")
    return known


@cache
def _positive_queries(path: str, size: int, mtime_ns: int, threshold: int) -> int:
    """Distinct queries of a BEIR qrels file with a judgment >= ``threshold``, once per file version
    (a grade that is not an integer counts: the download names it)."""
    positive = set()
    for _, query, _, score in _read_qrels_tsv(Path(path)):
        try:
            relevant = int(score) >= threshold
        except ValueError:
            relevant = True
        if relevant:
            positive.add(query)
    return len(positive)


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


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """The JSON objects of a ``.jsonl`` or ``.jsonl.gz`` file with their line numbers; a bad line is a
    DataError naming the file and line."""
    return _read_jsonl(Path(path))


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    where = _display(path)
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"{exc.msg.removesuffix(' at')} at column {exc.colno}"
            raise DataError(f"{where}:{line_no}: malformed JSON ({reason})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}:{line_no}: expected a JSON object, got {type(record).__name__}")
        yield line_no, record


def _read_qrels_tsv(path: Path) -> Iterator[tuple[int, str, str, Any]]:
    """BEIR qrels: a header line ``query-id<TAB>corpus-id<TAB>score``, then one row per judgment."""
    where = _display(path)
    for line_no, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip() or (line_no == 1 and line.lower().startswith("query-id")):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if line_no == 1 and not _is_number(fields[-1]):
            raise DataError(
                f"{where}:1: a header other than 'query-id<TAB>corpus-id<TAB>score': {line!r} "
                "(BEIR qrels start with that header, or with a judgment)"
            )
        if len(fields) != 3:  # a 4-column TREC qrels file would otherwise be misread silently
            raise DataError(
                f"{where}:{line_no}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                f"found {len(fields)}: {line!r}"
            )
        yield line_no, fields[0], fields[1], fields[2]


# --- validation and normalization --------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _field(record: dict, key: str, where: str, line_no: int, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}:{line_no}: missing required field '{key}'")
        return ""
    if isinstance(value, str):
        return value
    if key == "_id" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # ids are strings, even when BEIR writes them as numbers
    shown = json.dumps(value)[:60]
    raise DataError(f"{where}:{line_no}: field '{key}' must be a string, got {type(value).__name__} {shown}")


def _collect_docs(records: Iterable[tuple[int, dict]], where: str, duplicates: str) -> tuple[pd.DataFrame, int]:
    """Corpus records (``_id``, optional ``title``, ``text``) -> table; returns (table, duplicates dropped)."""
    first_line: dict[str, int] = {}
    titles, texts, dropped = [], [], 0
    for line_no, record in records:
        doc_id = _field(record, "_id", where, line_no)
        if not doc_id:
            raise DataError(f"{where}:{line_no}: empty document id")
        if doc_id in first_line:
            if duplicates != "drop":
                raise DataError(
                    f"{where}:{line_no}: duplicate document id {doc_id!r} (first seen on line {first_line[doc_id]}); "
                    "set data.duplicate_documents: drop to keep the first copy"
                )
            dropped += 1
            continue
        title = _field(record, "title", where, line_no, required=False)
        text = _field(record, "text", where, line_no)
        if not (title.strip() or text.strip()):
            raise DataError(f"{where}:{line_no}: document {doc_id!r} has an empty title and text")
        first_line[doc_id] = line_no
        titles.append(title)
        texts.append(text)
    if not first_line:
        raise DataError(f"{where}: no documents")
    if dropped:
        log.warning("%s: dropped %d duplicate document line(s), kept the first copy of each id", where, dropped)
    return pd.DataFrame({"doc_id": list(first_line), "title": titles, "text": texts}), dropped


def _collect_queries(records: Iterable[tuple[int, dict]], where: str) -> pd.DataFrame:
    first_line: dict[str, int] = {}
    texts = []
    for line_no, record in records:
        query_id = _field(record, "_id", where, line_no)
        if not query_id:
            raise DataError(f"{where}:{line_no}: empty query id")
        if query_id in first_line:
            raise DataError(
                f"{where}:{line_no}: duplicate query id {query_id!r} (first seen on line {first_line[query_id]})"
            )
        text = _field(record, "text", where, line_no)
        if not text.strip():
            raise DataError(f"{where}:{line_no}: query {query_id!r} has an empty text")
        first_line[query_id] = line_no
        texts.append(text)
    return pd.DataFrame({"query_id": list(first_line), "text": texts})


def _collect_qrels(rows: Iterable[tuple[int, str, str, Any]], where: str, doc_ids: set, query_ids: set) -> pd.DataFrame:
    """Judgment rows -> table with a ``line`` column (kept for later messages); every id must be known."""
    seen: dict[tuple[str, str], int] = {}
    relevance = []
    for line_no, query_id, doc_id, score in rows:
        if query_id not in query_ids:
            raise DataError(f"{where}:{line_no}: unknown query id {query_id!r} (not in the queries)")
        if doc_id not in doc_ids:
            raise DataError(f"{where}:{line_no}: unknown document id {doc_id!r} (not in the corpus)")
        try:
            relevance.append(int(score))  # int("1.5") and int("x") fail: grades are integers
        except (TypeError, ValueError):
            raise DataError(
                f"{where}:{line_no}: relevance {score!r} of ({query_id!r}, {doc_id!r}) is not an integer"
            ) from None
        if (query_id, doc_id) in seen:
            raise DataError(
                f"{where}:{line_no}: duplicate judgment of query {query_id!r} and document {doc_id!r} "
                f"(first on line {seen[query_id, doc_id]})"
            )
        seen[query_id, doc_id] = line_no
    return pd.DataFrame(
        {
            "query_id": [q for q, _ in seen],
            "doc_id": [d for _, d in seen],
            "relevance": np.asarray(relevance, dtype=np.int64),
            "line": np.fromiter(seen.values(), dtype=np.int64, count=len(seen)),
        }
    )


# --- sources ---------------------------------------------------------------------------------------


@dataclass
class _Source:
    """A source as read and validated, before thresholds and drops; ``where[split]`` names its qrels."""

    corpus: pd.DataFrame
    queries: pd.DataFrame
    qrels: dict[str, pd.DataFrame]  # split -> query_id, doc_id, relevance (raw grades), line
    where: dict[str, str]
    duplicate_documents: int


def _shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) if SHIPPED_DIR.is_dir() else []


def _beir_files(folder: Path, splits: list[str]) -> tuple[Path, Path, dict[str, Path]]:
    """The corpus, queries and per-split qrels files of a BEIR folder; DataError naming the first one missing."""
    if not folder.is_dir():
        raise DataError(f"{_display(folder)}: BEIR dataset folder not found")
    qrels = {s: folder / "qrels" / f"{s}.tsv" for s in splits}
    missing = [s for s, path in qrels.items() if not path.is_file()]
    if missing:  # checked first: a missing split should not wait for the corpus to be read
        s = missing[0]
        raise DataError(f"{_display(qrels[s])}: missing qrels file for required split {s!r}")
    return _find_jsonl(folder, "corpus"), _find_jsonl(folder, "queries"), qrels


def _load_beir(folder: Path, splits: list[str], options: dict) -> _Source:
    corpus_path, queries_path, _ = _beir_files(folder, splits)
    corpus, dropped = _collect_docs(_read_jsonl(corpus_path), _display(corpus_path), options["duplicate_documents"])
    queries = _collect_queries(_read_jsonl(queries_path), _display(queries_path))
    doc_ids, query_ids = set(corpus["doc_id"]), set(queries["query_id"])
    qrels, where = {}, {}
    for split in splits:
        path = folder / "qrels" / f"{split}.tsv"
        where[split] = _display(path)
        qrels[split] = _collect_qrels(_read_qrels_tsv(path), where[split], doc_ids, query_ids)
    return _Source(corpus, queries, qrels, where, dropped)


# --- ir_datasets -----------------------------------------------------------------------------------


def _ir_datasets():
    import ir_datasets  # heavy (and it creates its home folder on import): only for this source

    return ir_datasets


def _lacking(dataset: Any) -> list[str]:
    """What a split needs that ``dataset`` (an ir_datasets dataset) lacks, of docs, queries and qrels."""
    return [what for what in ("docs", "queries", "qrels") if not getattr(dataset, f"has_{what}")()]


def _closest_ids(registry: Any, dataset_id: str, n: int = 5) -> list[str]:
    """Registered ids nearest ``dataset_id`` (difflib), those usable as a split (docs, queries, qrels) first."""
    close = [c for c in difflib.get_close_matches(dataset_id, list(registry), n=4 * n, cutoff=0.6) if c != dataset_id]
    usable = [c for c in close if not _lacking(registry[c])]
    return (usable + [c for c in close if c not in usable])[:n]


def _docs_namespace(dataset: Any) -> str | None:
    try:
        return dataset.docs_namespace()
    except Exception:  # noqa: BLE001 - not every docs handler names its collection
        return None


def check_ir_datasets_ids(name: str, spec: dict) -> None:
    """Check, offline, the ir_datasets ids of dataset ``name`` (its resolved entry ``spec``).

    Nothing to check unless ``spec["source"]["type"]`` is ``ir_datasets``. Every split of
    ``spec["splits"]`` needs an id in ``source.ids`` that ir_datasets registers and that provides
    documents, queries and qrels (``tripclick/test/head``, for one, has no qrels), and the splits'
    ids must share one document collection (the corpus is read once, from the first split's id).
    Otherwise raises :class:`DataError` naming the config key ``datasets.<name>.source.ids.<split>``
    and the closest registered ids. Reads only ir_datasets' registry and bundled metadata (no
    network, no download); imports ir_datasets on the first call.
    """
    source = spec.get("source") or {}
    if source.get("type") != "ir_datasets":
        return
    ids = source.get("ids") or {}
    splits = list(spec.get("splits") or SPLIT_ORDER)
    key = f"datasets.{name}.source.ids"
    missing = [s for s in splits if not ids.get(s)]
    if missing:
        raise DataError(f"config key '{key}': no ir_datasets id for split(s) {missing} (splits: {splits}, ids: {ids})")
    ir_datasets = _ir_datasets()
    registry = ir_datasets.registry
    namespaces = {}
    for split in splits:
        dataset_id = ids[split]
        try:
            dataset = registry[dataset_id]
        except KeyError:
            dataset, problem = None, f"{dataset_id!r} is not an ir_datasets id (ir_datasets {ir_datasets.__version__})"
        else:
            lacking = _lacking(dataset)
            problem = f"ir_datasets {dataset_id!r} has no {' and no '.join(lacking)}" if lacking else ""
        if problem:
            near = _closest_ids(registry, dataset_id)
            hint = (
                ("closest registered ids: " + ", ".join(map(repr, near)))
                if near
                else "no registered id is close (the list: https://ir-datasets.com/)"
            )
            raise DataError(f"config key '{key}.{split}': {problem}; {hint}")
        namespaces[split] = _docs_namespace(dataset)
    first = splits[0]
    for split in splits[1:]:
        if None not in (namespaces[first], namespaces[split]) and namespaces[split] != namespaces[first]:
            raise DataError(
                f"config key '{key}.{split}': {ids[split]!r} searches the document collection {namespaces[split]!r}, "
                f"but {key}.{first} ({ids[first]!r}) searches {namespaces[first]!r}; all splits must share one corpus"
            )


def _fetch_error(what: str, exc: Exception, manual: str | None) -> DataError:
    hint = f"\n{manual}" if manual else ""
    return DataError(f"ir_datasets {what}: could not obtain the data ({type(exc).__name__}: {exc}){hint}")


def _guarded(make_iter: Callable[[], Iterable], what: str, manual: str | None) -> Iterator:
    """Iterate an ir_datasets iterator, turning its failures (download, missing files) into DataError.

    Only ir_datasets' own errors are translated; the consumer's validation errors never pass through here.
    """
    try:
        iterator = iter(make_iter())
    except Exception as exc:  # noqa: BLE001 - any failure to obtain the data
        raise _fetch_error(what, exc, manual) from exc
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            raise _fetch_error(what, exc, manual) from exc
        yield item


# Fields of ir_datasets document classes that are never a document's text (the title has its own column).
_NOT_DOC_TEXT = ("title", "url", "marked_up_doc")


def _text_of(record: Any, id_field: str) -> str | None:
    """The ``text`` field of an ir_datasets namedtuple, else its first string field after the id.

    For documents (``id_field == "doc_id"``) the title, url and markup fields are skipped, so that
    e.g. ``NfCorpusDoc(doc_id, url, title, abstract)`` gives its abstract and ``TrecParsedDoc(doc_id,
    title, body, marked_up_doc)`` its body. Queries without ``text`` (``TrecQuery(query_id, title,
    description, narrative)``) give their first string field, the short title.
    """
    if hasattr(record, "text"):
        return record.text
    skip = _NOT_DOC_TEXT if id_field == "doc_id" else ()
    fields = list(record._fields)
    for name in fields[fields.index(id_field) + 1 :]:
        value = getattr(record, name)
        if isinstance(value, str) and name not in skip:
            return value
    return None


def _query_id(split: str, raw: Any, per_split: bool) -> str:
    """The query id a split's raw id becomes: ``'dev:0'`` when the source numbers queries per split."""
    return f"{split}:{raw}" if per_split else str(raw)


def _load_ir_datasets(name: str, spec: dict, splits: list[str], options: dict) -> _Source:
    check_ir_datasets_ids(name, spec)  # offline: a wrong id stops here, before any download
    ir_datasets = _ir_datasets()
    source, manual = spec["source"], spec.get("manual_download")
    ids, per_split = source["ids"], bool(source.get("query_ids_per_split"))

    def load(dataset_id: str):
        try:
            return ir_datasets.load(dataset_id)
        except Exception as exc:  # noqa: BLE001
            raise _fetch_error(repr(dataset_id), exc, manual) from exc

    handles = {split: load(ids[split]) for split in splits}
    first = ids[splits[0]]
    docs = (
        (i, {"_id": d.doc_id, "title": getattr(d, "title", ""), "text": _text_of(d, "doc_id")})
        for i, d in enumerate(_guarded(handles[splits[0]].docs_iter, f"{first!r} docs", manual), start=1)
    )
    corpus, dropped = _collect_docs(
        _progress(docs, f"{first} docs"), f"ir_datasets[{first}].docs", options["duplicate_documents"]
    )
    frames = []
    for split in splits:
        records = (
            (i, {"_id": _query_id(split, q.query_id, per_split), "text": _text_of(q, "query_id")})
            for i, q in enumerate(_guarded(handles[split].queries_iter, f"{ids[split]!r} queries", manual), start=1)
        )
        frames.append(_collect_queries(records, f"ir_datasets[{ids[split]}].queries"))
    # A query may belong to several splits' query lists; identical copies merge, conflicting ones do not.
    queries = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    clash = queries["query_id"].duplicated()
    if clash.any():
        raise DataError(
            f"ir_datasets {[ids[s] for s in splits]}: query {queries['query_id'][clash].iloc[0]!r} has different texts "
            f"in different splits; if this source numbers its queries per split, set "
            f"datasets.{name}.source.query_ids_per_split: true"
        )
    doc_ids, query_ids = set(corpus["doc_id"]), set(queries["query_id"])
    qrels, where = {}, {}
    for split in splits:
        where[split] = f"ir_datasets[{ids[split]}].qrels"
        rows = (
            (i, _query_id(split, r.query_id, per_split), str(r.doc_id), r.relevance)
            for i, r in enumerate(_guarded(handles[split].qrels_iter, f"{ids[split]!r} qrels", manual), start=1)
        )
        qrels[split] = _collect_qrels(rows, where[split], doc_ids, query_ids)
    return _Source(corpus, queries, qrels, where, dropped)


# --- Hugging Face datasets ---------------------------------------------------------------------------
# A BEIR-style dataset on the hub (or a local copy): config "corpus" (_id, title, text), config
# "queries" (_id, text) and the qrels (query-id, corpus-id, score) with one split per BEIR split.
# mteb/<name> keeps the qrels in its "default" config (splits train, dev, test); BeIR/<name> keeps
# them in the repo BeIR/<name>-qrels (files train.tsv, dev.tsv, test.tsv: splits train, validation,
# test). A local folder is either such a repo's copy or corpus/, queries/ and qrels/ folders written
# by ``save_to_disk`` (qrels/ a DatasetDict with one split per BEIR split).

_HF_COLUMNS = {
    "corpus": {"_id": ("_id", "id", "doc_id", "corpus-id"), "title": ("title",), "text": ("text",)},
    "queries": {"_id": ("_id", "id", "query_id", "query-id"), "text": ("text", "query")},
    "qrels": {
        "query": ("query-id", "query_id", "qid"),
        "doc": ("corpus-id", "corpus_id", "doc_id", "doc-id", "docid"),
        "score": ("score", "relevance", "label"),
    },
}
_HF_SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}
_HF_SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def _hf_is_local(repo: str) -> bool:
    return repo.startswith((".", "/", "~")) or Path(repo).expanduser().exists()


def _hf_repos(source: dict) -> tuple[str, str]:
    """(repo, qrels repo) of an hf source: BeIR/<name> keeps its qrels in BeIR/<name>-qrels."""
    repo = source["repo"]
    default_qrels = f"{repo}-qrels" if repo.startswith("BeIR/") and not repo.endswith("-qrels") else repo
    return repo, source.get("qrels_repo") or default_qrels


def _hf_saved(folder: Path, part: str) -> bool:
    """Whether ``folder/part`` was written by ``save_to_disk``."""
    return any((folder / part / marker).is_file() for marker in _HF_SAVED_MARKERS)


def _datasets():
    import datasets  # heavy: only for this source

    return datasets


def _hf_load(repo: str, config: str | None, source: dict, part: str, manual: str | None):
    """The DatasetDict (or Dataset) of one part (corpus, queries, qrels) of an hf source."""
    datasets = _datasets()
    local = _hf_is_local(repo)
    folder = Path(repo).expanduser()
    what = f"hf:{repo}[{config or 'default'}]"
    try:
        if local and _hf_saved(folder, part):
            return datasets.load_from_disk(str(folder / part))
        revision = source.get("revision") if repo == source["repo"] and not local else None  # of `repo` only
        return datasets.load_dataset(str(folder) if local else repo, config, revision=revision)
    except Exception as exc:  # noqa: BLE001 - any failure to obtain the data: missing repo, config, network
        hint = f"\n{manual}" if manual else ""
        raise DataError(f"{what}: could not load {part} ({type(exc).__name__}: {exc}){hint}") from exc


def _hf_split(loaded: Any, wanted: tuple[str, ...], where: str, what: str, only_is_fine: bool = False):
    """The split of ``loaded`` named one of ``wanted`` (or its only split, if ``only_is_fine``) and its name."""
    if not hasattr(loaded, "keys"):  # a single Dataset (save_to_disk of one table)
        return loaded, wanted[0]
    names = list(loaded.keys())
    for name in wanted:
        if name in names:
            return loaded[name], name
    if len(names) == 1 and only_is_fine:
        return loaded[names[0]], names[0]
    raise DataError(f"{where}: no split for {what} (looked for {list(wanted)}; the dataset has {names})")


def _hf_rows(table: Any, where: str, part: str) -> Iterator[tuple[int, dict]]:
    """(row number from 1, record) with the columns renamed to ``_HF_COLUMNS[part]``'s keys."""
    columns = list(table.column_names)
    chosen = {}
    for key, candidates in _HF_COLUMNS[part].items():
        found = next((c for c in candidates if c in columns), None)
        if found is None and key != "title":
            raise DataError(f"{where}: no column for {key!r} (looked for {list(candidates)}; columns: {columns})")
        chosen[key] = found
    row = 0
    for batch in table.iter(batch_size=10_000):
        for i in range(len(batch[columns[0]])):
            row += 1
            yield row, {key: (batch[col][i] if col else None) for key, col in chosen.items()}


def _hf_relevance(score: Any) -> Any:
    """An integral float (mteb stores 1.0) as an int; anything else as it is, for the integer check."""
    if isinstance(score, float) and score.is_integer():
        return int(score)
    return str(score) if isinstance(score, float) else score


def _load_hf(name: str, spec: dict, splits: list[str], options: dict) -> _Source:
    source, manual = spec["source"], spec.get("manual_download")
    repo, qrels_repo = _hf_repos(source)
    tables = {}
    for part in ("corpus", "queries"):
        label = f"hf:{repo}[{part}]"  # rows are numbered from 1 after it, as lines of a file
        table, _ = _hf_split(_hf_load(repo, part, source, part, manual), (part,), label, part, only_is_fine=True)
        tables[part] = (table, label)
    table, label = tables["corpus"]
    corpus, dropped = _collect_docs(
        _progress(_hf_rows(table, label, "corpus"), "corpus"), label, options["duplicate_documents"]
    )
    table, label = tables["queries"]
    queries = _collect_queries(_hf_rows(table, label, "queries"), label)
    qrels_config = source.get("qrels_config")
    loaded = _hf_load(qrels_repo, qrels_config, source, "qrels", manual)
    base = f"hf:{qrels_repo}[{qrels_config or 'default'}]"
    doc_ids, query_ids = set(corpus["doc_id"]), set(queries["query_id"])
    qrels, where = {}, {}
    for split in splits:
        table, found = _hf_split(loaded, _HF_SPLIT_NAMES.get(split, (split,)), base, f"the {split!r} qrels")
        where[split] = f"{base}/{found}"
        rows = (
            (i, str(r["query"]), str(r["doc"]), _hf_relevance(r["score"]))
            for i, r in _hf_rows(table, where[split], "qrels")
        )
        qrels[split] = _collect_qrels(rows, where[split], doc_ids, query_ids)
    return _Source(corpus, queries, qrels, where, dropped)


# --- checks before any job, and the files a local source reads -----------------------------------------


def check_local_source(name: str, spec: dict) -> None:
    """Check, without reading them, the files of a local source of dataset ``name`` (its resolved entry).

    A shipped dataset exists; a BEIR folder (``source.path``, required) holds ``corpus.jsonl[.gz]``,
    ``queries.jsonl[.gz]`` and ``qrels/<split>.tsv`` for every split; an hf source has a ``repo``
    that is an existing folder or looks like a hub id ``owner/name`` (the hub is not contacted).
    Raises :class:`DataError` naming the config key. ir_datasets ids: :func:`check_ir_datasets_ids`.
    """
    source = spec.get("source") or {}
    kind, splits = source.get("type"), list(spec.get("splits") or SPLIT_ORDER)
    key = f"datasets.{name}.source"
    if kind == "shipped":
        shipped = source.get("name", name)
        if shipped not in _shipped_names():
            raise DataError(
                f"config key '{key}.name': no shipped dataset {shipped!r}; shipped datasets: {_shipped_names()}"
            )
        _check_beir_folder(f"{key}.name", SHIPPED_DIR / shipped, splits)
    elif kind == "beir":
        if not source.get("path"):
            raise DataError(f"config key '{key}': source type 'beir' needs a 'path' to a BEIR folder")
        _check_beir_folder(f"{key}.path", Path(source["path"]).expanduser(), splits)
    elif kind == "hf":
        if not source.get("repo"):
            raise DataError(
                f"config key '{key}': source type 'hf' needs a 'repo' (a hub id such as mteb/{name}, or a local folder)"
            )
        repo, qrels_repo = _hf_repos(source)
        for field_name, value in (("repo", repo), ("qrels_repo", qrels_repo)):
            folder = Path(value).expanduser()
            if _hf_is_local(value):
                if not folder.is_dir():
                    raise DataError(f"config key '{key}.{field_name}': {_display(folder)}: folder not found")
            elif value.count("/") != 1:
                raise DataError(
                    f"config key '{key}.{field_name}': {value!r} is neither a folder nor a hub id 'owner/name'"
                )


def _check_beir_folder(key: str, folder: Path, splits: list[str]) -> None:
    try:
        _beir_files(folder, splits)
    except DataError as exc:
        raise DataError(f"config key '{key}': {exc}") from None


def source_files(name: str, spec: dict) -> list[str]:
    """The local files a dataset's source reads (for the workflow's download rule: an edit reruns it).

    A shipped dataset or BEIR folder: its corpus, queries and the qrels of its splits; a local hf
    folder: every file in it (but hidden ones); nothing for ir_datasets or a hub id. Call it on a
    checked source (:func:`check_local_source`).
    """
    source = spec.get("source") or {}
    kind, splits = source.get("type"), list(spec.get("splits") or SPLIT_ORDER)
    if kind in ("shipped", "beir"):
        folder = SHIPPED_DIR / source.get("name", name) if kind == "shipped" else Path(source["path"]).expanduser()
        corpus, queries, qrels = _beir_files(folder, splits)
        return [str(path) for path in (corpus, queries, *qrels.values())]
    if kind == "hf":
        files: list[str] = []
        for repo in dict.fromkeys(_hf_repos(source)):
            if _hf_is_local(repo):
                root = Path(repo).expanduser()
                files += sorted(
                    str(path)
                    for path in root.rglob("*")
                    if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
                )
        return files
    return []


# --- loading ---------------------------------------------------------------------------------------


def load_dataset(name: str, spec: dict, options: dict | None = None) -> Dataset:
    """Load, validate and normalize dataset ``name`` from its resolved registry entry ``spec``.

    ``options`` is ``config["data"]`` (``title_join``, ``queries_without_positives``,
    ``duplicate_documents``, ``eval_overlap``). Steps, in order:

    1. read the source (shipped name, local BEIR folder or ir_datasets ids) and validate it
       (:func:`_read_source`); an ir_datasets source with ``query_ids_per_split: true`` scopes
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
    raw = _read_source(name, spec, options)
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


def _read_source(name: str, spec: dict, options: dict) -> _Source:
    """Step 1 of :func:`load_dataset`: read and validate the source named by ``spec["source"]``."""
    source = spec.get("source") or {}
    splits = list(spec.get("splits") or SPLIT_ORDER)
    kind = source.get("type")
    if kind == "shipped":
        shipped = source.get("name", name)
        if shipped not in _shipped_names():
            raise DataError(f"dataset {name!r}: no shipped dataset {shipped!r}; shipped datasets: {_shipped_names()}")
        return _load_beir(SHIPPED_DIR / shipped, splits, options)
    if kind == "beir":
        if not source.get("path"):
            raise DataError(f"dataset {name!r}: source type 'beir' needs a 'path' to a BEIR folder")
        return _load_beir(Path(source["path"]).expanduser(), splits, options)
    if kind == "ir_datasets":
        return _load_ir_datasets(name, spec, splits, options)
    if kind == "hf":
        return _load_hf(name, spec, splits, options)
    raise DataError(f"dataset {name!r}: unknown source type {kind!r} (shipped, beir, ir_datasets or hf)")


def _apply_thresholds_and_drops(raw: _Source, thresholds: dict, without_positives: str):
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
