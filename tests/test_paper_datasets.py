"""The paper's datasets (config/paper.yaml) through ir_datasets, offline.

For each dataset: its ids are registered, its documented sizes (ir_datasets' bundled metadata)
are the ones recorded here, and records built from the dataset's own record classes go through
opera's loader with the right ids, texts and thresholds. Nothing is downloaded: the records are
fed to the registered datasets (irds_helpers.feed) and sockets refuse to connect.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from irds_helpers import feed, grades, ir_datasets, record

from opera.config import eval_split, load_registry, resolve_dataset
from opera.data import DataError, check_source, load_dataset

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text(encoding="utf-8"))

pytestmark = pytest.mark.usefixtures("offline")

# name -> (evaluation split, documents, {split: (queries, judged pairs, relevant pairs after the threshold)}),
# as documented by ir_datasets 0.6.3 (docs_count, queries_count, qrels_count, qrels_metadata).
EXPECTED = {
    "nfcorpus-irds": (
        "test",
        3_633,
        {"train": (2_590, 110_575, 110_575), "dev": (324, 11_385, 11_385), "test": (323, 12_334, 12_334)},
    ),
    "fiqa": (
        "test",
        57_638,
        {"train": (5_500, 14_166, 14_166), "dev": (500, 1_238, 1_238), "test": (648, 1_706, 1_706)},
    ),
    "hotpotqa": (
        "test",
        5_233_329,
        {"train": (85_000, 170_000, 170_000), "dev": (5_447, 10_894, 10_894), "test": (7_405, 14_810, 14_810)},
    ),
    "fever": (
        "test",
        5_416_568,
        {"train": (109_810, 140_085, 140_085), "dev": (6_666, 8_079, 8_079), "test": (6_666, 7_937, 7_937)},
    ),
    "antique": ("test", 403_666, {"train": (2_426, 27_422, 27_422), "test": (200, 6_589, 2_530)}),
    "triviaqa": ("dev", 21_015_324, {"train": (78_785, 7_878_500, 741_436), "dev": (8_837, 883_700, 82_658)}),
    "tripclick-head": ("dev", 1_523_878, {"train": (3_529, 116_821, 55_663), "dev": (1_175, 64_364, 32_067)}),
    "tripclick-torso": ("dev", 1_523_878, {"train": (105_964, 966_898, 424_820), "dev": (1_175, 14_133, 6_202)}),
}
NAMES = list(PAPER["datasets"])


def spec_of(name: str) -> dict:
    return resolve_dataset(name, PAPER["datasets"][name])


def test_the_table_covers_the_paper_config():
    assert sorted(NAMES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_ids_are_registered_and_the_evaluation_split_has_qrels(name):
    spec = spec_of(name)
    check_source(name, spec)  # raises on an unregistered id, a split without qrels, mixed corpora
    ids = spec["source"]["ids"]
    assert set(ids) == set(spec["splits"]), "an id for every split, and no id for a split that is not loaded"
    assert all(ids[split] in set(ir_datasets.registry) for split in spec["splits"])
    assert eval_split(spec) == EXPECTED[name][0]


@pytest.mark.parametrize("name", NAMES)
def test_documented_counts(name):
    spec = spec_of(name)
    _, n_docs, splits = EXPECTED[name]
    assert list(splits) == spec["splits"]
    for split, (n_queries, n_qrels, n_relevant) in splits.items():
        dataset = ir_datasets.load(spec["source"]["ids"][split])
        assert (dataset.docs_count(), dataset.queries_count(), dataset.qrels_count()) == (n_docs, n_queries, n_qrels)
        threshold = spec["positive_threshold"].get(split, 1)
        by_grade = dataset.qrels_metadata()["fields"]["relevance"]["counts_by_value"]
        assert sum(n for grade, n in by_grade.items() if int(grade) >= threshold) == n_relevant


def _feed_split_records(monkeypatch, spec: dict) -> dict:
    """Feed every split a small real-class sample; return what the loader must make of it."""
    ids, per_split = spec["source"]["ids"], spec["source"].get("query_ids_per_split", False)
    first = ir_datasets.load(ids[spec["splits"][0]])
    n_docs = max(len(grades(ir_datasets.load(ids[s]))) for s in spec["splits"])
    docs = [
        record(
            first.docs_cls(), doc_id=f"d{i}", text=f"passage {i}", title=f"Title {i}", url=f"https://example.org/{i}"
        )
        for i in range(n_docs)
    ]
    expected = {
        "doc_ids": [d.doc_id for d in docs],
        "titles": [getattr(d, "title", "") for d in docs],
        "texts": [d.text for d in docs],
        "queries": {},
        "qrels": {},
    }
    for split in spec["splits"]:
        dataset = ir_datasets.load(ids[split])
        threshold = spec["positive_threshold"].get(split, 1)
        # per-split numbering reuses the raw ids "0", "1" in every split, as dpr-w100 does
        raw_ids = ["0", "1"] if per_split else [f"{split}-q0", f"{split}-q1"]
        queries = [record(dataset.queries_cls(), query_id=q, text=f"{split} question {q}") for q in raw_ids]
        qrels = [
            record(dataset.qrels_cls(), query_id=q, doc_id=f"d{i}", relevance=grade, iteration="0")
            for q in raw_ids
            for i, grade in enumerate(grades(dataset))
        ]
        feed(monkeypatch, ids[split], docs=docs, queries=queries, qrels=qrels)
        scoped = {q: f"{split}:{q}" if per_split else q for q in raw_ids}
        expected["queries"].update({scoped[q.query_id]: q.text for q in queries})
        expected["qrels"][split] = [
            (scoped[r.query_id], r.doc_id, r.relevance if r.relevance >= threshold else 0) for r in qrels
        ]
    return expected


@pytest.mark.parametrize("name", NAMES)
def test_real_class_records_go_through_the_loader(monkeypatch, name):
    spec = spec_of(name)
    expected = _feed_split_records(monkeypatch, spec)
    data = load_dataset(name, spec, {})
    assert data.corpus.to_dict("list") == {
        "doc_id": expected["doc_ids"],
        "title": expected["titles"],
        "text": expected["texts"],
    }
    assert dict(zip(data.queries["query_id"], data.queries["text"], strict=True)) == expected["queries"]
    for split in spec["splits"]:
        got = list(data.qrels[split][["query_id", "doc_id", "relevance"]].itertuples(index=False, name=None))
        assert got == expected["qrels"][split]
        assert data.qrels[split]["relevance"].dtype == "int64"
    assert data.summary["dropped"] == {
        "duplicate_documents": 0,
        "unjudged_queries": 0,
        "train_queries_without_positives": 0,
    }


def test_record_classes_carry_the_text_fields_the_loader_reads():
    """The fields behind the loader's title/text columns, per source (a change in ir_datasets shows here)."""
    fields = {
        name: ir_datasets.load(spec_of(name)["source"]["ids"][spec_of(name)["splits"][0]]).docs_cls()._fields
        for name in NAMES
    }
    assert fields["hotpotqa"] == ("doc_id", "text", "title", "url")  # url is not kept
    assert fields["nfcorpus-irds"] == ("doc_id", "text", "title", "url")
    assert fields["fever"] == ("doc_id", "text", "title")
    assert fields["triviaqa"] == ("doc_id", "text", "title")  # DPR passages: the Wikipedia title
    assert fields["fiqa"] == fields["antique"] == ("doc_id", "text")  # no title: an empty title column
    assert fields["tripclick-head"] == fields["tripclick-torso"] == ("doc_id", "title", "url", "text")
    trivia = ir_datasets.load("dpr-w100/trivia-qa/dev")
    assert trivia.queries_cls()._fields == ("query_id", "text", "answers")
    assert ir_datasets.load("tripclick/val/head").queries_cls()._fields == ("query_id", "text")


