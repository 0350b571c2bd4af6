"""Paper scale, proven offline: the registry, config/paper.yaml's DAG, and the SLURM profile."""

from __future__ import annotations

import re

import pytest
from workflow_helpers import ROOT, plan, snakemake

from opera import cost
from opera.config import ConfigError, load_config, model_settings, resolve_dataset, resolve_model

PAPER = ROOT / "config" / "paper.yaml"
PAPER_DATASETS = {
    "nfcorpus-irds",
    "fiqa",
    "hotpotqa",
    "fever",
    "antique",
    "triviaqa",
    "tripclick-head",
    "tripclick-torso",
}


def test_registry_holds_the_papers_model_settings():
    bge, qwen = resolve_model("bge-large-en-v1.5"), resolve_model("Qwen3-Embedding-0.6B")
    assert (bge["pooling"], bge["padding_side"], bge["lr"], bge["max_steps"], bge["precision"]) == (
        "cls",
        "right",
        1e-6,
        2000,
        "fp16",
    )
    assert bge["query_instruction"] == "Represent this sentence for searching relevant passages: "
    assert (bge["query_max_length"], bge["passage_max_length"], bge["mining"]) == (128, 512, {"lo": 10, "hi": 100})
    assert (bge["batch_size"], bge["gpus"], bge["group_size"], bge["temperature"]) == (16, 8, 2, 0.02)
    assert (qwen["pooling"], qwen["padding_side"], qwen["lr"], qwen["max_steps"], qwen["precision"]) == (
        "last",
        "left",
        1e-5,
        4000,
        "bf16",
    )
    assert qwen["gradient_checkpointing"] is True and qwen["mining"] == {"lo": 50, "hi": 500}
    assert (
        qwen["query_instruction"].startswith("Instruct: Given a web search query") and qwen["query_max_length"] == 512
    )


def test_registry_dataset_rules():
    antique = resolve_dataset("antique")
    assert antique["positive_threshold"] == {"test": 3} and "dev" not in antique["splits"]
    assert "test" not in resolve_dataset("tripclick-head")["splits"]  # no labeled test: evaluated on dev
    assert "licence" in resolve_dataset("tripclick-torso")["manual_download"]


def test_registry_rejects_unknown_names_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset 'msmarco'.*known datasets: \[.*'fiqa'.*'tripclick-torso'"):
        resolve_dataset("msmarco")
    with pytest.raises(
        ConfigError,
        match=r"unknown model 'e5'.*known models: \['Qwen3-Embedding-0.6B', 'all-MiniLM-L6-v2', 'bge-large-en-v1.5'\]",
    ):
        resolve_model("e5")


def test_a_new_model_is_one_entry_with_a_path():
    model = resolve_model("my-retriever", {"path": "/models/my-retriever", "pooling": "cls"})
    assert (
        model["path"] == "/models/my-retriever"
        and model["pooling"] == "cls"
        and model["mining"] == {"lo": 10, "hi": 100}
    )


@pytest.mark.slow
def test_paper_dag_job_counts_offline(tmp_path):
    config = load_config(PAPER)
    assert set(config["datasets"]) == PAPER_DATASETS
    steps = {name: len(model_settings(config, name).checkpoint_steps()) for name in config["models"]}
    assert steps == {"bge-large-en-v1.5": 8, "Qwen3-Embedding-0.6B": 8}
    trained = 4  # basic, sp, infobatch, dp
    evaluated = len(PAPER_DATASETS) * sum(trained * n + 1 for n in steps.values())
    planned = plan(tmp_path, PAPER)
    assert planned == {
        "download": 8,
        "score": 16,
        "prune": 16 * trained,
        "finetune": 16 * trained,
        "mine": 16,  # sp mines after pruning, as the authors did (docs/comparability.md D6)
        "index": evaluated - 16,  # pretrain is evaluated on score's corpus embeddings
        "evaluate": evaluated,
        "publish": 16 * trained,  # each finetune run's checkpoints with model cards
        "aggregate": 1,
        "all": 1,
    }
    assert evaluated == 528
    # `opera plan` counts the jobs the workflow plans
    assert cost.job_counts(config) == {stage: n for stage, n in planned.items() if stage != "all"}
    assert not (tmp_path / "results").exists()  # a dry run downloads nothing


@pytest.mark.slow
def test_slurm_profile_dry_run_requests_gpus_memory_and_runtime(tmp_path):
    result = snakemake(
        tmp_path, PAPER, "--profile", str(ROOT / "profiles" / "slurm"), "--executor", "slurm", "--jobs", "10", "-n"
    )
    text = result.stdout + result.stderr
    blocks = [block for block in text.split("\nrule ")[1:] if block.startswith("finetune:")]
    assert len(blocks) == 64
    for block in blocks:
        resources = re.search(r"resources: (.*)", block).group(1)
        assert "gpu=8" in resources and "mem_mb=256000" in resources and "runtime=1440" in resources
        assert (
            "slurm_partition" not in resources and "cpus_per_task" not in resources
        )  # default partition; CPUs = threads
    scores = {
        re.search(r"wildcards: dataset=([\w-]+), model=([\w.-]+)", block).groups(): re.search(
            r"resources: (.*)", block
        )[1]
        for block in text.split("\nrule ")[1:]
        if block.startswith("score:")
    }
    # encoding jobs are sized from the corpus: FiQA (58k passages) one GPU, TriviaQA (21M) several
    assert "gpu=1," in scores["fiqa", "bge-large-en-v1.5"] and "runtime=240" in scores["fiqa", "bge-large-en-v1.5"]
    trivia = scores["triviaqa", "Qwen3-Embedding-0.6B"]
    assert int(re.search(r"gpu=(\d+)", trivia)[1]) > 1 and int(re.search(r"runtime=(\d+)", trivia)[1]) > 240
