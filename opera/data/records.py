"""Reading and validating a source's records: text lines of plain or gzipped files, JSON lines,
BEIR qrels, and the checks that turn records into the three normalized tables (opera.data).

Every reader yields (1-based line number, record); every violation raises :class:`DataError` naming
the file, the line and the offending id, e.g. ``opera/datasets/x/corpus.jsonl.gz:17: duplicate
document id 'MED-10' (first seen on line 3)``; rows of a Hugging Face dataset are numbered the same
way (``hf:mteb/nfcorpus[corpus]:17``).
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "dev", "test")


class DataError(ValueError):
    """Invalid or unobtainable data; the message names the file, the line and the offending id."""


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def progress(iterable: Iterable, desc: str) -> tqdm:
    # delay: small files (and tests) read without a bar; big ones show progress after 2 s
    return tqdm(iterable, desc=desc, unit=" lines", mininterval=2.0, delay=2.0, leave=False)


def find_jsonl(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.jsonl", folder / f"{stem}.jsonl.gz"):
        if candidate.exists():
            return candidate
    raise DataError(f"{display_path(folder)}: neither {stem}.jsonl nor {stem}.jsonl.gz exists")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of a text file (gzip-compressed when its name ends in .gz), numbered from 1. A byte
    that is not UTF-8 or a truncated gzip stream is a DataError naming the file and the line; a
    byte-order mark before the first line is dropped. Lines are decoded one by one, so the line
    named is the one that holds the bad byte."""
    where = display_path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(progress(handle, f"reading {path.name}"), start=1):
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
        path = find_jsonl(folder, stem)
    except DataError:
        return None
    return sum(1 for _, line in numbered_lines(path) if line.strip())


def judged_queries(path: Path) -> int:
    """Distinct query ids of a BEIR qrels file (0 when it does not exist)."""
    return len({query for _, query, _, _ in read_qrels_tsv(path)}) if path.is_file() else 0


def judgments(path: Path) -> int | None:
    """(query, document) lines of a BEIR qrels file (None when it does not exist)."""
    return sum(1 for _ in read_qrels_tsv(path)) if path.is_file() else None


@cache
def positive_queries(path: str, size: int, mtime_ns: int, threshold: int) -> int:
    """Distinct queries of a BEIR qrels file with a judgment >= ``threshold``, once per file version
    (a grade that is not an integer counts: the download names it)."""
    positive = set()
    for _, query, _, score in read_qrels_tsv(Path(path)):
        try:
            relevant = int(score) >= threshold
        except ValueError:
            relevant = True
        if relevant:
            positive.add(query)
    return len(positive)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """The JSON objects of a ``.jsonl`` or ``.jsonl.gz`` file with their line numbers; a bad line is a
    DataError naming the file and line."""
    path = Path(path)
    where = display_path(path)
    for line_no, line in numbered_lines(path):
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


def read_qrels_tsv(path: Path) -> Iterator[tuple[int, str, str, Any]]:
    """BEIR qrels: a header line ``query-id<TAB>corpus-id<TAB>score``, then one row per judgment."""
    where = display_path(path)
    for line_no, line in numbered_lines(path):
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


def collect_docs(records: Iterable[tuple[int, dict]], where: str, duplicates: str) -> tuple[pd.DataFrame, int]:
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


def collect_queries(records: Iterable[tuple[int, dict]], where: str) -> pd.DataFrame:
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


def collect_qrels(rows: Iterable[tuple[int, str, str, Any]], where: str, doc_ids: set, query_ids: set) -> pd.DataFrame:
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


@dataclass
class SourceTables:
    """A source as read and validated, before thresholds and drops; ``where[split]`` names its qrels."""

    corpus: pd.DataFrame
    queries: pd.DataFrame
    qrels: dict[str, pd.DataFrame]  # split -> query_id, doc_id, relevance (raw grades), line
    where: dict[str, str]
    duplicate_documents: int
