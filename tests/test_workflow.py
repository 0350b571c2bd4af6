"""The workflow on config/smoke.yaml: outputs, caching, what a config change plans, determinism,
and Snakemake killed in each stage, with and without its job, recovering to the same metrics."""

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
    compared = pd.read_csv(results / "tables" / "comparisons.csv")
    assert set(zip(compared["method"], compared["baseline"], strict=True)) == {
        ("pretrain", "basic"),
        ("sp", "basic"),
        ("dp", "basic"),
    }
    assert set(compared["verdict"]) <= {"higher", "lower", "equivalent", "inconclusive"}
    for kind in ("metric_vs_steps", "metric_vs_time", "training_time", "pruning_card", "sampler_diagnostics"):
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


def test_runs_are_published_with_model_cards_and_tensorboard_curves(smoke_run):
    """Each finetune run's evaluated checkpoints are model folders with a model card naming the base
    model, dataset, method, steps, seed and metrics, weights readable by the group and hard-linked
    (no copy); `tensorboard --logdir results/smoke/` finds a train and an eval run per finetune run
    with loss, learning rate, the sampler's state and the checkpoints' metrics."""
    import stat

    from tensorboard.backend.event_processing import event_multiplexer

    from opera import io

    results = results_dir(smoke_run, SMOKE)
    curves = event_multiplexer.EventMultiplexer()
    curves.AddRunsFromDirectory(str(results))
    curves.Reload()
    for method in ("basic", "sp", "dp"):
        run = f"scifact/all-MiniLM-L6-v2/{method}/seed42/budget4"
        for step in (2, 4):
            folder = results / "models" / run / f"step{step}"
            io.verify_dir(folder)
            metrics = io.read_json(results / "evaluate" / run / f"step{step}" / "metrics.json")["metrics"]
            card = (folder / "README.md").read_text()
            for fact in (
                "base_model: sentence-transformers/all-MiniLM-L6-v2",
                f"all-MiniLM-L6-v2 finetuned on scifact with OPERA's {method} (step {step})",
                f"- `method`: {method}",
                f"- `steps`: {step}",
                "- `seed`: 42",
                f"value: {metrics['NDCG@10']}",
                f"{metrics['NDCG@10']:.4f}",
                f'SentenceTransformer("{folder.relative_to(smoke_run)}")',  # as the workflow names it
                '"max_length": 24',  # the query side's length, for encode_query
                "@article{fang2026opera",
            ):
                assert fact in card, (method, step, fact)
            weights = folder / "model.safetensors"
            assert weights.stat().st_mode & stat.S_IRGRP
            assert (
                weights.stat().st_ino
                == (results / "finetune" / run / f"step{step}" / "model.safetensors").stat().st_ino
            )
        train = curves.Scalars(f"tensorboard/{run}/train", "train/loss")
        assert [event.step for event in train] == [1, 2, 3, 4]
        tags = set(curves.Runs()[f"tensorboard/{run}/train"]["scalars"])
        assert {"train/lr", "train/elapsed_seconds", "sampler/queries_seen"} <= tags
        if method == "dp":
            assert {"sampler/x", "sampler/c", "sampler/tau"} <= tags
        evaluated = curves.Scalars(f"tensorboard/{run}/eval", "eval/NDCG@10")
        expected = [
            io.read_json(results / "evaluate" / run / f"step{s}" / "metrics.json")["metrics"]["NDCG@10"] for s in (2, 4)
        ]
        assert [event.step for event in evaluated] == [2, 4]
        assert [event.value for event in evaluated] == pytest.approx(expected, abs=1e-6)


def test_report_shows_the_tables_as_tables(smoke_run, tmp_path):
    """Snakemake's report embeds each table's HTML page (it would offer a CSV only as a download)."""
    report = tmp_path / "report.html"
    snakemake(smoke_run, SMOKE, "--cores", "1", "--report", str(report))
    text = report.read_text()
    for stem in ("results", "avg_rank", "paper", "comparisons", "claims"):
        assert f"{stem}.html" in text, stem
    assert '"Tables"' in text and '"Table files (CSV)"' in text
    assert "mailto:NDCG" not in text  # NDCG@10 in captions is not an e-mail address


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


# the jobs of one more trained method at the smoke grid: its pairs, run, 2 checkpoints, publish, tables
ONE_METHOD = {"prune": 1, "finetune": 1, "index": 2, "evaluate": 2, "publish": 1, "aggregate": 1, "all": 1}


def test_adding_a_method_plans_only_its_jobs(smoke_run, tmp_path):
    config = write_config(tmp_path / "more.yaml", SMOKE, methods=["pretrain", "basic", "sp", "dp", "random"])
    assert plan(smoke_run, config) == ONE_METHOD


def test_changing_max_steps_reruns_finetuning_and_what_follows(smoke_run, tmp_path):
    config = write_config(tmp_path / "longer.yaml", SMOKE, model={"max_steps": 6})
    planned = plan(smoke_run, config)
    assert planned == {"finetune": 3, "index": 9, "evaluate": 9, "publish": 3, "aggregate": 1, "all": 1}


def test_changing_a_method_parameter_reruns_only_that_method(smoke_run, tmp_path):
    config = write_config(tmp_path / "sp.yaml", SMOKE, method_params={"sp": {"kept_pct": 0.5}})
    assert plan(smoke_run, config) == ONE_METHOD


# --- a killed driver loses nothing ---------------------------------------------------------------

