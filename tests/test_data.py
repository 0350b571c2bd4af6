"""opera.data: loading, validation, normalization and prepared artifacts (offline: local data, and
ir_datasets with records fed by the test)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from irds_helpers import feed, ir_datasets, record

from opera.config import resolve_dataset
from opera.data import DataError, load_dataset, passage_text, passage_texts, prepare, read_prepared, summary_lines

# --- a tiny BEIR folder -----------------------------------------------------------------------------

DOCS = [
    {"_id": "d1", "title": "Apples", "text": "Apples are fruit."},
    {"_id": "d2", "title": "", "text": "Bananas are yellow."},
    {"_id": "d3", "title": "Cherries", "text": "Cherries are red."},
    {"_id": "d4", "text": "Dates are sweet."},  # no title field: optional
]
QUERIES = [
    {"_id": "q1", "text": "what are apples"},
    {"_id": "q2", "text": "banana colour"},
    {"_id": "q3", "text": "red fruit"},
]
QRELS = {"train": [("q1", "d1", 1), ("q2", "d2", 1)], "test": [("q3", "d3", 2), ("q3", "d4", 0)]}


def _lines(items) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


def write_beir(folder: Path, docs=DOCS, queries=QUERIES, qrels=QRELS, gz: bool = False) -> Path:
    """Write a BEIR folder; items of docs/queries may be raw strings, qrels rows tuples or raw strings."""
    (folder / "qrels").mkdir(parents=True)
    for stem, items in (("corpus", docs), ("queries", queries)):
        if gz:
            with gzip.open(folder / f"{stem}.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.write(_lines(items))
        else:
            (folder / f"{stem}.jsonl").write_text(_lines(items), encoding="utf-8")
    for split, rows in qrels.items():
        body = "".join((r if isinstance(r, str) else "\t".join(map(str, r))) + "\n" for r in rows)
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + body, encoding="utf-8")
    return folder


def beir_spec(folder: Path, splits=("train", "test"), **extra) -> dict:
    return {"source": {"type": "beir", "path": str(folder)}, "splits": list(splits), "positive_threshold": {}, **extra}


def fails(tmp_path: Path, spec: dict, *parts: str, options: dict | None = None) -> str:
    """prepare() must raise DataError naming every one of ``parts`` and leave no output folder."""
    out = tmp_path / "out" / "toy"
    with pytest.raises(DataError) as err:
        prepare("toy", spec, options or {}, out)
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert not out.exists()
    return message


# --- shipped data -------------------------------------------------------------------------------------

OFFICIAL = {
    "nfcorpus": (3633, {"train": (2590, 110575), "dev": (324, 11385), "test": (323, 12334)}),
    "scifact": (5183, {"train": (809, 919), "test": (300, 339)}),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_shipped_counts_and_round_trip(tmp_path, name):
    n_docs, splits = OFFICIAL[name]
    out = tmp_path / name
    summary = prepare(name, resolve_dataset(name), {}, out)
    assert {s: (v["queries"], v["judged_pairs"]) for s, v in summary["splits"].items()} == splits
    assert all(v["documents"] == n_docs for v in summary["splits"].values())
    assert summary["dropped"] == {"duplicate_documents": 0, "unjudged_queries": 0, "train_queries_without_positives": 0}

    for table in ["corpus", "queries"] + [f"qrels_{s}" for s in splits]:
        assert (out / f"{table}.parquet.sha256").exists()
    data = read_prepared(out)
    assert data.summary == summary
    assert len(data.corpus) == n_docs and data.corpus["doc_id"].is_unique
    assert list(data.corpus.columns) == ["doc_id", "title", "text"]
    assert list(data.queries.columns) == ["query_id", "text"]
    assert len(data.queries) == sum(q for q, _ in splits.values())  # the splits' queries are disjoint
    for qrels in data.qrels.values():
        assert list(qrels.columns) == ["query_id", "doc_id", "relevance"]
        assert qrels["relevance"].dtype == "int64"
        assert qrels["doc_id"].isin(data.corpus["doc_id"]).all()
        assert qrels["query_id"].isin(data.queries["query_id"]).all()
    if name == "nfcorpus":
        assert summary_lines(name, summary)[0] == "nfcorpus/train: 3,633 documents, 2,590 queries, 110,575 judged pairs"
        assert set(data.qrels["dev"]["relevance"]) == {1, 2}


def test_prepare_logs_the_summary_once(tmp_path, caplog):
    folder = write_beir(tmp_path / "toy")
    with caplog.at_level(logging.INFO, logger="opera"):
        load_dataset("toy", beir_spec(folder), {})  # loading alone logs no summary
        prepare("toy", beir_spec(folder), {}, tmp_path / "out")
    assert [r.getMessage() for r in caplog.records if "judged pairs" in r.getMessage()] == [
        "toy/train: 4 documents, 2 queries, 2 judged pairs",
        "toy/test: 4 documents, 1 queries, 2 judged pairs",
    ]


def test_unknown_shipped_dataset_lists_the_shipped_ones(tmp_path):
    fails(
        tmp_path, {"source": {"type": "shipped", "name": "nope"}, "splits": ["test"]}, "'nope'", "nfcorpus", "scifact"
    )


# --- bad inputs -------------------------------------------------------------------------------------


def test_malformed_json_line(tmp_path):
    folder = write_beir(tmp_path / "toy", docs=DOCS[:2] + ['{"_id": "d3", "text": "broken'] + DOCS[3:])
    fails(tmp_path, beir_spec(folder), "corpus.jsonl:3:", "malformed JSON")


def test_missing_required_field(tmp_path):
    folder = write_beir(tmp_path / "toy", docs=DOCS + [{"_id": "d5", "title": "no text"}])
    fails(tmp_path, beir_spec(folder), "corpus.jsonl:5:", "missing required field 'text'")
    folder = write_beir(tmp_path / "toy2", queries=QUERIES + [{"text": "no id"}])
    fails(tmp_path, beir_spec(folder), "queries.jsonl:4:", "missing required field '_id'")


def test_duplicate_document_error(tmp_path):
    folder = write_beir(tmp_path / "toy", docs=DOCS + [{"_id": "d2", "title": "", "text": "again"}])
    fails(tmp_path, beir_spec(folder), "corpus.jsonl:5:", "duplicate document id 'd2'", "first seen on line 2")


def test_duplicate_document_drop_keeps_first_and_counts(tmp_path):
    folder = write_beir(tmp_path / "toy", docs=DOCS + [{"_id": "d2", "title": "", "text": "again"}])
    data = load_dataset("toy", beir_spec(folder), {"duplicate_documents": "drop"})
    assert len(data.corpus) == 4
    assert data.corpus.set_index("doc_id").loc["d2", "text"] == "Bananas are yellow."
    assert data.summary["dropped"]["duplicate_documents"] == 1


def test_duplicate_query_id(tmp_path):
    folder = write_beir(tmp_path / "toy", queries=QUERIES + [{"_id": "q1", "text": "again"}])
    fails(tmp_path, beir_spec(folder), "queries.jsonl:4:", "duplicate query id 'q1'", "first seen on line 1")


def test_qrels_unknown_query(tmp_path):
    folder = write_beir(tmp_path / "toy", qrels={**QRELS, "train": QRELS["train"] + [("q9", "d1", 1)]})
    fails(tmp_path, beir_spec(folder), "train.tsv:4:", "unknown query id 'q9'")


def test_qrels_unknown_document(tmp_path):
    folder = write_beir(tmp_path / "toy", qrels={**QRELS, "test": QRELS["test"] + [("q3", "MED-10", 1)]})
    fails(tmp_path, beir_spec(folder), "test.tsv:4:", "unknown document id 'MED-10'")


@pytest.mark.parametrize("score", ["1.5", "x"])
def test_qrels_non_integer_relevance(tmp_path, score):
    folder = write_beir(tmp_path / "toy", qrels={**QRELS, "train": [("q1", "d1", score)]})
    fails(tmp_path, beir_spec(folder), "train.tsv:2:", f"relevance '{score}'", "'q1'", "not an integer")


def test_qrels_too_few_columns(tmp_path):
    folder = write_beir(tmp_path / "toy", qrels={**QRELS, "train": ["q1\td1", ("q2", "d2", 1)]})
    fails(tmp_path, beir_spec(folder), "train.tsv:2:", "expected 3 tab-separated columns")


def test_qrels_duplicate_pair(tmp_path):
    folder = write_beir(tmp_path / "toy", qrels={**QRELS, "train": QRELS["train"] + [("q1", "d1", 1)]})
    fails(tmp_path, beir_spec(folder), "train.tsv:4:", "'q1'", "'d1'", "first on line 2")


def test_empty_texts(tmp_path):
    folder = write_beir(tmp_path / "toy", docs=DOCS + [{"_id": "d5", "title": " ", "text": "\t"}])
    fails(tmp_path, beir_spec(folder), "corpus.jsonl:5:", "document 'd5'", "empty")
    folder = write_beir(tmp_path / "toy2", queries=[QUERIES[0], {"_id": "q2", "text": "  "}, QUERIES[2]])
    fails(tmp_path, beir_spec(folder), "queries.jsonl:2:", "query 'q2'", "empty")


def test_empty_corpus(tmp_path):
    folder = write_beir(tmp_path / "toy", docs=[])
    fails(tmp_path, beir_spec(folder), "corpus.jsonl", "no documents")


def test_required_split_missing(tmp_path):
    folder = write_beir(tmp_path / "toy")
    fails(tmp_path, beir_spec(folder, splits=("train", "dev", "test")), "dev.tsv", "'dev'", "missing")


def test_train_query_without_positives(tmp_path):
    qrels = {"train": QRELS["train"] + [("q3", "d3", 0), ("q3", "d4", 0)], "test": [("q3", "d3", 0), ("q1", "d1", 1)]}
    folder = write_beir(tmp_path / "toy", qrels=qrels)
    data = load_dataset("toy", beir_spec(folder), {"queries_without_positives": "drop"})
    assert set(data.qrels["train"]["query_id"]) == {"q1", "q2"}
    assert data.summary["dropped"]["train_queries_without_positives"] == 1
    assert set(data.qrels["test"]["query_id"]) == {"q1", "q3"}  # other splits keep them
    fails(
        tmp_path,
        beir_spec(folder),
        "train.tsv:4:",
        "train query 'q3'",
        "no relevant document",
        options={"queries_without_positives": "error"},
    )


# --- formats and options -----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_plain_and_gzipped_jsonl(tmp_path, gz):
    docs = DOCS + [{"_id": 17, "title": None, "text": "Numeric id."}]  # BEIR has numeric-looking ids
    qrels = {**QRELS, "train": QRELS["train"] + [("q1", "17", 1)]}
    folder = write_beir(tmp_path / "toy", docs=docs, qrels=qrels, gz=gz)
    data = load_dataset("toy", beir_spec(folder), {})
    assert list(data.corpus["doc_id"]) == ["d1", "d2", "d3", "d4", "17"]
    assert list(data.corpus["title"]) == ["Apples", "", "Cherries", "", ""]
    assert data.summary["splits"]["train"] == {"documents": 5, "queries": 2, "judged_pairs": 3, "relevant_pairs": 3}
    assert data.summary["splits"]["test"] == {"documents": 5, "queries": 1, "judged_pairs": 2, "relevant_pairs": 1}


def test_title_join():
    assert passage_text("T", "body", "space") == "T body"
    assert passage_text("", "body", "space") == "body"
    assert passage_text("T", "body", "newline") == "T\nbody"
    assert passage_text("", "body", "newline") == "body"
    assert passage_text("T", "body", "text_only") == "body"
    assert passage_text("T", "", "text_only") == "T"
    corpus = pd.DataFrame({"doc_id": ["a", "b"], "title": ["A", ""], "text": ["x", "y"]})
    assert passage_texts(corpus, "space") == ["A x", "y"]
    with pytest.raises(ValueError):
        passage_text("T", "body", "comma")


def test_positive_threshold_maps_low_grades_to_zero(tmp_path):
    qrels = {"train": QRELS["train"], "test": [("q3", "d3", 3), ("q3", "d4", 2), ("q1", "d1", 1)]}
    folder = write_beir(tmp_path / "toy", qrels=qrels)
    data = load_dataset("toy", beir_spec(folder, positive_threshold={"test": 3}), {})
    assert list(data.qrels["test"]["relevance"]) == [3, 0, 0]
    assert data.summary["splits"]["test"]["judged_pairs"] == 3
    assert data.summary["splits"]["test"]["relevant_pairs"] == 1


def test_subsample_is_deterministic_and_consistent():
    sub = {"docs": 300, "queries": {"train": 20, "test": 10}, "seed": 3}
    first = load_dataset("scifact", resolve_dataset("scifact", {"subsample": sub}), {})
    again = load_dataset("scifact", resolve_dataset("scifact", {"subsample": sub}), {})
    other = load_dataset("scifact", resolve_dataset("scifact", {"subsample": {**sub, "seed": 4}}), {})
    pd.testing.assert_frame_equal(first.corpus, again.corpus)
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(first.qrels[split], again.qrels[split])
    assert set(first.qrels["train"]["query_id"]) != set(other.qrels["train"]["query_id"])

    assert len(first.corpus) == 300
    kept_docs = set(first.corpus["doc_id"])
    assert set(first.queries["query_id"]) == set(first.qrels["train"]["query_id"]) | set(
        first.qrels["test"]["query_id"]
    )
    for split, n in sub["queries"].items():
        qrels = first.qrels[split]
        assert qrels["query_id"].nunique() == n
        assert set(qrels["doc_id"]) <= kept_docs
        assert (qrels.groupby("query_id")["relevance"].max() >= 1).all()
    # every relevant document of a kept query survives (nothing a kept query needs is cut)
    full = load_dataset("scifact", resolve_dataset("scifact"), {})
    for split in ("train", "test"):
        kept = full.qrels[split][full.qrels[split]["query_id"].isin(first.qrels[split]["query_id"])]
        assert len(kept) == len(first.qrels[split])


# --- ir_datasets: real record classes fed to registered datasets (offline; see irds_helpers) ----------


def _antique_spec() -> dict:
    return {
        "source": {"type": "ir_datasets", "ids": {"train": "antique/train", "test": "antique/test"}},
        "splits": ["train", "test"],
        "positive_threshold": {"test": 3},
    }


def test_ir_datasets_mapping(monkeypatch, offline):
    train, test = ir_datasets.load("antique/train"), ir_datasets.load("antique/test")
    Doc, Query, Qrel = train.docs_cls(), train.queries_cls(), train.qrels_cls()  # GenericDoc has no title
    docs = [Doc("d1", "alpha"), Doc("d2", "beta"), Doc("d3", "gamma")]
    feed(
        monkeypatch,
        "antique/train",
        docs=docs,
        queries=[Query("1", "first")],
        qrels=[Qrel("1", "d1", 1, "0"), Qrel("1", "d2", 3, "0")],
    )
    feed(
        monkeypatch,
        "antique/test",
        docs=docs,
        queries=[Query("2", "second")],
        qrels=[Qrel("2", "d3", 4, "0"), Qrel("2", "d1", 2, "0")],
    )
    assert test.qrels_cls() is Qrel
    data = load_dataset("antique", _antique_spec(), {})
    assert data.corpus.to_dict("list") == {
        "doc_id": ["d1", "d2", "d3"],
        "title": ["", "", ""],
        "text": ["alpha", "beta", "gamma"],
    }
    assert data.queries.to_dict("list") == {"query_id": ["1", "2"], "text": ["first", "second"]}
    assert data.qrels["train"].to_dict("list") == {"query_id": ["1", "1"], "doc_id": ["d1", "d2"], "relevance": [1, 3]}
    assert data.qrels["test"].to_dict("list") == {"query_id": ["2", "2"], "doc_id": ["d3", "d1"], "relevance": [4, 0]}


def test_ir_datasets_text_fallback(monkeypatch, offline):
    """Classes without a ``text`` field: a query gives its first string field after the id (the
    title); a document skips title, url and markup (NfCorpusDoc gives its abstract)."""
    ids = {"train": "nfcorpus/train", "test": "nfcorpus/test"}
    dataset = ir_datasets.load(ids["train"])
    Doc, Query, Qrel = dataset.docs_cls(), dataset.queries_cls(), dataset.qrels_cls()
    assert (Doc._fields, Query._fields) == (("doc_id", "url", "title", "abstract"), ("query_id", "title", "all"))
    docs = [record(Doc, doc_id="MED-1", title="Statins", abstract="Statins lower cholesterol.")]
    for split, query_id in (("train", "PLAIN-1"), ("test", "PLAIN-2")):
        feed(
            monkeypatch,
            ids[split],
            docs=docs,
            queries=[record(Query, query_id=query_id, title=f"title {query_id}")],
            qrels=[Qrel(query_id, "MED-1", 2, "0")],
        )
    data = load_dataset("nf", {"source": {"type": "ir_datasets", "ids": ids}, "splits": ["train", "test"]}, {})
    assert data.corpus.to_dict("list") == {
        "doc_id": ["MED-1"],
        "title": ["Statins"],
        "text": ["Statins lower cholesterol."],
    }
    assert data.queries.to_dict("list") == {
        "query_id": ["PLAIN-1", "PLAIN-2"],
        "text": ["title PLAIN-1", "title PLAIN-2"],
    }


def test_ir_datasets_failure_shows_manual_download(tmp_path, offline):
    """TripClick's archive is not in the (empty) IR_DATASETS_HOME: ir_datasets fails without any
    download attempt, and the message carries the dataset's manual_download text."""
    spec = {
        "source": {"type": "ir_datasets", "ids": {"train": "tripclick/train/head"}},
        "splits": ["train"],
        "manual_download": "Request access at https://example.org first.",
    }
    fails(
        tmp_path,
        spec,
        "tripclick/train/head",
        "FileNotFoundError",
        "benchmark.tar.gz",
        "Request access at https://example.org first.",
    )


