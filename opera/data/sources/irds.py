"""Datasets that ir_datasets provides (``ir_datasets``: one id per split, sharing one document
collection). Checked offline from ir_datasets' registry and bundled metadata; read through its
iterators, whose download failures become DataErrors with the dataset's ``manual_download`` hint."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pandas as pd

from opera.data.records import DataError, SourceTables, collect_docs, collect_qrels, collect_queries, progress
from opera.data.sources.base import Source, SourceCounts, splits_of


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


def _check_ids(name: str, spec: dict) -> None:
    """Check, offline, the ir_datasets ids of dataset ``name`` (its resolved entry ``spec``).

    Every split of
    ``spec["splits"]`` needs an id in ``source.ids`` that ir_datasets registers and that provides
    documents, queries and qrels (``tripclick/test/head``, for one, has no qrels), and the splits'
    ids must share one document collection (the corpus is read once, from the first split's id).
    Otherwise raises :class:`DataError` naming the config key ``datasets.<name>.source.ids.<split>``
    and the closest registered ids. Reads only ir_datasets' registry and bundled metadata (no
    network, no download); imports ir_datasets on the first call.
    """
    source = spec.get("source") or {}
    ids = source.get("ids") or {}
    splits = splits_of(spec)
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


def _read(name: str, spec: dict, splits: list[str], options: dict) -> SourceTables:
    _check_ids(name, spec)  # offline: a wrong id stops here, before any download
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
    corpus, dropped = collect_docs(
        progress(docs, f"{first} docs"), f"ir_datasets[{first}].docs", options["duplicate_documents"]
    )
    frames = []
    for split in splits:
        records = (
            (i, {"_id": _query_id(split, q.query_id, per_split), "text": _text_of(q, "query_id")})
            for i, q in enumerate(_guarded(handles[split].queries_iter, f"{ids[split]!r} queries", manual), start=1)
        )
        frames.append(collect_queries(records, f"ir_datasets[{ids[split]}].queries"))
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
        qrels[split] = collect_qrels(rows, where[split], doc_ids, query_ids)
    return SourceTables(corpus, queries, qrels, where, dropped)


# --- Hugging Face datasets ---------------------------------------------------------------------------
# A BEIR-style dataset on the hub (or a local copy): config "corpus" (_id, title, text), config
# "queries" (_id, text) and the qrels (query-id, corpus-id, score) with one split per BEIR split.
# mteb/<name> keeps the qrels in its "default" config (splits train, dev, test); BeIR/<name> keeps
# them in the repo BeIR/<name>-qrels (files train.tsv, dev.tsv, test.tsv: splits train, validation,
# test). A local folder is either such a repo's copy or corpus/, queries/ and qrels/ folders written


class IrDatasets(Source):
    type = "ir_datasets"
    fields = {
        "ids": {
            "type": "object",
            "description": "ir_datasets id per split",
            "propertyNames": {"$ref": "#/definitions/split"},
            "additionalProperties": {"type": "string"},
        },
        "query_ids_per_split": {
            "type": "boolean",
            "description": "ir_datasets only: the source numbers its queries afresh in each split (dpr-w100), so "
            "every query id becomes '<split>:<id>' (train:0, dev:0). Absent: false",
        },
    }

    def read(self, name: str, spec: dict, splits: list[str], options: dict) -> SourceTables:
        return _read(name, spec, splits, options)

    def check(self, name: str, spec: dict) -> None:
        _check_ids(name, spec)

    def counts(self, name: str, spec: dict, split: str) -> SourceCounts:
        """From ir_datasets' bundled metadata: no download."""
        ir_datasets = _ir_datasets()
        ids = spec["source"]["ids"]
        documents = ir_datasets.load(ids[next(iter(ids))]).docs_count()
        evaluated = ir_datasets.load(ids[split]) if split in ids else None
        return SourceCounts(
            documents,
            evaluated.queries_count() if evaluated else 0,
            evaluated.qrels_count() if evaluated else None,
            f"ir_datasets {ir_datasets.__version__} metadata",
        )
