"""opera.retrieval.metrics against hand-computed trec_eval values.

trec_eval semantics checked here:
* NDCG@k: gain = graded relevance, discount log2(rank + 1), ideal DCG over *all* judged relevant
  documents of the query (also those the run never retrieved), sorted by relevance;
* ties in the run are broken by document id, descending (trec_eval sorts on score, then docno);
* Recall@k divides by all relevant documents; MRR@10 is reciprocal rank within the top 10;
* unjudged documents in the run count as non-relevant;
* a query whose judgments hold no relevant document is excluded and counted;
* a judged query missing from the run scores 0 on every metric.
"""

from __future__ import annotations

from math import log2

import numpy as np
import pandas as pd
import pytest

from opera.retrieval import metrics

CUTOFFS = (1, 5, 10, 20)

# Nine unjudged filler documents, scores 0.9 .. 0.1, ranks 1..9 of queries q4 and q5.
FILLER = {f"n{i:02d}": round(1.0 - i / 10, 1) for i in range(1, 10)}

QRELS = {
    # q1: graded; d9 (rel 2) is never retrieved but counts in the ideal DCG and in recall.
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1, "d9": 2},
    # q2: only non-relevant judgments -> excluded and counted.
    "q2": {"d5": 0, "d6": 0},
    # q3: judged, but absent from the run -> 0 on every metric.
    "q3": {"d7": 1},
    # q4 / q5: a single relevant document tied with an unjudged one at the rank 10/11 boundary.
    "q4": {"r": 1},
    "q5": {"r": 1},
}

RUN = {
    # Sorted by trec_eval: u1 (0.9), d4 (0.8; "d4" > "d2"), d2 (0.8), d3 (0.7; "d3" > "d1"),
    # d1 (0.7), u2 (0.6).  Gains by rank: 0, 1, 1, 0, 2, 0.
    "q1": {"d1": 0.7, "d2": 0.8, "d3": 0.7, "d4": 0.8, "u1": 0.9, "u2": 0.6},
    "q2": {"d5": 0.9, "d6": 0.1},
    # q4: "s" > "r", so s takes rank 10 and the relevant r falls to rank 11.
    "q4": {**FILLER, "r": 0.05, "s": 0.05},
    # q5: "r" > "a", so r takes rank 10.
    "q5": {**FILLER, "r": 0.05, "a": 0.05},
    # Not judged at all: ignored.
    "q9": {"d1": 1.0},
}


def _expected() -> dict[str, dict[str, float]]:
    # q1 ---------------------------------------------------------------------------------------
    dcg_q1 = 0 / log2(2) + 1 / log2(3) + 1 / log2(4) + 0 / log2(5) + 2 / log2(6) + 0 / log2(7)
    # ideal: judged relevant d1 (2), d9 (2), d2 (1), d4 (1)
    idcg_q1 = 2 / log2(2) + 2 / log2(3) + 1 / log2(4) + 1 / log2(5)
    q1 = {
        "NDCG@1": (0 / log2(2)) / (2 / log2(2)),
        "NDCG@5": (1 / log2(3) + 1 / log2(4) + 2 / log2(6)) / idcg_q1,
        "NDCG@10": dcg_q1 / idcg_q1,
        "NDCG@20": dcg_q1 / idcg_q1,
        "Recall@1": 0 / 4,
        "Recall@5": 3 / 4,  # d4, d2, d1 of {d1, d2, d4, d9}
        "Recall@10": 3 / 4,
        "Recall@20": 3 / 4,
        "MRR@10": 1 / 2,  # first relevant: d4 at rank 2
    }
    # q3: missing from the run --------------------------------------------------------------------
    q3 = {name: 0.0 for name in q1}
    # q4: relevant r at rank 11 ------------------------------------------------------------------
    q4 = {
        "NDCG@1": 0.0,
        "NDCG@5": 0.0,
        "NDCG@10": 0.0,
        "NDCG@20": (1 / log2(12)) / (1 / log2(2)),
        "Recall@1": 0.0,
        "Recall@5": 0.0,
        "Recall@10": 0.0,
        "Recall@20": 1 / 1,
        "MRR@10": 0.0,  # 1/11 without the cutoff
    }
    # q5: relevant r at rank 10 ------------------------------------------------------------------
    q5 = {
        "NDCG@1": 0.0,
        "NDCG@5": 0.0,
        "NDCG@10": (1 / log2(11)) / (1 / log2(2)),
        "NDCG@20": (1 / log2(11)) / (1 / log2(2)),
        "Recall@1": 0.0,
        "Recall@5": 0.0,
        "Recall@10": 1.0,
        "Recall@20": 1.0,
        "MRR@10": 1 / 10,
    }
    return {"q1": q1, "q3": q3, "q4": q4, "q5": q5}


@pytest.fixture(scope="module")
def evaluated():
    return metrics.evaluate(RUN, QRELS, cutoffs=CUTOFFS, mrr_cutoff=10)