def test_ir_datasets_unknown_id_names_the_config_key(tmp_path):
    spec = {
        "source": {"type": "ir_datasets", "ids": {"train": "antique/train", "test": "antique/tset"}},
        "splits": ["train", "test"],
    }
    fails(tmp_path, spec, "config key 'datasets.toy.source.ids.test'", "'antique/tset'", "'antique/test'")


# --- files a reader cannot trust: each error names the file and the line ----------------------------------


def test_a_json_list_as_text_is_refused(tmp_path):
    docs = [*DOCS[:3], {"_id": "d4", "text": ["Dates", "are", "sweet."]}]
    folder = write_beir(tmp_path / "beir", docs=docs)
    fails(tmp_path, beir_spec(folder), "corpus.jsonl:4", "field 'text' must be a string, got list")


def test_a_byte_that_is_not_utf8_names_file_and_line(tmp_path):
    folder = write_beir(tmp_path / "beir")
    corpus = folder / "corpus.jsonl"
    lines = corpus.read_bytes().splitlines(keepends=True)
    corpus.write_bytes(b"".join(lines[:2] + [lines[2].replace(b"Cherries", b"Cherr\xe9es")] + lines[3:]))
    fails(tmp_path, beir_spec(folder), "corpus.jsonl:3", "not UTF-8", "0xe9")


