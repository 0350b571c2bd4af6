"""opera.retrieval.index: exact inner-product search, factory strings, errors, checksummed save/load."""

from __future__ import annotations

import numpy as np
import pytest

from opera.retrieval import index as opera_index
from opera.retrieval.index import IndexBuildError


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1234)
    return _unit(rng, 500, 32), _unit(rng, 40, 32)


@pytest.fixture(scope="module")
def flat(data):
    corpus, _ = data
    return opera_index.build_index(corpus, "Flat")


def test_flat_inner_product_is_exact(data, flat):
    corpus, queries = data
    k = 10
    scores, rows = opera_index.search(flat, queries, k, use_gpu=False)
    assert scores.shape == rows.shape == (len(queries), k)
    assert scores.dtype == np.float32 and rows.dtype == np.int64

    brute = queries.astype(np.float64) @ corpus.astype(np.float64).T
    expected_rows = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_rows, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    assert flat.metric_type == 0  # faiss.METRIC_INNER_PRODUCT


def test_search_in_small_batches_equals_one_batch(data, flat):
    _, queries = data
    whole = opera_index.search(flat, queries, 7, use_gpu=False)
    batched = opera_index.search(flat, queries, 7, batch_size=3, use_gpu=False)
    np.testing.assert_array_equal(whole[1], batched[1])
    np.testing.assert_array_equal(whole[0], batched[0])


def test_k_larger_than_corpus_is_clipped(data):
    corpus, queries = data
    small = opera_index.build_index(corpus[:5], "Flat")
    scores, rows = opera_index.search(small, queries[:3], 100, use_gpu=False)
    assert rows.shape == (3, 5)
    assert sorted(rows[0].tolist()) == [0, 1, 2, 3, 4]


def test_float64_input_is_accepted(data):
    corpus, queries = data
    index = opera_index.build_index(corpus.astype(np.float64), "Flat")
    _, rows = opera_index.search(index, queries.astype(np.float64), 3, use_gpu=False)
    expected = np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(rows, expected)


def test_ivf_factory_trains_and_returns_k_results(data):
    corpus, queries = data
    index = opera_index.build_index(corpus, "IVF4,Flat")
    assert index.is_trained and index.ntotal == len(corpus)
    scores, rows = opera_index.search(index, queries, 5, use_gpu=False)
    assert rows.shape == (len(queries), 5)
    assert np.all(rows >= 0) and np.all(rows < len(corpus))
    # Every returned score is the true inner product of the returned row.
    true = np.einsum("qd,qkd->qk", queries, corpus[rows])
    np.testing.assert_allclose(scores, true, atol=1e-5)


def test_rejected_factory_string_raises_and_names_it(data):
    corpus, _ = data
    with pytest.raises(IndexBuildError, match="NotAnIndex"):
        opera_index.build_index(corpus, "NotAnIndex")
    assert issubclass(IndexBuildError, ValueError)


def test_untrainable_factory_raises(data):
    corpus, _ = data
    with pytest.raises(IndexBuildError, match="IVF64,Flat"):
        opera_index.build_index(corpus[:10], "IVF64,Flat")  # fewer vectors than centroids


@pytest.mark.parametrize("embeddings", [np.zeros((0, 32), np.float32), np.zeros((0,), np.float32)])
def test_empty_embeddings_raise(embeddings):
    with pytest.raises(IndexBuildError, match="empty"):
        opera_index.build_index(embeddings, "Flat")


def test_query_dimension_mismatch_raises(flat):
    queries = np.ones((2, 16), dtype=np.float32)
    with pytest.raises(IndexBuildError, match="dimension 16.*32"):
        opera_index.search(flat, queries, 3, use_gpu=False)
    with pytest.raises(IndexBuildError, match="2-d"):
        opera_index.search(flat, np.ones(32, dtype=np.float32), 3, use_gpu=False)


def test_search_default_device_choice(data, flat):
    _, queries = data
    # use_gpu=None picks GPU faiss only where it exists; either way the results are the same.
    auto = opera_index.search(flat, queries, 5)
    cpu = opera_index.search(flat, queries, 5, use_gpu=False)
    np.testing.assert_array_equal(auto[1], cpu[1])