def test_hotpotqa_documents_keep_title_and_text(monkeypatch):
    spec = spec_of("hotpotqa")
    _feed_split_records(monkeypatch, spec)
    doc = load_dataset("hotpotqa", spec, {}).corpus.iloc[0]
    assert (doc["doc_id"], doc["title"], doc["text"]) == ("d0", "Title 0", "passage 0")


def test_triviaqa_train_and_dev_queries_with_the_same_raw_id_stay_distinct(monkeypatch):
    spec = spec_of("triviaqa")
    assert spec["source"]["query_ids_per_split"] is True
    _feed_split_records(monkeypatch, spec)
    data = load_dataset("triviaqa", spec, {})
    texts = dict(zip(data.queries["query_id"], data.queries["text"], strict=True))
    assert texts == {
        "train:0": "train question 0",
        "train:1": "train question 1",
        "dev:0": "dev question 0",
        "dev:1": "dev question 1",
    }
    assert set(data.qrels["train"]["query_id"]) == {"train:0", "train:1"}
    assert set(data.qrels["dev"]["query_id"]) == {"dev:0", "dev:1"}


def test_triviaqa_relevance_grades(monkeypatch):
    """qrels_defs: 2 human-marked answer passage, 1 DPR positive (answer text, BM25 top), 0 hard
    negative, -1 negative. 2 and 1 are relevant (DPR's positive_ctxs); 0 and -1 become 0."""
    spec = spec_of("triviaqa")
    assert set(ir_datasets.load("dpr-w100/trivia-qa/dev").qrels_defs()) == {2, 1, 0, -1}
    _feed_split_records(monkeypatch, spec)
    data = load_dataset("triviaqa", spec, {})
    dev = data.qrels["dev"].loc[data.qrels["dev"]["query_id"] == "dev:0"]
    assert list(dev["relevance"]) == [2, 1, 0, 0]
    assert data.summary["splits"]["dev"]["relevant_pairs"] == 4  # 2 queries x grades {2, 1}


