"""The Hugging Face `datasets` source (type hf), offline on local copies made with `datasets`: a
save_to_disk folder, an mteb-style repo (configs corpus, queries, default = qrels) and a BeIR-style
pair of repos (BeIR/<name> with corpus and queries, BeIR/<name>-qrels with train/dev/test tsv files)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_data import DOCS, QRELS, QUERIES, beir_spec, write_beir

from opera.data import DataError, load_dataset, source_files

datasets = pytest.importorskip("datasets")

CORPUS_ROWS = {
    "_id": [d["_id"] for d in DOCS],
    "title": [d.get("title", "") for d in DOCS],
    "text": [d["text"] for d in DOCS],
}
QUERY_ROWS = {"_id": [q["_id"] for q in QUERIES], "text": [q["text"] for q in QUERIES]}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """`datasets` caches what it builds from local files: here, under the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _qrels_rows(rows, score=int) -> dict:
    return {"query-id": [r[0] for r in rows], "corpus-id": [r[1] for r in rows], "score": [score(r[2]) for r in rows]}


def hf_spec(repo, splits=("train", "test"), **source) -> dict:
    return {"source": {"type": "hf", "repo": str(repo), **source}, "splits": list(splits), "positive_threshold": {}}


def _same_tables(a, b):
    pd.testing.assert_frame_equal(a.corpus, b.corpus)
    pd.testing.assert_frame_equal(a.queries, b.queries)
    assert set(a.qrels) == set(b.qrels)
    for split in a.qrels:
        pd.testing.assert_frame_equal(a.qrels[split], b.qrels[split])


def write_saved(folder, qrels=QRELS, score=int):
    """corpus/, queries/ and qrels/ written by save_to_disk."""
    datasets.Dataset.from_dict(CORPUS_ROWS).save_to_disk(str(folder / "corpus"))
    datasets.Dataset.from_dict(QUERY_ROWS).save_to_disk(str(folder / "queries"))
    datasets.DatasetDict({s: datasets.Dataset.from_dict(_qrels_rows(r, score)) for s, r in qrels.items()}).save_to_disk(
        str(folder / "qrels")
    )
    return folder


def write_mteb_repo(folder, corpus_lines=None):
    """The layout of mteb/<name> on the hub: jsonl files, configs declared in README.md, float scores."""
    (folder / "qrels").mkdir(parents=True)
    corpus_lines = corpus_lines or [
        json.dumps(dict(zip(CORPUS_ROWS, row, strict=True))) for row in zip(*CORPUS_ROWS.values(), strict=True)
    ]
    (folder / "corpus.jsonl").write_text("\n".join(corpus_lines) + "\n")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n" for q in QUERIES)
    )
    for split, rows in QRELS.items():
        lines = [json.dumps({"query-id": q, "corpus-id": d, "score": float(s)}) for q, d, s in rows]
        (folder / "qrels" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    qrels_files = "".join(f"  - split: {s}\n    path: qrels/{s}.jsonl\n" for s in QRELS)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        + qrels_files
        + "- config_name: corpus\n  data_files:\n  - split: corpus\n    path: corpus.jsonl\n"
        + "- config_name: queries\n  data_files:\n  - split: queries\n    path: queries.jsonl\n---\n"
    )
    return folder


def test_save_to_disk_copy_loads_like_the_beir_folder(tmp_path):
    beir = load_dataset("toy", beir_spec(write_beir(tmp_path / "beir")))
    hf = load_dataset("toy", hf_spec(write_saved(tmp_path / "saved")))
    _same_tables(beir, hf)
    assert hf.summary["source"]["type"] == "hf"


def test_mteb_layout_loads_like_the_beir_folder(tmp_path):
    beir = load_dataset("toy", beir_spec(write_beir(tmp_path / "beir")))
    hf = load_dataset("toy", hf_spec(write_mteb_repo(tmp_path / "mteb")))
    _same_tables(beir, hf)  # scores 1.0, 2.0 read as the integers 1, 2
    assert str(tmp_path / "mteb" / "README.md") in source_files("toy", hf_spec(tmp_path / "mteb"))


def test_beir_layout_qrels_in_a_second_repo_with_a_validation_split(tmp_path):
    repo = tmp_path / "BeIR-toy"
    write_mteb_repo(repo)
    qrels_repo = tmp_path / "BeIR-toy-qrels"
    qrels_repo.mkdir()
    rows = {"train": QRELS["train"], "dev": QRELS["train"], "test": QRELS["test"]}
    for split, split_rows in rows.items():  # as BeIR/<name>-qrels: dev.tsv becomes the split "validation"
        body = "".join("\t".join(map(str, r)) + "\n" for r in split_rows)
        (qrels_repo / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + body)
    hf = load_dataset("toy", hf_spec(repo, ("train", "dev", "test"), qrels_repo=str(qrels_repo)))
    assert set(hf.qrels) == {"train", "dev", "test"}
    pd.testing.assert_frame_equal(hf.qrels["dev"], hf.qrels["train"])


def test_hf_errors_name_the_dataset_row_and_id(tmp_path):
    duplicated = [json.dumps({"_id": "d1", "title": "", "text": "x"})] * 2
    repo = write_mteb_repo(tmp_path / "dup", corpus_lines=duplicated)
    with pytest.raises(DataError, match=r"hf:.*dup\[corpus\]:2: duplicate document id 'd1' \(first seen on line 1\)"):
        load_dataset("toy", hf_spec(repo))

    saved = write_saved(tmp_path / "saved", qrels={"train": QRELS["train"]})
    with pytest.raises(DataError, match=r"hf:.*saved\[default\]: no split for the 'test' qrels .*has \['train'\]"):
        load_dataset("toy", hf_spec(saved))

    half = write_saved(tmp_path / "half", qrels={"train": [("q1", "d1", 1.5)]}, score=float)
    with pytest.raises(DataError, match=r"hf:.*half\[default\]/train:1: relevance '1.5' .* is not an integer"):
        load_dataset("toy", hf_spec(half, ("train",)))

    with pytest.raises(DataError, match=r"hf:.*nowhere\[corpus\]: could not load corpus"):
        load_dataset("toy", hf_spec(tmp_path / "nowhere"))