KILLED_STAGES = ("score", "finetune", "index", "evaluate")
DP_RUN = "scifact/all-MiniLM-L6-v2/dp/seed42/budget4"
RESUMED = "resuming dp from step 2"


def _wait_for(what: str, ready, driver: subprocess.Popen, timeout: float = 600):
    deadline = time.time() + timeout
    while not (found := ready()):
        if driver.poll() is not None:
            raise AssertionError(f"snakemake ended (exit {driver.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)
    return found


def _is_held(lock: Path) -> bool:
    import fcntl

    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _running_job(results: Path, stage: str) -> tuple[Path, int] | None:
    """(log, pid) of a running job of ``stage``: the one holding the lock beside its log."""
    for lock in (results / "logs" / stage).rglob(".*.lock"):
        if _is_held(lock) and (holder := lock.read_text()).startswith("pid "):
            return lock.with_name(lock.name[1 : -len(".lock")]), int(holder.split()[1])
    return None


def _start(workdir: Path, config: Path, *args: str) -> subprocess.Popen:
    """A Snakemake driver in its own process group; its output goes to driver.log (tail kept on failure)."""
    command = snakemake_cmd(workdir, config, "--cores", "1", "--until", "evaluate", *args)
    with open(workdir.parent / "driver.log", "a") as output:
        return subprocess.Popen(command, env=ENV, start_new_session=True, stdout=output, stderr=output)


def test_driver_killed_in_each_stage_then_recovered_gives_identical_metrics(smoke_run, tmp_path):
    """Snakemake SIGKILLed while a job of each stage runs (score, finetune after its first
    checkpoint, index, evaluate), twice a stage, each time followed by the README's recovery
    (--unlock, then --rerun-incomplete). First the whole job tree dies, as on a lost node (the
    rerun's finetune job resumes from step 2); then only the driver dies and the rerun's job runs
    on, as a SLURM job does: it is paused until the next rerun's job of the same output is waiting
    for it, then let go, so the two overlap (the resumed finetune finishes the run, and the next
    job publishes it). The dp run's metrics are byte-identical to the uninterrupted run's."""
    workdir = tmp_path / "killed"
    config = write_config(tmp_path / "dp.yaml", SMOKE, methods=["dp"], results_dir="results/dp")
    results = workdir / "results" / "dp"
    driver, paused = _start(workdir, config), []
    try:
        for stage in KILLED_STAGES:
            for orphan in (False, True):
                log, pid = _wait_for(f"{stage} job", lambda stage=stage: _running_job(results, stage), driver)
                if stage == "finetune" and not orphan:
                    _wait_for("a checkpoint", (results / "finetune_work" / DP_RUN / "step2").exists, driver)
                elif stage == "finetune":  # the job of the last kill's rerun: it resumed the killed run
                    _wait_for(RESUMED, lambda log=log: log.exists() and RESUMED in log.read_text(), driver)
                if orphan:
                    os.kill(pid, signal.SIGSTOP)
                    paused.append(pid)
                    os.kill(driver.pid, signal.SIGKILL)
                else:
                    os.killpg(driver.pid, signal.SIGKILL)  # the whole job tree, as a lost node would
                driver.wait()
                snakemake(workdir, config, "--unlock")  # README, "When things go wrong"
                driver = _start(workdir, config, "--rerun-incomplete")
                if orphan:
                    waiting = f"waiting for pid {pid} on host"
                    _wait_for(
                        f"the rerun's {stage} job to wait",
                        lambda log=log, w=waiting: log.exists() and w in log.read_text(),
                        driver,
                    )
                    os.kill(pid, signal.SIGCONT)
                    paused.remove(pid)
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    finally:  # a failed test leaves no paused job and no driver behind
        for pid in paused:
            os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)

    # the orphan finished the resumed run, the rerun's job published it instead of training again
    finetune_log = (results / "logs" / "finetune" / f"{DP_RUN}.log").read_text()
    assert "dp finished in" in finetune_log and "publishing it" in finetune_log
    first = results_dir(smoke_run, SMOKE) / "evaluate"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.name in RUN_FILES and "/dp/" in str(p))
    assert len(files) == 2 * 3
    for relative in files:
        assert (first / relative).read_bytes() == (results / "evaluate" / relative).read_bytes(), relative


def test_tables_have_the_reference_format(smoke_run):
    """The smoke run's tables have the columns (and markdown headers) of the committed reference
    runs: the embedded default's (fp32) for the tables whose columns follow the config's metrics,
    the study's for the comparisons, time to quality, claims and the paper's table."""
    ours = results_dir(smoke_run, SMOKE) / "tables"
    default, study = (ROOT / "results" / "reference" / name / "tables" for name in ("fp32", "study"))
    references = {"results": default, "avg_rank": default, "runs": default}
    references |= dict.fromkeys(["comparisons", "time_to_quality", "paper", "claims", "sampler_diagnostics"], study)
    for table, reference in references.items():
        name = f"{table}.csv"
        assert list(pd.read_csv(ours / name).columns) == list(pd.read_csv(reference / name).columns), name

    def header(path):
        first = next(line for line in path.read_text().splitlines() if line.startswith("|"))
        return [cell.strip() for cell in first.split("|")]

    # (paper.md's columns follow the metrics a config computes, as results.md's do)
    for name, reference in (("results.md", default), ("avg_rank.md", default), ("claims.md", study)):
        assert header(ours / name) == header(reference / name), name