def test_triviaqa_without_per_split_ids_reports_the_clash(monkeypatch):
    spec = spec_of("triviaqa")
    _feed_split_records(monkeypatch, spec)
    spec["source"]["query_ids_per_split"] = False
    with pytest.raises(
        DataError,
        match=r"query '0' has different texts in different splits.*"
        r"datasets\.triviaqa\.source\.query_ids_per_split: true",
    ):
        load_dataset("triviaqa", spec, {})


def test_antique_test_threshold_is_3(monkeypatch):
    spec = spec_of("antique")
    assert spec["positive_threshold"] == {"test": 3}
    _feed_split_records(monkeypatch, spec)
    data = load_dataset("antique", spec, {})
    assert list(data.qrels["test"]["relevance"][:4]) == [4, 3, 0, 0]  # grades 4, 3, 2, 1
    assert list(data.qrels["train"]["relevance"][:4]) == [4, 3, 2, 1]  # train: default threshold 1


# --- check_source ---------------------------------------------------------------------------


def test_every_registry_ir_datasets_entry_passes_the_check():
    entries = {
        name: entry for name, entry in load_registry()["datasets"].items() if entry["source"]["type"] == "ir_datasets"
    }
    assert set(NAMES) <= set(entries)
    for name in entries:
        check_source(name, resolve_dataset(name))


def _irds(ids: dict, splits=None) -> dict:
    return {"source": {"type": "ir_datasets", "ids": ids}, "splits": list(splits or ids)}


def test_check_names_the_key_and_the_closest_ids():
    with pytest.raises(DataError) as err:  # the registry's old TriviaQA entry
        check_source(
            "triviaqa",
            _irds(
                {
                    "train": "dpr-w100/trivia-qa/train",
                    "dev": "dpr-w100/trivia-qa/dev",
                    "test": "dpr-w100/trivia-qa/test",
                }
            ),
        )
    message = str(err.value)
    assert message.startswith(
        "config key 'datasets.triviaqa.source.ids.test': 'dpr-w100/trivia-qa/test' is not an ir_datasets id"
    )
    assert "closest registered ids: 'dpr-w100/trivia-qa/dev', 'dpr-w100/trivia-qa/train'" in message


def test_check_rejects_a_split_without_qrels():
    with pytest.raises(
        DataError,
        match=r"'datasets\.th\.source\.ids\.test': ir_datasets 'tripclick/test/head' "
        r"has no qrels; closest registered ids: .*'tripclick/val/head'",
    ):
        check_source("th", _irds({"train": "tripclick/train/head", "test": "tripclick/test/head"}))


def test_check_rejects_a_missing_split_id_and_mixed_corpora():
    with pytest.raises(DataError, match=r"'datasets\.f\.source\.ids': no ir_datasets id for split\(s\) \['dev'\]"):
        check_source("f", _irds({"train": "beir/fiqa/train", "test": "beir/fiqa/test"}, ["train", "dev", "test"]))
    with pytest.raises(
        DataError,
        match=r"'datasets\.f\.source\.ids\.test': 'beir/nfcorpus/test' searches the "
        r"document collection 'beir/nfcorpus'.*'beir/fiqa'",
    ):
        check_source("f", _irds({"train": "beir/fiqa/train", "test": "beir/nfcorpus/test"}))


def test_check_ignores_other_sources_and_no_id_is_close():
    assert check_source("nfcorpus", resolve_dataset("nfcorpus")) is None
    with pytest.raises(DataError, match="no registered id is close"):
        check_source("x", _irds({"test": "zzzz-qqqq"}))


def test_opera_data_imports_ir_datasets_lazily():
    code = (
        "import sys, opera.data as d; from opera.config import resolve_dataset; "
        "d.check_source('scifact', resolve_dataset('scifact')); "
        "assert 'ir_datasets' not in sys.modules, 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
