"""The trainer: loss goes down, seeds are deterministic, a killed run resumes to identical weights,
checkpoints load with sentence-transformers, and the same loop runs as DDP (gloo, 2 processes)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from opera import io, pipeline, training
from opera.config import load_config, method_params
from opera.data import passage_texts, read_prepared
from opera.models import encoders

SMOKE_CONFIG = load_config(Path(__file__).resolve().parents[1] / "config" / "smoke.yaml")


def _finetune(
    root: Path, settings: dict, name: str, method: str = "dp", seed: int = 42, stop_after=None, title_join="space"
):
    return pipeline.finetune(
        data_dir=root / "data",
        pairs_path=root / "score" / "pairs.parquet",
        negatives_path=root / "score" / "negatives.parquet",
        kept_pairs_path=root / "score" / "pairs.parquet",
        settings=settings,
        method=method,
        method_params=method_params(SMOKE_CONFIG, method),
        seed=seed,
        title_join=title_join,
        out_dir=root / "ft" / name,
        work_dir=root / "work" / name,
        stop_after=stop_after,
    )


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(next((run_dir / f"step{step}").rglob("model.safetensors"))))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def settings(smoke_settings):
    return dataclasses.replace(smoke_settings, max_steps=4, eval_every=2)


def test_finetune_writes_checkpoints_and_log(smoke_scored, settings):
    summary = _finetune(smoke_scored, settings, "plain")
    run = smoke_scored / "ft" / "plain"
    assert summary["checkpoints"] == [2, 4]
    assert sorted(p.name for p in run.iterdir()) == ["checksums.json", "run.json", "step2", "step4", "train_log.jsonl"]
    assert not list(run.rglob(training.STATE_FILE))  # optimizer state is not published
    work = smoke_scored / "work" / "plain"  # keeps the finished run as hard links (no second copy), no states
    assert (work / training.FINISHED_FILE).exists() and not list(work.rglob(training.STATE_FILE))
    weights = next((run / "step4").rglob("model.safetensors"))
    assert weights.stat().st_ino == (work / weights.relative_to(run)).stat().st_ino
    expected = 0o666 & ~io._umask()  # 0644 under umask 022: colleagues on a shared file system can read it
    assert all(f.stat().st_mode & 0o777 == expected for f in (run / "step4").rglob("*") if f.is_file())
    io.verify_dir(run / "step4")
    assert sorted(io.verify_dir(run)) == ["run.json", "train_log.jsonl"]  # the run's own files, read by aggregate
    log = io.read_train_log(run / "train_log.jsonl")
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert all(e["elapsed"] > 0 for e in log) and log[-1]["elapsed"] >= log[0]["elapsed"]
    assert {"x", "r", "n0", "c", "tau", "queries_seen"} <= set(log[-1]["sampler"])
    # loadable by plain sentence-transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(run / "step4"), device="cpu")
    assert model.encode(["a query"]).shape == (1, 384)


def test_training_lowers_loss_on_a_fixed_batch(smoke_scored, settings):
    """Evaluate the InfoNCE loss on fixed batches (dropout off) before and after 8 steps."""
    strong = dataclasses.replace(settings, max_steps=8, eval_every=8, lr=1e-4, warmup_ratio=0.0)
    _finetune(smoke_scored, strong, "loss", method="basic")
    dataset = read_prepared(smoke_scored / "data")
    pairs = io.load_table(smoke_scored / "score/pairs.parquet")
    data = training.TrainingData.build(
        pairs,
        pairs,
        io.load_table(smoke_scored / "score/negatives.parquet"),
        dataset.queries,
        dict(zip(dataset.corpus["doc_id"], passage_texts(dataset.corpus), strict=True)),
    )

    def loss_of(path) -> float:
        model = encoders.load(strong.encoder, device="cpu", path=path)
        model.eval()
        rng = np.random.default_rng(0)
        total = 0.0
        for start in range(0, data.pairs.n_queries - 3, 4):
            queries = np.arange(start, start + 4)
            docs = []
            for q in queries:
                docs.append(str(data.pairs.doc_ids[data.pairs.offsets[q]]))
                docs.extend(training.draw_negatives(data, int(q), 1, rng))
            with torch.no_grad():
                q_emb = encoders.embed(model, encoders.tokenize(model, [data.query_texts[i] for i in queries], 24))
                p_emb = encoders.embed(model, encoders.tokenize(model, [data.doc_texts[d] for d in docs], 48))
                cols = np.arange(4) * 2
                mask = training.false_negative_mask(queries, docs, data.positives, cols)
                total += training.infonce(q_emb, p_emb, torch.as_tensor(cols), mask, 0.02).mean().item()
        return total

    before = loss_of(strong.encoder.path)
    after = loss_of(str(smoke_scored / "ft" / "loss" / "step8"))
    assert after < before


@pytest.mark.parametrize("method", ["dp", "infobatch"])
def test_same_seed_same_weights_and_kill_resume_identical(smoke_scored, settings, method):
    _finetune(smoke_scored, settings, f"{method}-a", method=method)
    _finetune(smoke_scored, settings, f"{method}-b", method=method)
    a, b = smoke_scored / "ft" / f"{method}-a", smoke_scored / "ft" / f"{method}-b"
    assert _same_weights(_weights(a, 4), _weights(b, 4))

    # A run that stops after step 3 (its last checkpoint is step 2), then is started again.
    stopped = _finetune(smoke_scored, settings, f"{method}-r", method=method, stop_after=3)
    assert stopped == {"stopped_at": 3}
    assert (smoke_scored / "work" / f"{method}-r" / "step2").is_dir()
    _finetune(smoke_scored, settings, f"{method}-r", method=method)
    resumed = smoke_scored / "ft" / f"{method}-r"
    assert _same_weights(_weights(a, 4), _weights(resumed, 4))

    def strip(entries):
        return [{k: v for k, v in e.items() if k not in ("elapsed", "sampler_seconds")} for e in entries]

    assert strip(io.read_train_log(a / "train_log.jsonl")) == strip(io.read_train_log(resumed / "train_log.jsonl"))


def test_different_seed_different_weights(smoke_scored, settings):
    _finetune(smoke_scored, settings, "seed1", method="basic", seed=1)
    _finetune(smoke_scored, settings, "seed2", method="basic", seed=2)
    assert not _same_weights(_weights(smoke_scored / "ft" / "seed1", 4), _weights(smoke_scored / "ft" / "seed2", 4))


def test_false_negative_mask_hides_shared_positives():
    positives = [frozenset({"d1", "d2"}), frozenset({"d3"})]
    docs = ["d1", "n1", "d3", "d2"]  # query 0: positive d1 + negative n1; query 1: positive d3 + negative d2
    mask = training.false_negative_mask(np.array([0, 1]), docs, positives, np.array([0, 2]))
    # query 0 must not be pushed away from d2 (its own positive, drawn as query 1's negative)
    assert mask.tolist() == [[False, False, False, True], [False, False, False, False]]


@pytest.mark.slow
def test_ddp_gloo_two_processes(smoke_scored, settings, tmp_path):
    """The same loop under torchrun: 2 CPU processes, per-process batch 2, gathered negatives."""
    job = {
        "data_dir": str(smoke_scored / "data"),
        "pairs_path": str(smoke_scored / "score" / "pairs.parquet"),
        "negatives_path": str(smoke_scored / "score" / "negatives.parquet"),
        "kept_pairs_path": str(smoke_scored / "score" / "pairs.parquet"),
        "settings": {**settings.to_dict(), "batch_size": 2},
        "method": "dp",
        "method_params": {
            "r0": 0.25,
            "x0": 2.0,
            "x_start": 2.0,
            "x_end": 5.0,
            "c_start": 0.25,
            "c_end": 0.5,
            "doc_weight": 5.0,
        },
        "seed": 42,
        "title_join": "space",
        "out_dir": str(tmp_path / "ddp"),
        "work_dir": str(tmp_path / "ddp_work"),
    }
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "opera.cli",
            "finetune",
            "--job",
            str(job_file),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2
    log = io.read_train_log(tmp_path / "ddp" / "train_log.jsonl")
    # the global batch is 2 processes x 2 queries: 4 new queries a step within dp's first epoch (n0 = 15)
    assert log[-1]["sampler"]["n0"] == 15
    assert [e["sampler"]["queries_seen"] for e in log[:3]] == [4, 8, 12]
    assert (tmp_path / "ddp" / "step4").is_dir()


def test_resume_state_of_other_settings_is_discarded(tmp_path):
    work = tmp_path / "work"
    training.checkpoints.claim_work_dir(work, {"lr": 1e-5})
    (work / "step2").mkdir()
    training.checkpoints.claim_work_dir(work, {"lr": 1e-5})  # same job: its checkpoints stay
    assert (work / "step2").is_dir()
    training.checkpoints.claim_work_dir(work, {"lr": 2e-5})  # another job: stale checkpoints go
    assert not (work / "step2").exists() and work.is_dir()


def test_a_run_killed_under_other_training_data_is_not_resumed(smoke_scored, settings, caplog):
    """The resume state records what the training data was built from (input checksums, passage
    format): a restart under another title_join trains from step 0."""
    _finetune(smoke_scored, settings, "data-change", method="basic", stop_after=2)
    assert (smoke_scored / "work" / "data-change" / "step2").is_dir()  # resume state at step 2
    with caplog.at_level("INFO"):
        _finetune(smoke_scored, settings, "data-change", method="basic", stop_after=2, title_join="newline")
    assert "discarding resume state" in caplog.text and "resuming" not in caplog.text


def test_a_torn_last_train_log_line_is_dropped_and_an_inner_one_named(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # killed while writing step 3
    assert training.checkpoints.log_lines(log) == ['{"step": 1}', '{"step": 2}']
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="train_log.jsonl:2: not valid JSON"):
        training.checkpoints.log_lines(log)


def test_a_finished_run_is_published_again_not_trained_again(smoke_scored, settings, monkeypatch, caplog):
    """Snakemake deletes the output of a job its killed predecessor left incomplete, even when that
    job went on and finished: the next job publishes the finished run from the work folder."""
    import shutil

    first = _finetune(smoke_scored, settings, "adopt", method="basic")
    run = smoke_scored / "ft" / "adopt"
    weights = {name: tensor.clone() for name, tensor in _weights(run, 4).items()}  # not a view of the file
    shutil.rmtree(run)
    monkeypatch.setattr(training.loop, "_train", lambda *args: pytest.fail("a finished run was trained again"))
    with caplog.at_level("INFO"):
        again = _finetune(smoke_scored, settings, "adopt", method="basic")
    assert again == first and "finished in" in caplog.text
    assert _same_weights(weights, _weights(run, 4)) and (run / "train_log.jsonl").exists()

    # a finished run whose files were changed since is not published: it is trained again
    shutil.rmtree(run)
    damaged = next((smoke_scored / "work" / "adopt" / "step4").rglob("model.safetensors"))
    with open(damaged, "r+b") as handle:
        handle.seek(1024)
        handle.write(b"\0" * 65536)
    monkeypatch.undo()
    with caplog.at_level("WARNING"):
        _finetune(smoke_scored, settings, "adopt", method="basic", stop_after=2)
    assert "not using the finished run" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):  # the retraining, killed after step 2, resumes like any other run
        _finetune(smoke_scored, settings, "adopt", method="basic")
    assert "resuming basic from step 2" in caplog.text and "discarding" not in caplog.text
    assert _same_weights(weights, _weights(run, 4))


@pytest.mark.parametrize("removed", ["step2", "step4", "train_log.jsonl"])
def test_a_finished_run_missing_a_checkpoint_or_its_log_is_trained_again_not_published(
    smoke_scored, settings, caplog, removed
):
    """finished.json left beside a work folder whose step folders (or log) were deleted: the rerun
    must not publish a run without them, nor again after the published run is deleted as advised."""
    import shutil

    name = f"gone-{removed}"
    first = _finetune(smoke_scored, settings, name, method="basic")
    run, work = smoke_scored / "ft" / name, smoke_scored / "work" / name
    weights = {key: tensor.clone() for key, tensor in _weights(run, 4).items()}
    shutil.rmtree(run)
    target = work / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with caplog.at_level("WARNING"):
        again = _finetune(smoke_scored, settings, name, method="basic")
    why = "train_log.jsonl is missing" if removed.endswith(".jsonl") else "where the run wrote [2, 4]"
    assert "not using the finished run" in caplog.text and why in caplog.text, caplog.text
    assert again["checkpoints"] == first["checkpoints"] == [2, 4]
    assert sorted(p.name for p in run.glob("step*")) == ["step2", "step4"] and (run / "train_log.jsonl").is_file()
    assert _same_weights(weights, _weights(run, 4))  # trained again from scratch: the same weights


def test_resume_passes_over_a_damaged_checkpoint(smoke_scored, settings, caplog):
    every_step = dataclasses.replace(settings, eval_every=1)
    _finetune(smoke_scored, every_step, "whole", method="basic")
    _finetune(smoke_scored, every_step, "damaged", method="basic", stop_after=3)
    with open(next((smoke_scored / "work" / "damaged" / "step3").rglob("model.safetensors")), "r+b") as handle:
        handle.seek(2048)
        handle.write(b"\xff" * 65536)  # 64 KiB overwritten, size unchanged
    with caplog.at_level("INFO"):
        _finetune(smoke_scored, every_step, "damaged", method="basic")
    assert "not resuming from step 3" in caplog.text and "resuming basic from step 2" in caplog.text
    whole, resumed = smoke_scored / "ft" / "whole", smoke_scored / "ft" / "damaged"
    assert _same_weights(_weights(whole, 4), _weights(resumed, 4))


def test_a_published_checkpoint_changed_after_training_is_refused(smoke_scored, settings, tmp_path):
    import shutil

    _finetune(smoke_scored, settings, "refused", method="basic")
    checkpoint = tmp_path / "step4"
    shutil.copytree(smoke_scored / "ft" / "refused" / "step4", checkpoint)  # a copy: the work folder's stays intact
    weights = next(checkpoint.rglob("model.safetensors"))
    with open(weights, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\0" * 65536)

    def index():  # the one job that reads a checkpoint's weights (evaluate reads its embeddings)
        pipeline.index(
            data_dir=smoke_scored / "data",
            encoder=settings.encoder,
            checkpoint=checkpoint,
            encode_batch_size=32,
            title_join="space",
            layout=None,
            split="test",
            out_dir=tmp_path / "index",
            out_queries=tmp_path / "queries.npy",
        )

    with pytest.raises(io.CorruptArtifactError, match="model.safetensors: content does not match"):
        index()
    (checkpoint / io.DIR_CHECKSUMS).unlink()
    with pytest.raises(io.CorruptArtifactError, match="no checksums.json"):
        index()
    assert not (tmp_path / "index").exists() and not (tmp_path / "queries.npy").exists()


@pytest.mark.parametrize("full_file", ["config.json", training.STATE_FILE])
def test_a_full_disk_while_writing_a_checkpoint_says_so_and_loses_nothing(
    smoke_scored, settings, monkeypatch, full_file
):
    """One file of the checkpoint is written to /dev/full (every write fails with ENOSPC), as on a
    full disk: the model's config (a plain write) or the trainer state (torch's zip writer, whose
    error is "unexpected pos"). transformers replaces existing weight files, so those cannot be linked."""
    import tempfile

    name = f"full-{full_file}"
    _finetune(smoke_scored, settings, name, method="basic", stop_after=2)  # step 2 is on disk
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp_on_a_full_disk(*args, **kwargs):
        folder = Path(real_mkdtemp(*args, **kwargs))
        if folder.name.startswith(".step4."):
            (folder / full_file).symlink_to("/dev/full")
        return str(folder)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_on_a_full_disk)
    with pytest.raises(io.DiskFullError, match=r"disk full.*Nothing is lost.*resumes from step 2") as raised:
        _finetune(smoke_scored, settings, name, method="basic")
    assert "step4" in str(raised.value)
    work = smoke_scored / "work" / name
    assert [p.name for p in sorted(work.iterdir()) if p.name.startswith(("step", ".step"))] == ["step2"]
    io.verify_dir(work / "step2")
    monkeypatch.undo()  # space freed: the rerun resumes from step 2 and finishes
    assert _finetune(smoke_scored, settings, name, method="basic")["checkpoints"] == [2, 4]


def test_aggregate_refuses_a_train_log_changed_after_the_run(smoke_scored, settings, tmp_path):
    import shutil

    _finetune(smoke_scored, settings, "log-changed", method="basic")
    run = tmp_path / "run"
    shutil.copytree(smoke_scored / "ft" / "log-changed", run)
    with open(run / "train_log.jsonl", "a") as handle:
        handle.write('{"step": 5, "elapsed": 0.1}\n')
    with pytest.raises(io.CorruptArtifactError, match="train_log.jsonl: content does not match"):
        pipeline.aggregate(
            metrics_paths=[],
            tables_dir=tmp_path / "tables",
            plots_dir=tmp_path / "plots",
            train_logs={("d", "m", "basic", 42, 4): run / "train_log.jsonl"},
        )
    assert not (tmp_path / "tables").exists()


# --- a run that stops learning is stopped, not published --------------------------------------------


def test_a_loss_that_is_not_finite_at_step_one_stops_the_run_and_names_the_temperature(smoke_scored, settings):
    """cosine / 1e-45 overflows float32: the base model's first loss is NaN."""
    with pytest.raises(training.TrainingDiverged) as raised:
        _finetune(smoke_scored, dataclasses.replace(settings, temperature=1e-45), "nan-first", method="basic")
    message = str(raised.value)
    for part in ("training stopped at step 1", "temperature (1e-45", "Nothing was published", "no checkpoint"):
        assert part in message, (part, message)
    assert not (smoke_scored / "ft" / "nan-first").exists()
    assert not io.read_train_log(smoke_scored / "work" / "nan-first" / training.LOG_FILE)  # no step happened