def test_a_truncated_gzip_file_says_so(tmp_path):
    folder = write_beir(tmp_path / "beir", gz=True)
    corpus = folder / "corpus.jsonl.gz"
    corpus.write_bytes(corpus.read_bytes()[:-12])  # the end of the stream is gone
    fails(tmp_path, beir_spec(folder), "corpus.jsonl.gz", "truncated or damaged")


def test_qrels_with_a_bom_read_and_another_header_is_named(tmp_path):
    folder = write_beir(tmp_path / "beir")
    test_qrels = folder / "qrels" / "test.tsv"
    test_qrels.write_bytes(b"\xef\xbb\xbf" + test_qrels.read_bytes())  # saved by a spreadsheet
    prepare("toy", beir_spec(folder), None, tmp_path / "ok")
    test_qrels.write_text("qid\tdocid\trel\nq3\td3\t2\n", encoding="utf-8")
    fails(tmp_path, beir_spec(folder), "test.tsv:1", "a header other than")


def test_an_evaluation_split_without_a_relevant_judgment_fails_at_download(tmp_path):
    qrels = {"train": QRELS["train"], "test": [("q3", "d3", 0), ("q3", "d4", 0)]}
    folder = write_beir(tmp_path / "beir", qrels=qrels)
    fails(tmp_path, beir_spec(folder), "test.tsv", "no judgment of split 'test' is relevant")


