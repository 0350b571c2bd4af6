"""opera.methods.samplers: OPERA's samplers in a user's own loop draw what the pipeline's trainer draws,
train a model through sentence-transformers' trainer, and the docs' examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import ENV, ROOT

from opera import io
from opera.config import ConfigError
from opera.methods import sampling
from opera.methods.samplers import OnlineSampler

DP = {"r0": 0.25, "x0": 2.0, "x_start": 2.0, "x_end": 5.0, "c_start": 0.25, "c_end": 0.5, "doc_weight": 5.0}


def rows(n_queries=12, seed=0) -> pd.DataFrame:
    """Training rows in (query, document) order, 1-6 positives a query, distinct scores."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, n_queries)
    frame = pd.DataFrame(
        [(f"q{i:03d}", f"d{i:03d}_{j}") for i, count in enumerate(counts) for j in range(count)],
        columns=["query_id", "doc_id"],
    )
    frame["score"] = rng.permutation(len(frame)) / len(frame)
    return frame


def cosines_for(pairs: np.ndarray, step: int) -> np.ndarray:
    return np.sin(pairs * 0.7 + step)  # any deterministic feedback, the same for both


@pytest.mark.parametrize("method", ["basic", "dp", "dp_query", "dp_doc", "infobatch"])
def test_the_public_sampler_draws_what_the_pipelines_trainer_draws(method):
    frame = rows()
    params = {"basic": {}, "infobatch": {"prune_ratio": 0.5, "delta": 0.875, "anneal": True}}.get(method, DP)
    pipeline = sampling.make_sampler(method, sampling.PairIndex(frame), 30, 7, params)
    public = OnlineSampler(frame["query_id"], frame["score"], method=method, max_steps=30, batch_size=4, seed=7)
    for step, drawn in enumerate(public):
        batch = pipeline.next_batch(step, 4)
        assert drawn == batch.pairs.tolist()  # rows in (query, document) order: a pair's row is its index
        feedback = cosines_for(batch.pairs, step)
        losses = feedback + 1.0
        pipeline.update(batch, feedback, losses)
        public.update(feedback, losses)
    assert public.log() == pipeline.log_state()


def test_static_pruning_keeps_its_share_and_uniform_needs_no_scores():
    frame = rows(seed=1)
    sp = OnlineSampler(frame["query_id"], frame["score"], method="sp", max_steps=5, batch_size=2, seed=0)
    kept = set(sp.pairs.doc_ids.tolist())
    assert len(kept) == int(np.ceil(0.25 * len(frame))) and sp.pruning_report["pairs_kept"] == len(kept)
    assert kept == set(frame["score"].nlargest(len(kept)).index)  # the top-scored rows
    for drawn in sp:
        assert set(drawn) <= kept
        sp.update(np.zeros(len(drawn)))
    basic = OnlineSampler(frame["query_id"], method="basic", max_steps=2, batch_size=3, seed=0)
    assert len(list(basic)) == 2


def test_misuse_is_refused_with_a_clear_message():
    frame = rows()
    with pytest.raises(ValueError, match="needs each row's base-model score"):
        OnlineSampler(frame["query_id"], method="dp", max_steps=3, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="does not train"):
        OnlineSampler(frame["query_id"], method="pretrain", max_steps=3, batch_size=2, seed=0)
    with pytest.raises(ConfigError, match=r"'method_params.dp': unknown key\(s\) \['r9'\]"):
        OnlineSampler(
            frame["query_id"], frame["score"], method="dp", max_steps=3, batch_size=2, seed=0, params={"r9": 0}
        )
    sampler = OnlineSampler(frame["query_id"], frame["score"], method="infobatch", max_steps=3, batch_size=2, seed=0)
    with pytest.raises(RuntimeError, match="without a drawn step"):
        sampler.update([0.1, 0.2])
    drawn = next(iter(sampler))
    with pytest.raises(ValueError, match="got 3 cosines for a step of 2 rows"):
        sampler.update([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="infobatch learns from each row's loss"):
        sampler.update(np.zeros(len(drawn)))
    sampler.update(np.zeros(len(drawn)), np.ones(len(drawn)))  # the refused updates lost nothing
    assert sampler.log()["queries_seen"] == len(set(frame["query_id"].iloc[drawn]))


@pytest.mark.slow
def test_sentence_transformers_trainer_trains_tiny_bert_with_dp(smoke_scored, tmp_path):
    """SentenceTransformerTrainer with dp on the smoke slice: the sampler's schedules move and the
    trained pairs' scores are written back."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from opera import data
    from opera.methods.samplers import FeedbackLoss
    from opera.models import tiny_models

    pairs = io.load_table(smoke_scored / "score" / "pairs.parquet").sort_values(["query_id", "doc_id"])
    prepared = data.read_prepared(smoke_scored / "data")
    query_text = prepared.queries.set_index("query_id")["text"]
    doc_text = prepared.corpus.set_index("doc_id")["text"]
    train = Dataset.from_dict(
        {"anchor": [query_text[q] for q in pairs["query_id"]], "positive": [doc_text[d] for d in pairs["doc_id"]]}
    )
    model = SentenceTransformer(str(tiny_models.build("bert", tmp_path / "tiny-bert")), device="cpu")
    sampler = OnlineSampler(pairs["query_id"], pairs["score"], method="dp", max_steps=6, batch_size=4, seed=3)
    base = sampler.sampler.scores.copy()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        per_device_train_batch_size=4,
        batch_sampler=sampler.batch_sampler,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=3,
    )
    loss = FeedbackLoss(MultipleNegativesRankingLoss(model), sampler)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    assert sampler.step == 6 and not sampler._pending  # every drawn step was trained and fed back
    log = sampler.log()
    assert log["c"] > DP["c_start"] and log["x"] > DP["x_start"]  # the schedules moved from their start
    written = sampler.sampler.trained_pairs
    assert written.sum() == log["distinct_positives"] > 0
    assert not np.allclose(sampler.sampler.scores[written], base[written])  # the trained pairs' new cosines


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "samplers.md").read_text(), flags=re.S | re.M)


def test_the_docs_have_both_examples():
    blocks = python_blocks()
    assert len(blocks) == 2
    assert "SentenceTransformerTrainer" in blocks[0] and "for rows in sampler" in blocks[1]


@pytest.mark.parametrize("number", range(len(python_blocks())))
@pytest.mark.slow
def test_the_docs_examples_run_as_written(number, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_blocks()[number])
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'epoch'" in result.stdout and "'distinct_positives'" in result.stdout  # sampler.log() printed