def test_evaluated_and_excluded_queries(evaluated):
    per_query, summary = evaluated
    assert list(per_query["query_id"]) == ["q1", "q3", "q4", "q5"]  # q2 excluded, q9 unjudged
    assert summary["n_queries"] == 4
    assert summary["n_excluded"] == 1
    expected_columns = ["query_id", *(f"NDCG@{k}" for k in CUTOFFS), *(f"Recall@{k}" for k in CUTOFFS), "MRR@10"]
    assert list(per_query.columns) == expected_columns


@pytest.mark.parametrize("query_id", ["q1", "q3", "q4", "q5"])
def test_per_query_metrics_match_hand_computation(evaluated, query_id):
    per_query, _ = evaluated
    row = per_query.set_index("query_id").loc[query_id]
    for name, value in _expected()[query_id].items():
        assert row[name] == pytest.approx(value, abs=1e-9), f"{query_id} {name}"


def test_mean_metrics_match_hand_computation(evaluated):
    _, summary = evaluated
    expected = _expected()
    for name in expected["q1"]:
        mean = sum(expected[q][name] for q in expected) / len(expected)
        assert summary["metrics"][name] == pytest.approx(mean, abs=1e-9), name


def test_ties_are_broken_by_doc_id_descending():
    # Same scores, relevant doc id sorts last ("a" < "b"): trec_eval puts "b" first.
    qrels = {"q": {"a": 1}}
    per_query, _ = metrics.evaluate({"q": {"a": 0.5, "b": 0.5}}, qrels, cutoffs=(1, 2))
    row = per_query.iloc[0]
    assert row["NDCG@1"] == 0.0
    assert row["NDCG@2"] == pytest.approx((1 / log2(3)) / (1 / log2(2)), abs=1e-9)
    assert row["MRR@10"] == pytest.approx(1 / 2, abs=1e-9)
    per_query, _ = metrics.evaluate({"q": {"a": 0.5, "0": 0.5}}, qrels, cutoffs=(1,))
    assert per_query.iloc[0]["NDCG@1"] == pytest.approx(1.0, abs=1e-9)
    assert per_query.iloc[0]["MRR@10"] == pytest.approx(1.0, abs=1e-9)


def test_scores_tie_at_single_precision_as_in_trec_eval():
    # trec_eval holds scores as C floats: a difference below float32 resolution is a tie, broken by
    # doc id descending; one at float32 resolution is not.
    qrels = {"q": {"a": 1}}
    tied = {"q": {f"n{i}": 1.0 - i / 100 for i in range(9)} | {"a": 0.5 + 1e-9, "b": 0.5}}
    per_query, _ = metrics.evaluate(tied, qrels, cutoffs=(10,), mrr_cutoff=10)
    assert per_query.iloc[0]["MRR@10"] == 0.0  # "b" takes rank 10, "a" rank 11
    assert per_query.iloc[0]["Recall@10"] == 0.0
    apart = {"q": {f"n{i}": 1.0 - i / 100 for i in range(9)} | {"a": 0.5 + 1e-7, "b": 0.5}}
    per_query, _ = metrics.evaluate(apart, qrels, cutoffs=(10,), mrr_cutoff=10)
    assert per_query.iloc[0]["MRR@10"] == pytest.approx(1 / 10, abs=1e-9)
    assert per_query.iloc[0]["Recall@10"] == 1.0


def test_no_relevant_document_anywhere_raises():
    with pytest.raises(ValueError, match="no query has a relevant document"):
        metrics.evaluate({"q": {"a": 1.0}}, {"q": {"a": 0}})


def test_qrels_from_frame():
    import pandas as pd

    frame = pd.DataFrame({"query_id": [1, 1, "q2"], "doc_id": ["a", 7, "b"], "relevance": [2, 0, 1]})
    assert metrics.qrels_from_frame(frame) == {"1": {"a": 2, "7": 0}, "q2": {"b": 1}}


# --- run files ------------------------------------------------------------------------------------


def test_trec_run_file_format(tmp_path):
    path = tmp_path / "sub" / "run.trec"
    run = {"q2": {"x": 0.25}, "q1": {"d1": 0.5, "d2": 0.9, "d3": 0.5, "d4": -0.1}}
    metrics.write_trec_run(path, run, tag="mytag")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split() for line in lines]
    assert all(len(row) == 6 for row in rows)
    assert all(row[1] == "Q0" and row[5] == "mytag" for row in rows)
    # Queries grouped; within a query ranks 1..n, best first, ties by doc id descending.
    assert [(row[0], row[2], int(row[3])) for row in rows] == [
        ("q1", "d2", 1),
        ("q1", "d3", 2),
        ("q1", "d1", 3),
        ("q1", "d4", 4),
        ("q2", "x", 1),
    ]
    for row in rows:
        assert float(row[4]) == run[row[0]][row[2]]
    scores_q1 = [float(row[4]) for row in rows if row[0] == "q1"]
    assert scores_q1 == sorted(scores_q1, reverse=True)