# --- train queries against the models' global batch ------------------------------------------------------


def test_a_prepared_train_split_smaller_than_a_global_batch_is_refused(tmp_path):
    from opera.data import check_train_queries

    summary = prepare("toy", beir_spec(write_beir(tmp_path / "toy")), {}, tmp_path / "out")  # 2 train queries
    check_train_queries("toy", summary, {"small": 2})
    check_train_queries("toy", summary, {})  # nothing finetunes
    check_train_queries("toy", {"splits": {"test": summary["splits"]["test"]}}, {"big": 64})  # no train split
    with pytest.raises(DataError) as err:
        check_train_queries("toy", summary, {"small": 2, "big": 3, "bigger": 8})
    message = str(err.value)
    for part in ("'toy'", "train split has 2 queries", "models.big.batch_size (3 queries", "models.bigger.batch_size"):
        assert part in message, (part, message)
    assert "models.small" not in message


def test_train_queries_known_offline_only_for_local_files_or_a_subsample(tmp_path):
    from opera.data import train_queries

    irds = {"source": {"type": "ir_datasets", "ids": {"train": "beir/scifact/train"}}, "splits": ["train"]}
    assert train_queries("sf", irds) is None
    assert train_queries("sf", {**irds, "subsample": {"queries": {"train": 7}}}) == (
        7,
        "datasets.sf.subsample.queries.train is 7",
    )
    count, where = train_queries("scifact", resolve_dataset("scifact"))
    assert count == 809 and "scifact/qrels/train.tsv" in where
    assert train_queries("scifact", resolve_dataset("scifact", {"subsample": {"queries": {"train": 900}}}))[0] == 809