def test_weights_blown_up_by_the_lr_stop_the_run_at_the_first_non_finite_step(smoke_scored, settings):
    """lr 1e30 makes finite but absurd weights after step 1; the next forward overflows. Every
    checkpoint kept is of finite weights, and nothing is published."""
    huge = dataclasses.replace(settings, lr=1e30, warmup_ratio=0.0, eval_every=1, max_steps=6)
    with pytest.raises(training.TrainingDiverged) as raised:
        _finetune(smoke_scored, huge, "nan-lr", method="basic")
    message = str(raised.value)
    stopped = int(message.split("training stopped at step ")[1].split(":")[0])
    assert stopped >= 2 and "lr (1e+30) too large" in message, message
    work = smoke_scored / "work" / "nan-lr"
    kept = [int(p.name.removeprefix("step")) for p in sorted(work.glob("step*"))]
    assert kept == list(range(1, stopped)) and f"steps {kept}" in message
    assert all(torch.isfinite(w).all() for step in kept for w in _weights(work, step).values())
    assert not (smoke_scored / "ft" / "nan-lr").exists()


def test_fp16_steps_the_scaler_keeps_skipping_stop_the_run(smoke_scored, settings, monkeypatch):
    """With fp16 a non-finite step is skipped by the gradient scaler, not applied: the run stops once
    skips are more than half of the window. fp16 is a GPU precision; here the scaler runs on the CPU,
    around fp32 arithmetic: fp16 autocast on a CPU is emulated (about 10 s a step of this model, 11
    steps), and at this temperature the loss is NaN in either precision."""
    monkeypatch.setattr(training.loop.precision, "resolve", lambda requested, device: "fp16")
    monkeypatch.setattr(training.loop.precision, "autocast", lambda device, requested: contextlib.nullcontext())
    nan = dataclasses.replace(settings, temperature=1e-45, max_steps=training.loop.SKIP_WINDOW, eval_every=100)
    with pytest.raises(training.TrainingDiverged, match=r"stopped at step 11: fp16's gradient scaler skipped 11"):
        _finetune(smoke_scored, nan, "nan-fp16", method="basic")
