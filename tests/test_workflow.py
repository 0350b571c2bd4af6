"""The workflow on config/smoke.yaml: outputs, caching, what a config change plans, determinism,
and a finetune job killed with SIGKILL that resumes to the same metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import ENV, ROOT, plan, results_dir, snakemake, snakemake_cmd, write_config

pytestmark = pytest.mark.workflow
SMOKE = ROOT / "config" / "smoke.yaml"
RUN_FILES = ("metrics.json", "per_query.parquet", "run.trec")


def test_smoke_run_writes_tables_plots_and_benchmarks(smoke_run):
    results = results_dir(smoke_run, SMOKE)  # results/smoke: every output, log and benchmark of the config
    for name in ("results", "avg_rank"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 0
    final = pd.read_csv(results / "tables" / "results.csv")
    assert sorted(final["method"]) == sorted(["pretrain", "basic", "sp", "dp"])
    assert set(pd.read_csv(results / "tables" / "significance.csv")["method"]) == {"dp", "sp"}
    for kind in ("metric_vs_time", "training_time", "pruning_card"):
        for ext in ("png", "pdf"):
            assert (results / "plots" / f"scifact__all-MiniLM-L6-v2__{kind}.{ext}").stat().st_size > 0
    # every checkpoint evaluated, pretrain once, from the corpus embeddings of `score`
    evaluated = sorted(
        p.parent.relative_to(results / "evaluate" / "scifact" / "all-MiniLM-L6-v2").as_posix()
        for p in (results / "evaluate").rglob("metrics.json")
    )
    assert evaluated == [
        "basic/seed42/budget4/step2",
        "basic/seed42/budget4/step4",
        "dp/seed42/budget4/step2",
        "dp/seed42/budget4/step4",
        "pretrain",
        "sp/seed42/budget4/step2",
        "sp/seed42/budget4/step4",
    ]
    for rule in ("download", "score", "finetune", "index", "evaluate", "aggregate"):
        assert list((results / "benchmarks" / rule).rglob("*.tsv")) or (results / "benchmarks" / f"{rule}.tsv").exists()
    # pretrain is evaluated on the corpus embeddings of `score` (no index job), and a checkpoint's
    # are deleted once evaluated: disk holds no per-checkpoint index after the run
    assert not (results / "logs/index/scifact/all-MiniLM-L6-v2/pretrain.log").exists()
    assert (results / "score/scifact/all-MiniLM-L6-v2/corpus_embeddings/manifest.json").is_file()
    assert not (results / "index").exists() and len(list((results / "logs" / "index").rglob("*.log"))) == 6


def test_nothing_to_do_after_a_run(smoke_run):
    assert plan(smoke_run, SMOKE) == {}


def test_configs_write_to_their_own_results_dirs(smoke_run, tmp_path):
    """The smoke config ran; a second small config (other data, pretrain only) runs in the same
    working directory; the smoke config then plans nothing: each config writes to results/<stem>."""
    second = tmp_path / "smoke_pretrain.yaml"
    config = yaml.safe_load(SMOKE.read_text())
    config["methods"] = ["pretrain"]
    config["datasets"]["scifact"]["subsample"]["docs"] = 150
    second.write_text(yaml.safe_dump(config))
    snakemake(smoke_run, second, "--cores", "2")
    assert plan(smoke_run, SMOKE) == {}
    assert plan(smoke_run, second) == {}
    ours, theirs = results_dir(smoke_run, SMOKE), results_dir(smoke_run, second)
    assert sorted(pd.read_csv(ours / "tables" / "results.csv")["method"]) == ["basic", "dp", "pretrain", "sp"]
    assert list(pd.read_csv(theirs / "tables" / "results.csv")["method"]) == ["pretrain"]
    assert (theirs / "logs" / "download" / "scifact.log").is_file() and not (smoke_run / "logs").exists()


def test_adding_a_method_plans_only_its_jobs(smoke_run, tmp_path):
    config = write_config(tmp_path / "more.yaml", SMOKE, methods=["pretrain", "basic", "sp", "dp", "random"])
    assert plan(smoke_run, config) == {"prune": 1, "finetune": 1, "index": 2, "evaluate": 2, "aggregate": 1, "all": 1}


def test_changing_max_steps_reruns_finetuning_and_what_follows(smoke_run, tmp_path):
    config = write_config(tmp_path / "longer.yaml", SMOKE, model={"max_steps": 6})
    planned = plan(smoke_run, config)
    assert planned == {"finetune": 3, "index": 9, "evaluate": 9, "aggregate": 1, "all": 1}


def test_changing_a_method_parameter_reruns_only_that_method(smoke_run, tmp_path):
    config = write_config(tmp_path / "sp.yaml", SMOKE, method_params={"sp": {"kept_pct": 0.5}})
    assert plan(smoke_run, config) == {"prune": 1, "finetune": 1, "index": 2, "evaluate": 2, "aggregate": 1, "all": 1}


def _kill_when(process: subprocess.Popen, path: Path, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"snakemake ended before {path} appeared")
        if time.time() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job tree, as a lost node or OOM killer would
    process.wait()


def test_killed_finetune_resumes_and_whole_workflow_is_deterministic(smoke_run, tmp_path):
    """A second run of the smoke workflow, with the dp finetune job SIGKILLed after its first
    checkpoint, resumed by `--rerun-incomplete`: every metrics file byte-identical to the first run."""
    workdir = tmp_path / "killed"
    process = subprocess.Popen(
        snakemake_cmd(workdir, SMOKE, "--cores", "1"),
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = results_dir(workdir, SMOKE)
    checkpoint = results / "finetune_work/scifact/all-MiniLM-L6-v2/dp/seed42/budget4/step2"
    _kill_when(process, checkpoint)
    assert not (results / "finetune/scifact/all-MiniLM-L6-v2/dp/seed42/budget4").exists()

    snakemake(workdir, SMOKE, "--unlock")  # a killed Snakemake leaves its lock behind (README: When things go wrong)
    snakemake(workdir, SMOKE, "--cores", "2", "--rerun-incomplete")
    log = (results / "logs/finetune/scifact/all-MiniLM-L6-v2/dp/seed42/budget4.log").read_text()
    assert "resuming dp from step 2" in log
    first, second = results_dir(smoke_run, SMOKE) / "evaluate", results / "evaluate"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.name in RUN_FILES)
    assert len(files) == 3 * 7
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_tables_have_the_reference_format(smoke_run):
    """The smoke run's tables have the columns (and markdown headers) of the committed reference run."""
    ours, reference = results_dir(smoke_run, SMOKE) / "tables", ROOT / "results" / "reference" / "tables"
    for name in ("results.csv", "avg_rank.csv", "significance.csv", "time_to_quality.csv", "runs.csv"):
        assert list(pd.read_csv(ours / name).columns) == list(pd.read_csv(reference / name).columns), name

    def header(path):
        first = next(line for line in path.read_text().splitlines() if line.startswith("|"))
        return [cell.strip() for cell in first.split("|")]

    for name in ("results.md", "avg_rank.md"):
        assert header(ours / name) == header(reference / name), name