def test_trec_run_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    run = {
        f"q{i}": {f"doc{j}": float(s) for j, s in enumerate(rng.standard_normal(15).astype(np.float32))}
        for i in range(5)
    }
    # A near-tie at the top of q0 (adjacent float32 values, as faiss returns them) that a rounded
    # score column would collapse into an exact tie, which trec_eval would then break the other way
    # ("doc1" > "doc0").
    run["q0"]["doc0"] = float(np.nextafter(np.float32(5.8123456), np.float32(10)))
    run["q0"]["doc1"] = float(np.float32(5.8123456))
    path = tmp_path / "run.trec"
    metrics.write_trec_run(path, run)
    assert metrics.read_trec_run(path) == run
    first = path.read_text(encoding="utf-8").splitlines()[0].split()
    assert first[:4] == ["q0", "Q0", "doc0", "1"]
    # Metrics on the reread run equal metrics on the original run.
    qrels = {"q0": {"doc0": 1}, "q1": {"doc5": 1}}
    original = metrics.evaluate(run, qrels)
    assert original[0].set_index("query_id").loc["q0", "MRR@10"] == 1.0
    assert metrics.evaluate(metrics.read_trec_run(path), qrels)[1] == original[1]


def test_trec_run_numpy_scores_and_empty_run(tmp_path):
    path = tmp_path / "run.trec"
    metrics.write_trec_run(path, {"q": {"a": np.float32(0.5), "b": np.float64(0.25)}})
    assert metrics.read_trec_run(path) == {"q": {"a": 0.5, "b": 0.25}}
    metrics.write_trec_run(path, {})
    assert metrics.read_trec_run(path) == {}


def test_read_trec_run_rejects_malformed_lines(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 0.4\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.trec:2: expected 6 columns"):
        metrics.read_trec_run(path)


# --- faiss results to runs ------------------------------------------------------------------------


def test_run_from_search_maps_rows_and_drops_missing():
    doc_ids = np.array(["d0", "d1", "d2", "d3"], dtype=object)
    rows = np.array([[2, 0, -1], [3, -1, -1], [-1, -1, -1]], dtype=np.int64)
    scores = np.array([[0.9, 0.5, -3.4e38], [0.7, -3.4e38, -3.4e38], [-3.4e38] * 3], dtype=np.float32)
    hit_ids = np.where(rows >= 0, doc_ids[rows], None)  # what CorpusIds.at gives
    run = metrics.run_from_search(["qa", "qb", 7], hit_ids, scores, rows)
    assert run == {
        "qa": {"d2": pytest.approx(0.9), "d0": pytest.approx(0.5)},
        "qb": {"d3": pytest.approx(0.7)},
        "7": {},
    }
    assert all(type(s) is float for docs in run.values() for s in docs.values())
    # Integer doc ids become strings, as in the qrels.
    run = metrics.run_from_search(["q"], np.array([[20, 10]]), np.array([[1.0, 0.5]]), np.array([[1, 0]]))
    assert run == {"q": {"20": 1.0, "10": 0.5}}


def test_authors_ndcg_ideal_counts_only_retrieved_relevant_documents():
    """The authors' NDCG@10 (docs/comparability.md D1): binary labels of the retrieved list, so a
    relevant document that was not retrieved does not lower it, and grades do not count."""
    qrels = {"q": {"a": 2, "b": 1, "missing": 1}}
    run = {"q": {"x": 0.9, "a": 0.8, "y": 0.7, "b": 0.6}}
    ours = metrics.authors_ndcg(run, qrels)["q"]
    dcg = 1 / np.log2(3) + 1 / np.log2(5)  # binary gains at ranks 2 and 4
    ideal = 1 / np.log2(2) + 1 / np.log2(3)  # the two retrieved relevant documents, on top
    assert ours == pytest.approx(dcg / ideal)
    per_query, summary = metrics.evaluate(run, qrels, (10,), measures=[metrics.AUTHORS_NDCG])
    assert per_query.loc[0, metrics.AUTHORS_NDCG] == pytest.approx(ours)
    assert per_query.loc[0, "NDCG@10"] < ours  # trec_eval: graded gains, ideal over all three judged
    plain, _ = metrics.evaluate(run, qrels, (10,))
    pd.testing.assert_frame_equal(plain, per_query.drop(columns=metrics.AUTHORS_NDCG))


def test_authors_ndcg_ties_share_their_gain_and_unretrieved_score_zero():
    qrels = {"tie": {"a": 1}, "none": {"a": 1}}
    run = {"tie": {"a": 0.5, "b": 0.5}, "none": {"b": 0.9, "c": 0.1}}
    values = metrics.authors_ndcg(run, qrels)
    assert values["tie"] == pytest.approx((1 + 1 / np.log2(3)) / 2)  # sklearn averages over tied scores
    assert values["none"] == 0.0
