"""Validation on a pool (opera.retrieval.validation): the pool, its scores, validation inside training (not
training time, no effect on the weights), the curves, the config and the plan."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from workflow_helpers import ROOT, plan, results_dir, snakemake, write_config

from opera import data, io, pipeline, training
from opera.config import ConfigError, load_config, method_params, validate_config, validation_of
from opera.retrieval import validation
from opera.settings import PoolMetrics, PoolSettings

SMOKE = ROOT / "config" / "smoke.yaml"
SCORING = PoolMetrics(cutoffs=(1, 5, 10, 20), mrr_cutoff=10, top_k=100, authors_ndcg=False)


def _qrels(root: Path) -> pd.DataFrame:
    return data.read_prepared(root / "data", corpus=False).qrels["test"]


def _pool(root: Path, settings: PoolSettings, ranked: np.ndarray | None = None):
    qrels = _qrels(root)
    queries = validation.validation_queries(qrels, settings)
    doc_ids = data.CorpusIds(root / "data")
    if ranked is None:  # stand-in candidates: each query's first rows of the corpus, shifted per query
        ranked = np.array(
            [[(i * 7 + j) % len(doc_ids) for j in range(settings.candidates)] for i in range(len(queries))]
        )
    return qrels, queries, validation.build_pool(qrels, queries, ranked, doc_ids, settings), doc_ids


def test_the_pool_holds_judged_candidates_and_random_documents_once(smoke_scored):
    settings = PoolSettings(candidates=3, random=0.1, queries=None, seed=0)
    qrels, queries, pool, doc_ids = _pool(smoke_scored, settings)
    assert queries == sorted(qrels.loc[qrels["relevance"] > 0, "query_id"].unique())
    rows = pool["row"].to_numpy()
    assert (np.diff(rows) > 0).all()  # ascending, each document once
    assert list(pool["doc_id"]) == list(doc_ids.at(rows))
    judged = set(qrels["doc_id"])
    assert set(pool.loc[pool["reason"] == "judged", "doc_id"]) == judged
    assert not judged & set(pool.loc[pool["reason"] != "judged", "doc_id"])  # judged wins over candidate
    assert (pool["reason"] == "random").sum() == round(0.1 * len(doc_ids))
    assert (pool["reason"] == "candidate").sum() > 0
    again = _pool(smoke_scored, settings)[2]
    other = _pool(smoke_scored, dataclasses.replace(settings, seed=1))[2]
    assert again.equals(pool)  # the seed fixes the random documents
    assert not other.loc[other["reason"] == "random", "row"].equals(pool.loc[pool["reason"] == "random", "row"])


def test_the_pool_size_is_a_fraction_or_a_count_and_queries_a_seeded_sample(smoke_scored):
    assert PoolSettings(0, 0.25, None, 0).random_count(200) == 50
    assert PoolSettings(0, 30, None, 0).random_count(200) == 30
    qrels = _qrels(smoke_scored)
    sample = validation.validation_queries(qrels, PoolSettings(0, 0, 5, 0))
    assert len(sample) == 5 and sample == sorted(sample)
    assert sample == validation.validation_queries(qrels, PoolSettings(0, 0, 5, 0))
    assert sample != validation.validation_queries(qrels, PoolSettings(0, 0, 5, 3))
    _, queries, pool, _ = _pool(smoke_scored, PoolSettings(candidates=0, random=0, queries=5, seed=0))
    assert set(pool["reason"]) == {"judged"}
    assert set(pool["doc_id"]) == set(qrels.loc[qrels["query_id"].isin(queries), "doc_id"])


def test_a_pool_is_scored_by_exact_search_over_its_documents(smoke_scored):
    qrels, queries, pool, _ = _pool(smoke_scored, PoolSettings(candidates=2, random=10, queries=None, seed=0))
    relevant = qrels[qrels["relevance"] > 0].groupby("query_id")["doc_id"].agg(set)
    rng = np.random.default_rng(0)
    query_emb = rng.normal(size=(len(queries), 16)).astype(np.float32)
    query_emb /= np.linalg.norm(query_emb, axis=1, keepdims=True)
    doc_emb = -np.tile(query_emb.mean(0), (len(pool), 1))  # every document far from every query ...
    for i, query in enumerate(queries):  # ... but a query's relevant ones, which sit on it
        doc_emb[pool["doc_id"].isin(relevant[query]).to_numpy()] = query_emb[i]
    doc_emb /= np.linalg.norm(doc_emb, axis=1, keepdims=True)
    perfect = validation.score_pool(queries, query_emb, pool, doc_emb, qrels, SCORING)
    assert perfect["Recall@20"] == 1.0 and perfect["NDCG@10"] > 0.99
    shuffled = validation.score_pool(queries, query_emb, pool, doc_emb[::-1].copy(), qrels, SCORING)
    assert shuffled["NDCG@10"] < perfect["NDCG@10"]


def _finetune(root: Path, settings, name: str, with_validation: bool) -> dict:
    """A finetune run of 4 steps of dp, validated at steps 2 and 4 when asked."""
    config = yaml_config(SMOKE)
    config["models"]["all-MiniLM-L6-v2"]["validate_every"] = 2
    validate_config(config)
    pool_dir = root / "pool"
    if with_validation and not (pool_dir / validation.POOL_FILE).exists():
        pipeline.validation_pool(
            data_dir=root / "data",
            corpus_path=root / "score" / "corpus_embeddings",
            encoder=settings.encoder,
            split="test",
            pool=PoolSettings(candidates=5, random=0.05, queries=None, seed=0),
            scoring=SCORING,
            encode_batch_size=32,
            out_dir=pool_dir,
        )
    return pipeline.finetune(
        data_dir=root / "data",
        pairs_path=root / "score" / "pairs.parquet",
        negatives_path=root / "score" / "negatives.parquet",
        kept_pairs_path=root / "score" / "pairs.parquet",
        settings=dataclasses.replace(settings, validate_every=2 if with_validation else None),
        method="dp",
        method_params=method_params(config, "dp"),
        seed=42,
        title_join="space",
        out_dir=root / "ft" / name,
        work_dir=root / "work" / name,
        validation=validation_of(config, "scifact", "all-MiniLM-L6-v2") if with_validation else None,
        pool_path=pool_dir / validation.POOL_FILE if with_validation else None,
    )


def test_validation_is_logged_at_its_steps_and_is_not_training_time(smoke_scored, smoke_settings, monkeypatch):
    settings = dataclasses.replace(smoke_settings, max_steps=4, eval_every=2)
    # the training loop's clock jumps 1,000 s during each validation: counted, it would show
    clock = {"skew": 0.0}
    monkeypatch.setattr(
        training.loop, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock["skew"])
    )
    score = validation.PoolValidator.__call__

    def slow(self, model):
        clock["skew"] += 1000.0
        return score(self, model)

    monkeypatch.setattr(validation.PoolValidator, "__call__", slow)
    summary = _finetune(smoke_scored, settings, "validated", with_validation=True)
    entries = io.read_train_log(smoke_scored / "ft" / "validated" / "train_log.jsonl")
    validated = {entry["step"]: entry["validation"] for entry in entries if "validation" in entry}
    assert sorted(validated) == [2, 4]
    for record in validated.values():
        assert record["seconds"] > 0 and record["queries"] == 16 and record["documents"] > 16
        assert {"NDCG@10", "Recall@20"} <= set(record["metrics"])
    assert clock["skew"] == 2000.0 and summary["train_seconds"] < 1000.0  # no validation in training time
    assert entries[-1]["elapsed"] == summary["train_seconds"]
    assert summary["validation_seconds"] == pytest.approx(sum(r["seconds"] for r in validated.values()), abs=1e-3)
    plain = _finetune(smoke_scored, settings, "plain", with_validation=False)
    assert "validation_seconds" not in plain
    for step in (2, 4):  # validating changes no weight
        a = load_file(str(next((smoke_scored / "ft" / "validated" / f"step{step}").rglob("model.safetensors"))))
        b = load_file(str(next((smoke_scored / "ft" / "plain" / f"step{step}").rglob("model.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_curves_read_every_validation_and_the_base_model_at_step_0():
    base = {"NDCG@10": 0.5, "Recall@20": 0.6}
    logs = {
        ("d", "m", "basic", 1, 4): [
            {"step": 1, "elapsed": 1.0},
            {"step": 2, "elapsed": 2.0, "validation": {"seconds": 0.5, "metrics": {"NDCG@10": 0.6, "Recall@20": 0.7}}},
            {"step": 4, "elapsed": 4.0, "validation": {"seconds": 0.5, "metrics": {"NDCG@10": 0.7, "Recall@20": 0.8}}},
        ],
        ("d", "m", "basic", 1, 2): [
            {"step": 2, "elapsed": 2.1, "validation": {"seconds": 0.4, "metrics": {"NDCG@10": 0.65, "Recall@20": 0.7}}},
        ],
    }
    curves = validation.curves(logs, {("d", "m"): {"base_metrics": base}})
    assert list(curves["method"]) == ["basic", "basic", "basic", "pretrain"]
    assert list(curves["step"]) == [2, 2, 4, 0]
    assert list(curves["main_run"]) == [False, True, True, True]
    assert list(curves["pool_NDCG@10"]) == [0.65, 0.6, 0.7, 0.5]
    assert list(curves["train_seconds"]) == [2.1, 2.0, 4.0, 0.0]
    assert curves.columns[-2:].tolist() == ["pool_NDCG@10", "pool_Recall@20"]


def test_a_validation_block_without_validate_every_is_an_error():
    config = yaml_config(SMOKE) | {"validation": {"candidates": 5}}
    with pytest.raises(ConfigError, match=r"config key 'validation': \['candidates'\].*validate_every"):
        validate_config(config)


@pytest.mark.parametrize(("value", "ok"), [(0.05, True), (50, True), (0, True), (1.5, False), (-1, False)])
def test_the_pools_random_share_is_a_fraction_below_one_or_a_count(value, ok):
    raw = yaml_config(SMOKE)
    raw["models"]["all-MiniLM-L6-v2"]["validate_every"] = 2
    raw["validation"] = {"random": value}
    if ok:
        assert validate_config(raw)["validation"]["random"] == value
    else:
        with pytest.raises(ConfigError, match="validation.random"):
            validate_config(raw)


def yaml_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_opera_plan_prices_the_curves_exactly_and_on_the_pool(capsys):
    """The paper's grid: curves on the pool encode at least 5x fewer passages and need at least 3x
    fewer GPU-hours than the same curve points evaluated exactly (3,168 GPU-hours)."""
    from opera import cost

    config = load_config(ROOT / "config" / "paper.yaml")
    plans = cost.curve_plans(config).groupby("curves")[["passages_encoded", "gpu_hours"]].sum()
    exact, pool = plans.loc["exact"], plans.loc["pool"]
    assert round(exact["gpu_hours"]) == 3168 and exact["passages_encoded"] == 2_321_742_324
    assert exact["passages_encoded"] >= 5 * pool["passages_encoded"]
    assert exact["gpu_hours"] >= 3 * pool["gpu_hours"]
    text = cost.format_plan(config)
    assert "exact (this config)" in text and "\n               pool " in text


@pytest.mark.slow
def test_a_validating_model_plans_one_pool_per_dataset_and_model(tmp_path):
    from opera import cost

    config = write_config(tmp_path / "pool.yaml", SMOKE, model={"validate_every": 2}, results_dir="out")
    planned = plan(tmp_path, config)
    assert planned["validation_pool"] == 1
    planned.pop("all")
    assert +cost.job_counts(load_config(config)) == planned


@pytest.mark.workflow
def test_pool_validation_leaves_the_final_checkpoints_metrics_unchanged(smoke_run, tmp_path):
    """The smoke config with validate_every: the runs retrain (their train logs change), their
    final checkpoints' exact metrics are those of the run without validation, and the pool's
    curves, time to quality and plot are written beside the exact tables. eval_every 4: validated
    at steps 2 and 4, evaluated exactly at step 4 only (step 2's weights: the in-process test above)."""
    workdir = tmp_path / "validated"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    config = write_config(
        tmp_path / "validated.yaml",
        SMOKE,
        model={"validate_every": 2, "eval_every": 4},
        methods=["pretrain", "basic", "dp"],
        validation={"candidates": 10, "random": 0.1},
    )
    planned = plan(workdir, config)
    assert planned["validation_pool"] == 1 and planned["finetune"] == 2 and "score" not in planned
    assert planned["index"] == planned["evaluate"] == 2  # the final checkpoints, evaluated again
    started = time.time()
    snakemake(workdir, config, "--cores", "2")
    before, after = results_dir(smoke_run, SMOKE), results_dir(workdir, SMOKE)
    finals = [m.relative_to(before) for m in sorted(before.rglob("step4/metrics.json"))]
    finals = [run for run in finals if run.parts[3] in ("basic", "dp")]
    assert [run.parts[3] for run in finals] == ["basic", "dp"], finals
    for run in finals:
        assert (after / run).stat().st_mtime >= started, run  # written by this run, not the copy's
        validated, plain = (json.loads((folder / run).read_text())["metrics"] for folder in (after, before))
        assert validated == plain, run
    curves = pd.read_csv(after / "tables" / "validation.csv")
    assert sorted(set(curves["method"])) == ["basic", "dp", "pretrain"]
    assert sorted(curves.loc[curves["method"] == "dp", "step"]) == [2, 4]
    ttq = pd.read_csv(after / "tables" / "time_to_quality_pool.csv")
    assert set(ttq["metric"]) == {"pool_NDCG@10"}
    assert (after / "plots" / "scifact__all-MiniLM-L6-v2__metric_vs_steps_pool.png").is_file()
    report = io.read_json(after / "score" / "scifact" / "all-MiniLM-L6-v2" / validation.POOL_REPORT)
    assert report["documents"] == len(io.load_table(after / "score/scifact/all-MiniLM-L6-v2" / validation.POOL_FILE))
