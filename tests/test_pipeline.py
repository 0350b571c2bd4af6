"""Stage functions outside Snakemake: the base model encodes a corpus once per (dataset, model)."""

from __future__ import annotations

import pytest
from stage_helpers import run_download, run_score

from opera import io, pipeline
from opera.models import encoders


@pytest.mark.slow
def test_corpus_encoded_once_for_scoring_mining_and_pretrain_evaluation(
    smoke_config, smoke_settings, tmp_path, monkeypatch
):
    calls = []
    original = encoders.encode

    def counting(model, texts, **kwargs):
        calls.append((kwargs.get("desc"), len(texts)))
        return original(model, texts, **kwargs)

    monkeypatch.setattr(encoders, "encode", counting)
    run_download(smoke_config, tmp_path / "data")
    report = run_score(smoke_config, smoke_settings, tmp_path / "data", tmp_path / "score")
    evaluation = smoke_config["evaluation"]
    metrics = pipeline.evaluate(  # the base model's corpus embeddings are score's
        data_dir=tmp_path / "data",
        encoder=smoke_settings.encoder,
        evaluation=evaluation,
        index_path=tmp_path / "score" / "corpus_embeddings",
        split="test",
        out_run=tmp_path / "run.trec",
        out_per_query=tmp_path / "per_query.parquet",
        out_metrics=tmp_path / "metrics.json",
        run_meta={"method": "pretrain"},
    )
    corpus_calls = [c for c in calls if c[0].startswith("corpus")]
    assert corpus_calls == [("corpus shard 0", report["documents"])]
    assert [c[0] for c in calls] == ["corpus shard 0", "train queries", "test queries"]
    assert metrics["n_queries"] == 16 and 0 < metrics["metrics"]["NDCG@10"] <= 1
    pairs = io.load_table(tmp_path / "score" / "pairs.parquet")
    negatives = io.load_table(tmp_path / "score" / "negatives.parquet")
    assert len(pairs) == report["pairs"] and pairs["score"].between(-1, 1).all()
    # hard negatives exclude every positive of their query, and come from ranks >= lo
    positives = set(zip(pairs["query_id"], pairs["doc_id"], strict=True))
    assert not any((q, d) in positives for q, d in zip(negatives["query_id"], negatives["doc_id"], strict=True))
    assert negatives["rank"].min() > smoke_settings.mining.lo


def test_prune_refuses_to_keep_fewer_queries_than_a_training_step_draws(tmp_path):
    """sp keeps the top pairs: the queries they cover must fill a batch, or prune stops before finetune."""
    import pandas as pd
    import pytest

    pairs = pd.DataFrame(
        {
            "query_id": [f"q{i}" for i in range(10)],
            "doc_id": [f"d{i}" for i in range(10)],
            "relevance": [1] * 10,
            "score": [float(i) for i in range(10)],
        }
    )
    io.save_table(tmp_path / "pairs.parquet", pairs)
    out = {"out_pairs": tmp_path / "kept.parquet", "out_report": tmp_path / "report.json"}
    common = {"pairs_path": tmp_path / "pairs.parquet", "dataset": "toy", "model": "m", **out}
    assert pipeline.prune(method="basic", params={}, global_batch=10, **common)["queries_kept"] == 10
    (tmp_path / "kept.parquet").unlink()
    with pytest.raises(pipeline.StageError) as err:
        pipeline.prune(method="sp", params={"kept_pct": 0.3}, global_batch=4, **common)
    message = str(err.value)
    for part in ("'sp' keeps 3 of 10", "dataset 'toy'", "model 'm'", "the 4 distinct queries", "models.m.batch_size"):
        assert part in message, (part, message)
    assert "method_params.sp.kept_pct, now 0.3" in message
    assert not (tmp_path / "kept.parquet").exists()  # nothing written: no finetune job would start on it
    with pytest.raises(pipeline.StageError, match=r"'basic' keeps 10 of 10 .* the 11 distinct queries"):
        pipeline.prune(method="basic", params={}, global_batch=11, **common)
    assert pipeline.prune(method="sp", params={"kept_pct": 0.3}, global_batch=3, **common)["queries_kept"] == 3
