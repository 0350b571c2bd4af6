"""Where a finetune run's curves go: TensorBoard event files always, Weights & Biases or MLflow when
the config names them (``tracking.backends``). Nothing leaves the machine unless the user says so:
W&B runs offline unless ``WANDB_MODE`` says otherwise, MLflow writes to a local SQLite store
(``<results>/tensorboard/mlflow.db``) unless ``MLFLOW_TRACKING_URI`` names a server.

Each run has one folder, ``<results>/tensorboard/<dataset>/<model>/<method>/seed<S>/budget<B>/``
(:func:`run_folder`), read with ``tensorboard --logdir <results>/``: ``train/`` is written while the
run trains (loss, learning rate, the sampler's state, training seconds), ``eval/`` once its
checkpoints are evaluated (the publish stage, opera.models.publish). A resumed run drops what its killed
predecessor logged after the checkpoint it resumes from (TensorBoard's ``purge_step``), so each step
appears once. Tracking changes no result: it is never a rerun trigger.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ("tensorboard", "wandb", "mlflow")
# The package each optional backend needs (tensorboard is a dependency of opera itself).
_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def root_folder(results_dir: str | Path) -> Path:
    """Where a config's runs are tracked: ``tensorboard --logdir`` it (or the results folder)."""
    return Path(results_dir) / "tensorboard"


def run_folder(results_dir: str | Path, dataset: str, model: str, method: str, seed: int, budget: int) -> Path:
    """The tracking folder of one finetune run (``train/`` and ``eval/`` below it)."""
    return root_folder(results_dir) / dataset / model / method / f"seed{seed}" / f"budget{budget}"


def missing_backends(backends) -> list[str]:
    """The named backends whose package is not installed (the config check names them)."""
    import importlib.util

    return [name for name in backends if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name]) is None]


def scalars(entry: Mapping) -> dict[str, float]:
    """A train-log entry as TensorBoard tags: ``train/loss``, ``train/lr``, ``train/elapsed_seconds``,
    ``train/sampler_seconds``, every numeric field of the sampler's state as ``sampler/<field>`` and, at
    a validated step, ``pool/<metric>`` (the validation pool's, opera.retrieval.validation) and ``pool/seconds``."""
    out = {
        "train/loss": entry["loss"],
        "train/lr": entry["lr"],
        "train/elapsed_seconds": entry["elapsed"],
        "train/sampler_seconds": entry["sampler_seconds"],
    }
    for key, value in (entry.get("sampler") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[f"sampler/{key}"] = value
    if "validation" in entry:
        out["pool/seconds"] = entry["validation"]["seconds"]
        out |= {f"pool/{name}": value for name, value in entry["validation"]["metrics"].items()}
    return out


@dataclass(frozen=True)
class Tracking:
    """One run's tracking: its folder, the backends, and what identifies the run to W&B and MLflow.
    ``store``: the config's MLflow store, one SQLite file for all its runs (MLflow 3 no longer writes
    plain folders), unless MLFLOW_TRACKING_URI names another."""

    folder: Path
    store: Path | None = None
    backends: tuple[str, ...] = ("tensorboard",)
    run_name: str = ""
    project: str = "opera"
    run_config: dict = field(default_factory=dict)

    @classmethod
    def for_run(cls, config: Mapping, dataset: str, model: str, method: str, seed: int, budget: int, **run_config):
        """From a validated config's ``tracking`` block and ``results_dir``."""
        block = config["tracking"]
        return cls(
            folder=run_folder(config["results_dir"], dataset, model, method, seed, budget),
            store=root_folder(config["results_dir"]) / "mlflow.db",
            backends=tuple(block["backends"]),
            run_name=f"{dataset}/{model}/{method}/seed{seed}/budget{budget}",
            project=block["project"],
            run_config={"dataset": dataset, "model": model, "method": method, "seed": seed, "budget": budget}
            | run_config,
        )

    def to_dict(self) -> dict:
        """JSON-ready (the torchrun workers' job file); :meth:`from_dict` reads it back."""
        return {
            "folder": str(self.folder),
            "store": str(self.store) if self.store else None,
            "backends": list(self.backends),
            "run_name": self.run_name,
            "project": self.project,
            "run_config": self.run_config,
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> Tracking:
        store = Path(values["store"]) if values.get("store") else None
        return cls(
            **{**values, "folder": Path(values["folder"]), "store": store, "backends": tuple(values["backends"])}
        )


class Tracker:
    """Writes scalars to every backend of a :class:`Tracking`, under one ``part`` (``train``, ``eval``)."""

    def __init__(self, tracking: Tracking, part: str, resumed_at: int = 0):
        self.tracking = tracking
        self._sinks = []
        folder = tracking.folder / part
        if "tensorboard" in tracking.backends:
            from torch.utils.tensorboard import SummaryWriter

            if resumed_at == 0 and folder.exists():
                shutil.rmtree(folder)  # a run that starts over replaces its predecessor's curves
            folder.mkdir(parents=True, exist_ok=True)
            self._sinks.append(
                _TensorBoard(SummaryWriter(str(folder), purge_step=resumed_at + 1 if resumed_at else None))
            )
        if "wandb" in tracking.backends:
            self._sinks.append(_WandB(tracking, part, resumed_at))
        if "mlflow" in tracking.backends:
            self._sinks.append(_MLflow(tracking, part))

    def log(self, values: Mapping[str, float], step: int) -> None:
        for sink in self._sinks:
            sink.log(values, step)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _TensorBoard:
    def __init__(self, writer):
        self.writer = writer

    def log(self, values, step):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self):
        self.writer.close()


class _WandB:
    """A W&B run per (run, part), offline unless the user's WANDB_MODE says online."""

    def __init__(self, tracking: Tracking, part: str, resumed_at: int):
        import wandb

        folder = tracking.folder / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=tracking.project,
            name=f"{tracking.run_name}/{part}",
            id=_safe_id(f"{tracking.run_name}/{part}"),
            dir=str(folder),
            config=tracking.run_config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            resume="allow" if resumed_at else None,
            reinit="create_new",
        )

    def log(self, values, step):
        self.run.log(dict(values), step=step)

    def close(self):
        self.run.finish()


class _MLflow:
    """An MLflow run per (run, part), in the config's local store (``Tracking.store``) unless
    MLFLOW_TRACKING_URI names another."""

    def __init__(self, tracking: Tracking, part: str):
        import mlflow

        store = tracking.store or tracking.folder / "mlflow.db"
        store.parent.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store.resolve()}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(tracking.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(tracking.project)
        self.run_id = self.client.create_run(experiment_id, run_name=f"{tracking.run_name}/{part}").info.run_id
        for key, value in tracking.run_config.items():
            self.client.log_param(self.run_id, key, value)

    def log(self, values, step):
        for key, value in values.items():
            self.client.log_metric(self.run_id, key.replace("@", "_at_"), float(value), step=step)

    def close(self):
        self.client.set_terminated(self.run_id)


def _safe_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:128]


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value)] in step order
    (with tensorboard's own reader: what the TensorBoard UI would show)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