# --- train queries that the evaluation also has -------------------------------------------------------

# q1 is judged in train and test (same id); q4 in test asks q2's question again (same text)
LEAKY_QUERIES = [*QUERIES, {"_id": "q4", "text": "banana colour"}]
LEAKY_QRELS = {"train": QRELS["train"], "test": [*QRELS["test"], ("q1", "d1", 1), ("q4", "d2", 1)]}


@pytest.mark.parametrize("policy", ["warn", "drop"])
def test_train_queries_the_evaluation_also_has_are_counted_and_kept_or_dropped(tmp_path, caplog, policy):
    folder = write_beir(tmp_path / "toy", queries=LEAKY_QUERIES, qrels=LEAKY_QRELS)
    with caplog.at_level("WARNING"):
        summary = prepare("toy", beir_spec(folder), {"eval_overlap": policy}, tmp_path / "out")
    assert summary["eval_overlap"]["splits"] == {"test": {"same_id": 1, "same_text": 1}}
    assert "1 test queries are also train queries (same id) and 1 more have a train query's text" in caplog.text
    train = set(read_prepared(tmp_path / "out").qrels["train"]["query_id"])
    assert train == ({"q1", "q2"} if policy == "warn" else set())  # drop: both leave train, test stays whole
    assert summary["eval_overlap"]["dropped_train_queries"] == (0 if policy == "warn" else 2)
    assert set(read_prepared(tmp_path / "out").qrels["test"]["query_id"]) == {"q1", "q3", "q4"}


def test_train_queries_the_evaluation_also_has_stop_the_download_when_asked(tmp_path):
    folder = write_beir(tmp_path / "toy", queries=LEAKY_QUERIES, qrels=LEAKY_QRELS)
    fails(
        tmp_path,
        beir_spec(folder),
        "1 test queries are also train queries",
        "data.eval_overlap: drop",
        options={"eval_overlap": "error"},
    )


def test_shipped_datasets_overlap_counts():
    """Measured on the shipped data: a few evaluation queries repeat a train query's text."""
    counts = {
        name: load_dataset(name, resolve_dataset(name), {}).summary["eval_overlap"]["splits"] for name in OFFICIAL
    }
    assert counts == {
        "nfcorpus": {"dev": {"same_id": 0, "same_text": 2}, "test": {"same_id": 0, "same_text": 3}},
        "scifact": {"test": {"same_id": 0, "same_text": 2}},
    }
