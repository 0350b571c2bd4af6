"""The grid's cost before submission (`opera plan`) and each job's resources, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opera import cli, cost
from opera.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"


@pytest.fixture(scope="module")
def paper():
    return load_config(PAPER)


def _row(rows, dataset, model):
    return next(r for r in rows if r["dataset"] == dataset and r["model"] == model)


def test_paper_plan_counts_come_from_ir_datasets_metadata(paper, offline):
    rows = cost.plan_rows(paper)
    trivia = _row(rows, "triviaqa", "bge-large-en-v1.5")
    assert trivia["documents"] == 21_015_324 and trivia["counts_from"].startswith("ir_datasets")
    # the base model once (score) and every evaluated checkpoint of 4 methods x 8 checkpoints (index)
    assert trivia["index_jobs"] == 32 and trivia["passages_encoded"] == 21_015_324 * 33
    # the same curves from the validation pool: the last checkpoints indexed, 8 validations a run on
    # 1,000 dev queries' judgments, their top 100 under the base model and 10,000 random documents
    pooled = _row(cost.plan_rows(cost.curve_variants(paper)["pool"]), "triviaqa", "bge-large-en-v1.5")
    judgments, queries = trivia_dev_counts()
    pool = round(judgments * 1000 / queries) + 1000 * 100 + 10_000
    assert pooled["index_jobs"] == 4 and pooled["validations"] == 32 and pooled["pool_documents"] == pool
    assert pooled["passages_encoded"] == 21_015_324 * 5 + pool * 32
    assert trivia["store_bytes"] == 21_015_324 * 1024 * 4
    assert _row(rows, "fiqa", "Qwen3-Embedding-0.6B")["documents"] == 57_638
    # keeping every checkpoint's embeddings costs more disk than deleting them once evaluated
    assert sum(r["peak_disk_keep_bytes"] for r in rows) > sum(r["kept_bytes"] for r in rows)


def trivia_dev_counts() -> tuple[int, int]:
    """(judgments, queries) of TriviaQA's dev split, which the paper config evaluates on."""
    import ir_datasets

    dev = ir_datasets.load("dpr-w100/trivia-qa/dev")
    return dev.qrels_count(), dev.queries_count()


def test_plan_prints_the_table_totals_and_assumptions(capsys, offline):
    assert cli.main(["plan", "--config", str(PAPER)]) == 0
    text = capsys.readouterr().out
    assert "triviaqa" in text and "21015324" in text
    assert "jobs: download 8, score 16, prune 64, mine 16, finetune 64, publish 64, index 512, evaluate 528" in text
    assert "assumptions:" in text and "35% of A100 peak 312 TFLOP/s" in text and "ir_datasets" in text


def test_plan_as_csv_and_json_gives_the_rows(capsys, offline):
    import io as text_io
    import json

    import pandas as pd

    assert cli.main(["plan", "--config", str(PAPER), "--format", "csv"]) == 0
    frame = pd.read_csv(text_io.StringIO(capsys.readouterr().out))
    assert len(frame) == 16 and {"dataset", "model", "passages_encoded", "gpu_hours"} <= set(frame.columns)
    assert cli.main(["plan", "--config", str(PAPER), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 16 and records[0]["passages_encoded"] == int(frame["passages_encoded"][0])


def test_measured_throughput_replaces_the_flop_estimate(tmp_path, paper):
    text = PAPER.read_text() + "cost:\n  throughput:\n    bge-large-en-v1.5: {passages_per_s: 100, steps_per_s: 1}\n"
    (tmp_path / "paper.yaml").write_text(text)
    measured = load_config(tmp_path / "paper.yaml")
    speed = cost.throughput(measured, "bge-large-en-v1.5")
    assert (speed.passages_per_s, speed.steps_per_s) == (100, 1) and speed.source.startswith("measured")
    assumed = cost.throughput(paper, "bge-large-en-v1.5")
    assert assumed.source.startswith("assumed") and assumed.passages_per_s > 100
    before = _row(cost.plan_rows(paper), "fiqa", "bge-large-en-v1.5")["gpu_hours"]
    after = _row(cost.plan_rows(measured), "fiqa", "bge-large-en-v1.5")["gpu_hours"]
    assert after > before  # 100 passages/s is slower than the estimate


def test_throughput_of_a_model_not_in_the_config_is_refused(tmp_path):
    config = yaml.safe_load(PAPER.read_text())
    config["cost"] = {"throughput": {"bge-large": {"passages_per_s": 1, "steps_per_s": 1}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"cost.throughput.*bge-large"):
        load_config(tmp_path / "c.yaml")
    config["cost"] = {"gpu": "TPU"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"cost.gpu.*A100"):
        load_config(tmp_path / "c.yaml")


def test_job_resources_grow_with_the_corpus_and_the_attempt(paper):
    fiqa = cost.job_resources(paper, "index", "fiqa", "Qwen3-Embedding-0.6B")
    trivia = cost.job_resources(paper, "index", "triviaqa", "Qwen3-Embedding-0.6B")
    assert fiqa["gpu"] == 1 and fiqa["runtime"] == paper["resources"]["runtime"]
    assert 1 < trivia["gpu"] <= paper["resources"]["encode_gpus"] and trivia["runtime"] > fiqa["runtime"]
    assert trivia["mem_mb"] >= fiqa["mem_mb"]  # one shard in memory per GPU, not the corpus
    retried = cost.job_resources(paper, "index", "triviaqa", "Qwen3-Embedding-0.6B", attempt=2)
    assert retried == {"mem_mb": 2 * trivia["mem_mb"], "runtime": 2 * trivia["runtime"], "gpu": trivia["gpu"]}
    finetune = cost.job_resources(paper, "finetune", "fiqa", "bge-large-en-v1.5")
    assert finetune["gpu"] == 8 and finetune["mem_mb"] == paper["resources"]["finetune_mem_mb"]


def test_local_config_counts_the_shipped_data_after_subsampling():
    config = load_config(ROOT / "config" / "config.yaml")
    (row,) = cost.plan_rows(config)
    assert row["documents"] == 1500 and row["index_jobs"] == 20  # 5 trained methods x 4 checkpoints
    assert cost.job_resources(config, "index", "scifact", "all-MiniLM-L6-v2")["gpu"] == 0  # resources.gpu: false
