"""FAISS indexing and search of one block of L2-normalized embeddings (inner product = cosine);
opera.embedding_store searches a whole corpus block by block with these."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


class IndexBuildError(ValueError):
    """An index could not be built (bad factory string, empty corpus, dimension mismatch)."""


def _faiss():
    import faiss

    return faiss


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(embeddings: np.ndarray, factory: str = "Flat"):
    """Build an inner-product FAISS index from ``embeddings`` with ``index_factory(factory)``.

    Trained factories (IVF, PQ, ...) are trained on the embeddings themselves. Returns a CPU index
    (ready to save); :func:`search` moves it to the GPU when faiss has GPU support.
    """
    faiss = _faiss()
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise IndexBuildError(f"cannot index an empty corpus (embeddings of shape {embeddings.shape})")
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexBuildError(
            f"faiss rejected index_factory string {factory!r}: {str(exc).strip().splitlines()[-1]}"
        ) from exc
    if not index.is_trained:
        try:
            index.train(vectors)
        except RuntimeError as exc:
            raise IndexBuildError(f"training index {factory!r} on {len(vectors)} vectors failed: {exc}") from exc
    index.add(vectors)
    log.info("built faiss index %r over %d x %d vectors", factory, *vectors.shape)
    return index


def search(
    index, queries: np.ndarray, k: int, batch_size: int = 4096, use_gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, row ids) per query, batched; on the GPU when faiss supports it."""
    faiss = _faiss()
    if queries.ndim != 2:
        raise IndexBuildError(f"query embeddings must be a 2-d array (n_queries, dim), got shape {queries.shape}")
    if queries.shape[1] != index.d:
        raise IndexBuildError(f"query embeddings have dimension {queries.shape[1]}, the index has {index.d}")
    k = min(k, index.ntotal)
    use_gpu = gpu_available() if use_gpu is None else use_gpu
    if use_gpu:
        log.info("searching on GPU faiss")
        index = faiss.index_cpu_to_all_gpus(index)
    else:
        log.info("searching on CPU faiss")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        stop = start + batch_size
        scores[start:stop], ids[start:stop] = index.search(queries[start:stop], k)
    return scores, ids
