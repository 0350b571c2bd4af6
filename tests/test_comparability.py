"""The authors' settings as switches (docs/comparability.md): each changes what the page says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opera import io, pipeline
from opera.config import method_params, validate_config
from opera.methods import pruning
from opera.retrieval import scoring


def _mined(rows):
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "rank"]).astype({"rank": np.int32})


def test_judged_negatives_come_first_and_the_pool_is_capped():
    """D4: judged non-relevant documents first (rank 0), then mined ones; at most `cap`, mined
    ones subsampled at random (fixed seed) before the merge."""
    mined = _mined([("q1", f"m{i}", i + 3) for i in range(6)] + [("q2", "m9", 4)])
    judged = pd.DataFrame({"query_id": ["q1", "q1", "q3"], "doc_id": ["j2", "j1", "j9"]})
    pools = scoring.negative_pools(mined, scoring.judged_negatives(judged.assign(relevance=0)), cap=4)
    q1 = pools[pools["query_id"] == "q1"]
    assert list(q1["doc_id"][:2]) == ["j1", "j2"] and list(q1["rank"][:2]) == [0, 0]
    assert len(q1) == 4 and set(q1["doc_id"][2:]) <= {f"m{i}" for i in range(6)}
    assert list(pools[pools["query_id"] == "q2"]["doc_id"]) == ["m9"]
    again = scoring.negative_pools(mined, scoring.judged_negatives(judged.assign(relevance=0)), cap=4)
    pd.testing.assert_frame_equal(pools, again)  # the subsample is seeded
    uncapped = scoring.negative_pools(mined, None, None)
    pd.testing.assert_frame_equal(uncapped, mined.sort_values(["query_id", "rank"]).reset_index(drop=True))


def test_judged_negatives_are_relevance_zero_after_the_threshold():
    qrels = pd.DataFrame({"query_id": ["q", "q", "q"], "doc_id": ["a", "b", "c"], "relevance": [1, 0, 2]})
    assert list(scoring.judged_negatives(qrels)["doc_id"]) == ["b"]


def test_mining_after_pruning_lets_pruned_positives_become_negatives(smoke_scored, smoke_settings, tmp_path):
    """D6: sp's negatives mined after pruning exclude only the kept positives."""
    config = validate_config({"datasets": {"scifact": {}}, "models": {"all-MiniLM-L6-v2": {}}, "methods": ["sp"]})
    scored = io.load_table(smoke_scored / "score" / "pairs.parquet")
    kept, _ = pruning.prune(scored, "sp", {**method_params(config, "sp"), "kept_pct": 0.5})
    io.save_table(tmp_path / "kept.parquet", kept)
    pipeline.mine(
        data_dir=smoke_scored / "data",
        scored_pairs_path=smoke_scored / "score" / "pairs.parquet",
        kept_pairs_path=tmp_path / "kept.parquet",
        corpus_embeddings_path=smoke_scored / "score" / "corpus_embeddings",
        query_embeddings_path=smoke_scored / "score" / "train_query_embeddings.npy",
        mining=smoke_settings.mining.__class__(lo=0, hi=20),
        out_negatives=tmp_path / "negatives.parquet",
    )
    negatives = io.load_table(tmp_path / "negatives.parquet")
    kept_keys = set(zip(kept["query_id"], kept["doc_id"], strict=True))
    pruned_keys = set(zip(scored["query_id"], scored["doc_id"], strict=True)) - kept_keys
    mined_keys = set(zip(negatives["query_id"], negatives["doc_id"], strict=True))
    assert not mined_keys & kept_keys
    assert mined_keys & pruned_keys  # a query's own pruned positive is now among its hard negatives
    assert set(negatives["query_id"]) <= set(kept["query_id"])


@pytest.mark.parametrize("key", ["sp", "infobatch"])
def test_per_model_method_params_override_the_global_ones(key):
    config = validate_config(
        {
            "datasets": {"scifact": {}},
            "models": {
                "all-MiniLM-L6-v2": {},
                "bge-large-en-v1.5": {
                    "method_params": {key: {"prune_ratio": 0.25} if key == "infobatch" else {"kept_pct": 0.75}}
                },
            },
            "methods": ["basic", key],
        }
    )
    name = "prune_ratio" if key == "infobatch" else "kept_pct"
    override = 0.75 if key == "sp" else 0.25
    assert config["method_params"][key][name] != override  # the global value, which the override must replace
    assert method_params(config, key, "bge-large-en-v1.5")[name] == override
    assert method_params(config, key, "all-MiniLM-L6-v2") == config["method_params"][key]


def test_per_model_method_params_reject_unknown_keys():
    from opera.config import ConfigError

    with pytest.raises(ConfigError, match=r"models.all-MiniLM-L6-v2.method_params.sp"):
        validate_config(
            {
                "datasets": {"scifact": {}},
                "models": {"all-MiniLM-L6-v2": {"method_params": {"sp": {"kept": 0.5}}}},
                "methods": ["sp"],
            }
        )
