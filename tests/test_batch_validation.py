"""A batch the train queries cannot fill stops the workflow before any job where that is knowable: at
the dry run for a local source or a subsample, at the download for a source counted only once prepared."""

from __future__ import annotations

import pytest
import yaml
from workflow_helpers import ENV, ROOT, snakemake

SMOKE = ROOT / "config" / "smoke.yaml"


@pytest.mark.slow
def test_snakemake_stops_before_any_job_on_a_batch_larger_than_the_train_queries(tmp_path):
    config = yaml.safe_load(SMOKE.read_text())
    config["models"]["all-MiniLM-L6-v2"]["batch_size"] = 32  # the smoke slice keeps 24 train queries
    bad = tmp_path / "big_batch.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path / "w", bad, "-n", check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'models.all-MiniLM-L6-v2.batch_size'" in text and "'datasets.scifact'" in text
    assert "draws 32 distinct queries" in text and "at most 24 train queries" in text
    assert "Job stats" not in text and not (tmp_path / "w" / "results").exists()


@pytest.mark.slow
def test_the_download_stops_on_a_train_split_smaller_than_the_batch(tmp_path):
    """A local hf copy is not counted before it is prepared: its download job refuses it, so the
    score job (which encodes the corpus) never starts."""
    from test_hf_data import write_saved

    folder = write_saved(tmp_path / "saved")  # two train queries
    config = {
        "datasets": {"toy": {"source": {"type": "hf", "repo": str(folder)}, "splits": ["train", "test"]}},
        "models": {"all-MiniLM-L6-v2": {"batch_size": 3}},
        "methods": ["pretrain", "basic"],
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "w"
    env = {**ENV, "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    result = snakemake(workdir, path, "--cores", "1", check=False, env=env)
    assert result.returncode != 0
    log = (workdir / "results" / "toy" / "logs" / "download" / "toy.log").read_text()
    assert "train split has 2 queries" in log and "models.all-MiniLM-L6-v2.batch_size (3 queries a step)" in log
    assert not (workdir / "results" / "toy" / "data" / "toy").exists()
    assert not (workdir / "results" / "toy" / "score").exists()
