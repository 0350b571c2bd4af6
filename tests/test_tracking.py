"""Run tracking (opera.tracking): TensorBoard files read back with tensorboard's own reader, a resumed
run's curves without the steps its killed predecessor logged twice, and the config's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT

from opera import tracking
from opera.config import ConfigError, validate_config


def _tracking(tmp_path, **changes) -> tracking.Tracking:
    return tracking.Tracking(folder=tmp_path / "run", run_name="d/m/dp/seed1/budget4", **changes)


def test_train_log_entry_becomes_scalars():
    entry = {
        "step": 3,
        "elapsed": 1.5,
        "loss": 0.7,
        "lr": 1e-5,
        "sampler_seconds": 0.01,
        "sampler": {"x": 2.5, "c": 0.3, "epoch": 1, "done": True, "name": "dp", "tau": float("nan")},
    }
    assert tracking.scalars(entry) == {
        "train/loss": 0.7,
        "train/lr": 1e-5,
        "train/elapsed_seconds": 1.5,
        "train/sampler_seconds": 0.01,
        "sampler/x": 2.5,
        "sampler/c": 0.3,
        "sampler/epoch": 1,
    }  # booleans, strings and non-finite values are not curves


def test_resumed_run_drops_what_its_predecessor_logged_after_the_checkpoint(tmp_path):
    settings = _tracking(tmp_path)
    with tracking.Tracker(settings, "train") as first:
        for step in range(1, 5):  # killed after step 4; its newest checkpoint was step 2
            first.log({"train/loss": float(step)}, step)
    with tracking.Tracker(settings, "train", resumed_at=2) as resumed:
        for step in (3, 4):
            resumed.log({"train/loss": 10.0 * step}, step)
    assert tracking.read_scalars(settings.folder / "train")["train/loss"] == [
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
        (4, 40.0),
    ]
    with tracking.Tracker(settings, "train") as again:  # a run that starts over replaces the curves
        again.log({"train/loss": 5.0}, 1)
    assert tracking.read_scalars(settings.folder / "train")["train/loss"] == [(1, 5.0)]


def test_tracking_round_trips_through_the_torchrun_job_file(tmp_path):
    settings = _tracking(tmp_path, run_config={"seed": 1})
    assert tracking.Tracking.from_dict(settings.to_dict()) == settings
    config = {"results_dir": "results/x", "tracking": {"backends": ["tensorboard"], "project": "p"}}
    made = tracking.Tracking.for_run(config, "scifact", "m", "dp", 42, 64)
    assert made.folder == Path("results/x/tensorboard/scifact/m/dp/seed42/budget64")
    assert made.run_config == {"dataset": "scifact", "model": "m", "method": "dp", "seed": 42, "budget": 64}


def _smoke(**changes) -> dict:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    return {**config, "results_dir": "results/tracking-test", **changes}


def test_config_names_tracking_backends_and_display_names():
    config = validate_config(_smoke())
    assert config["tracking"] == {"backends": ["tensorboard"], "project": "opera"} and config["display_names"] == {}
    with pytest.raises(ConfigError, match=r"'display_names': \['infobatch'\] are not methods of this config"):
        validate_config(_smoke(display_names={"infobatch": "InfoBatch"}))
    with pytest.raises(ConfigError, match="tracking"):
        validate_config(_smoke(tracking={"backends": ["neptune"]}))
    missing = [name for name in ("wandb", "mlflow") if tracking.missing_backends([name])]
    for name in missing:  # named but not installed: the key and the install command
        with pytest.raises(
            ConfigError, match=rf"'tracking.backends': \['{name}'\] named but not installed \(pip install"
        ):
            validate_config(_smoke(tracking={"backends": ["tensorboard", name]}))


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_optional_backend_logs_locally(tmp_path, monkeypatch, backend):
    """W&B (offline) and MLflow (a local SQLite store) receive the same scalars as TensorBoard.
    Runs where the package is installed (neither is a dependency); checked by hand with wandb 0.31
    and mlflow 3.17."""
    pytest.importorskip(backend)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = _tracking(tmp_path, store=tmp_path / "mlflow.db", backends=("tensorboard", backend))
    with tracking.Tracker(settings, "train") as tracker:
        for step in (1, 2):
            tracker.log({"train/loss": 1.0 / step}, step)
    if backend == "wandb":
        assert list((settings.folder / "wandb").rglob("*.wandb"))  # an offline run file, nothing uploaded
    else:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name("opera").experiment_id])
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")] == [
            (1, 1.0),
            (2, 0.5),
        ]
