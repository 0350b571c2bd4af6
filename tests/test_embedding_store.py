"""Corpus embeddings in shards: streamed from the prepared corpus, searched shard by shard, exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opera import data, embedding_store, io
from opera.embedding_store import EmbeddingStore, StoreLayout
from opera.retrieval import index as faiss_index


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _store(folder, blocks, dtype="float32") -> EmbeddingStore:
    """A store written from given blocks (the layout encode_corpus writes)."""
    with io.atomic_dir(folder) as tmp:
        names = [f"shard-{n:05d}.npy" for n in range(len(blocks))]
        for name, block in zip(names, blocks, strict=True):
            io.save_array(tmp / name, block.astype(dtype))
        layout = StoreLayout(shard_passages=len(blocks[0]), dtype=dtype)
        embedding_store._write_manifest(tmp, names, [len(b) for b in blocks], blocks[0].shape[1], layout, {})
    return EmbeddingStore(folder)


@pytest.mark.parametrize("k", [1, 7, 40, 500])
def test_sharded_search_equals_one_flat_index(tmp_path, k):
    corpus, queries = _unit(300, 16, 0), _unit(25, 16, 1)
    store = _store(tmp_path / "s", [corpus[:64], corpus[64:128], corpus[128:192], corpus[192:256], corpus[256:]])
    scores, rows = store.search(queries, k)
    expected_scores, expected_rows = faiss_index.search(faiss_index.build_index(corpus, "Flat"), queries, k)
    np.testing.assert_array_equal(rows, expected_rows)  # random vectors: no ties
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    assert rows.shape == (25, min(k, 300))


def test_each_shard_is_searched_with_the_configured_factory(tmp_path):
    corpus = _unit(400, 16, 8)
    store = _store(tmp_path / "s", [corpus[:200], corpus[200:]])
    scores, rows = store.search(corpus[:20], 5, factory="IVF4,Flat")
    assert rows.shape == (20, 5) and (rows[:, 0] == np.arange(20)).mean() >= 0.9  # each finds itself
    with pytest.raises(faiss_index.IndexBuildError, match="NotAnIndex"):
        store.search(corpus[:2], 5, factory="NotAnIndex")


def test_ties_keep_earlier_shards_first_and_rows_at_reads_across_shards(tmp_path):
    corpus = _unit(20, 8, 2)
    corpus[15] = corpus[3]  # a duplicate passage in the second shard
    store = _store(tmp_path / "s", [corpus[:10], corpus[10:]])
    _, rows = store.search(corpus[3:4], 2)
    assert rows.tolist() == [[3, 15]]
    picked = np.array([19, 0, 10, 9])
    np.testing.assert_array_equal(store.rows_at(picked), corpus[picked])
    with pytest.raises(IndexError, match="out of range"):
        store.rows_at(np.array([20]))


def test_float16_store_halves_the_bytes_and_keeps_the_ranking_close(tmp_path):
    corpus, queries = _unit(200, 32, 3), _unit(10, 32, 4)
    full = _store(tmp_path / "f32", [corpus[:100], corpus[100:]])
    half = _store(tmp_path / "f16", [corpus[:100], corpus[100:]], dtype="float16")
    size = lambda store: sum(p.stat().st_size for p in store.folder.glob("*.npy"))  # noqa: E731
    assert size(half) < 0.55 * size(full)
    assert (full.search(queries, 1)[1] == half.search(queries, 1)[1]).mean() >= 0.9


def test_store_without_manifest_or_with_edited_shard_is_refused(tmp_path):
    store = _store(tmp_path / "s", [_unit(10, 4, 5), _unit(10, 4, 6)])
    shard = store.folder / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(io.CorruptArtifactError, match="shard-00001.npy"):
        store.search(_unit(1, 4, 7), 3)
    (store.folder / "manifest.json").unlink()
    with pytest.raises(io.CorruptArtifactError, match="no manifest.json"):
        EmbeddingStore(store.folder)


def test_a_shard_from_another_store_with_its_sidecar_is_refused(tmp_path):
    ours = _store(tmp_path / "ours", [_unit(10, 4, 5), _unit(10, 4, 6)])
    theirs = _store(tmp_path / "theirs", [_unit(10, 4, 8), _unit(10, 4, 9)])
    for name in ("shard-00001.npy", "shard-00001.npy.sha256"):  # shard and sidecar agree with each other
        (ours.folder / name).write_bytes((theirs.folder / name).read_bytes())
    with pytest.raises(io.CorruptArtifactError, match=r"shard-00001.npy: not the shard this store's manifest"):
        EmbeddingStore(ours.folder).search(_unit(1, 4, 7), 3)


def test_an_edited_manifest_is_refused(tmp_path):
    store = _store(tmp_path / "s", [_unit(10, 4, 5), _unit(10, 4, 6)])
    manifest = store.folder / "manifest.json"
    record = io.read_json(manifest)
    record["model_identity"] = "checkpoint:another"
    io.write_json(manifest, record)  # rewritten without its checksum
    with pytest.raises(io.CorruptArtifactError, match="manifest.json: content does not match"):
        EmbeddingStore(store.folder)


def test_check_encoded_by_names_both_models(tmp_path):
    store = _store(tmp_path / "s", [_unit(10, 4, 5)])
    with pytest.raises(io.CorruptArtifactError, match=r"no identity recorded.*not by 'ckpt' \(checkpoint:abc\)"):
        store.check_encoded_by("checkpoint:abc", "ckpt")


# --- the prepared corpus, streamed ---------------------------------------------------------------------


def _prepared_corpus(folder, rows: int, row_group: int):
    corpus = pd.DataFrame(
        {"doc_id": [f"d{i}" for i in range(rows)], "title": [f"t{i}" for i in range(rows)], "text": ["x"] * rows}
    )
    folder.mkdir()
    io.write_checked(folder / "corpus.parquet", lambda tmp: corpus.to_parquet(tmp, row_group_size=row_group), rows=rows)
    return corpus


@pytest.mark.parametrize("rows, row_group, batch", [(10, 3, 4), (10, 4, 4), (9, 100, 3), (5, 2, 50)])
def test_passage_batches_are_exact_across_row_groups(tmp_path, rows, row_group, batch):
    corpus = _prepared_corpus(tmp_path / "data", rows, row_group)
    batches = list(data.passage_text_batches(tmp_path / "data", batch, "space"))
    assert [len(b) for b in batches] == [min(batch, rows - i) for i in range(0, rows, batch)]
    assert sum(batches, []) == data.passage_texts(corpus, "space")
    ids = data.CorpusIds(tmp_path / "data")
    assert ids.at(np.array([[2, -1], [0, rows - 1]])).tolist() == [["d2", None], ["d0", f"d{rows - 1}"]]
    assert ids.rows_of(["d3", "d0"]).tolist() == [3, 0]
    with pytest.raises(KeyError, match="'nope' is not in the corpus"):
        ids.rows_of(["d1", "nope"])


def test_encoded_corpus_is_one_encode_call_per_shard_and_the_same_bytes_on_two_processes(
    smoke_scored, smoke_settings, tmp_path
):
    from opera.models import encoders

    data_dir = smoke_scored / "data"
    texts = data.passage_texts(data.read_prepared(data_dir).corpus, "space")
    shard = -(-len(texts) // 3)
    layout = StoreLayout(shard_passages=shard)
    job = dict(data_dir=data_dir, title_join="space", encoder=smoke_settings.encoder, batch_size=16, layout=layout)
    one = embedding_store.encode_corpus(tmp_path / "one", **job)
    embedding_store.encode_corpus(tmp_path / "two", devices=("cpu", "cpu"), **job)
    assert [s["rows"] for s in one["shards"]] == [shard, shard, len(texts) - 2 * shard]
    for entry in one["shards"]:
        assert (tmp_path / "one" / entry["file"]).read_bytes() == (tmp_path / "two" / entry["file"]).read_bytes()
    model = encoders.load(smoke_settings.encoder)
    first = encoders.encode_side(model, smoke_settings.encoder, "passage", texts[:shard], 16, "c", show_progress=False)
    np.testing.assert_array_equal(EmbeddingStore(tmp_path / "one").shard(0), first)
    # one shard holding the whole corpus: the embeddings score wrote, byte for byte
    whole = embedding_store.encode_corpus(tmp_path / "whole", **{**job, "layout": StoreLayout()})
    assert whole["rows"] == len(texts)
    scored = smoke_scored / "score" / "corpus_embeddings" / "shard-00000.npy"
    assert (tmp_path / "whole" / "shard-00000.npy").read_bytes() == scored.read_bytes()


def test_layout_rejects_bad_values():
    with pytest.raises(ValueError, match="shard_passages"):
        StoreLayout(shard_passages=0)
    with pytest.raises(ValueError, match="float32"):
        StoreLayout(dtype="int8")
