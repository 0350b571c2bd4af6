"""A finished finetune run as the field's tools read it, once its checkpoints are evaluated.

* Each evaluated checkpoint as a sentence-transformers model folder
  (``<results>/models/<dataset>/<model>/<method>/seed<S>/budget<B>/step<N>/``): the checkpoint's
  files as hard links (no copy of the weights), readable by the group, and a model card written by
  sentence-transformers' own card machinery: base model, dataset, method and its parameters, steps,
  seed, the checkpoint's metrics on the evaluation split, the run's course, how to load it, and the
  OPERA citation. Loading it is ``SentenceTransformer(folder)``.
* The checkpoints' metrics as TensorBoard scalars (``eval/NDCG@10``, ...) in the run's tracking
  folder, beside the training curves the finetune job wrote there (opera.tracking).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from opera import io, preflight, tracking
from opera.settings import ModelSettings

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
PRIMARY_METRIC = "NDCG@10"

OPERA_BIBTEX = """@article{fang2026opera,
  title   = {{OPERA}: Online Data Pruning for Efficient Retrieval Model Adaptation},
  author  = {Fang, Haoyang and Zhang, Shuai and Ma, Yifei and Wang, Hengyi and Hu, Cuixiong and
             Kirchhoff, Katrin and Wang, Bernie and Karypis, George},
  journal = {arXiv preprint arXiv:2603.17205},
  year    = {2026}
}"""


class CheckpointEvaluation:
    """What opera's evaluate stage measured for a checkpoint, in the shape sentence-transformers'
    model card reads from an evaluator (its name, description, primary metric and configuration).
    It records an evaluation made elsewhere; it does not evaluate."""

    description = "Information Retrieval"

    def __init__(self, dataset: str, split: str, n_queries: int, metrics_file: str):
        self.name = f"{dataset}-{split}"
        self.primary_metric = PRIMARY_METRIC
        self._config = {
            "split": split,
            "queries": n_queries,
            "corpus": "the dataset's whole corpus",
            "metrics_file": metrics_file,
        }

    def get_config_dict(self) -> dict:
        return self._config


def base_model_name(path: str) -> str | None:
    """The hub id of a model path, for the card's base model (the shipped MiniLM is
    sentence-transformers/all-MiniLM-L6-v2); None for a local folder."""
    if path in preflight.SHIPPED_MODEL_NAMES:
        return preflight.SHIPPED_MODEL_HUB_ID
    return path if preflight.is_hub_id(path) else None


def model_card(
    checkpoint: Path,
    run: Mapping,
    metrics: Mapping,
    course: Sequence[Mapping],
    settings: ModelSettings,
    method_params: Mapping,
    load_path: str,
) -> str:
    """The model card of one checkpoint, written by sentence-transformers (its template, metadata
    and model index), from the run's identity, the checkpoint's ``metrics.json`` and the run's
    ``course`` (loss and primary metric at each evaluated checkpoint)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card

    model = SentenceTransformer(str(checkpoint), device="cpu", local_files_only=True)
    card = model.model_card_data
    base = base_model_name(settings.encoder.path)
    card.base_model = base
    card.local_files_only = True  # nothing is looked up on the hub while writing the card
    card.model_id = load_path
    card.model_name = f"{run['model']} finetuned on {run['dataset']} with OPERA's {run['method']} (step {run['step']})"
    card.language = ["en"]
    card.add_tags(["opera", "dense-retrieval", f"opera-{run['method']}"])
    hyper = {
        "method": run["method"],
        **{f"method.{key}": value for key, value in sorted(method_params.items())},
        "seed": run["seed"],
        "steps": run["step"],
        "run_budget_steps": run["budget"],
        "dataset": run["dataset"],
        "base_model": base or settings.encoder.path,
    }
    card.non_default_hyperparameters = hyper
    card.all_hyperparameters = hyper | _flat(settings.to_dict())
    card.set_evaluation_metrics(
        CheckpointEvaluation(run["dataset"], metrics["split"], metrics["n_queries"], "metrics.json"),
        dict(metrics["metrics"]),
        step=run["step"],
    )
    card.training_logs = [dict(line) for line in course]
    card.set_best_model_step(run["step"])
    card.citations = {"OPERA": OPERA_BIBTEX}
    text = generate_model_card(model)
    marker = "\n## Training Details"
    if marker not in text:
        raise ValueError(f"sentence-transformers' model card has no {marker.strip()!r} section: OPERA's notes go there")
    return text.replace(marker, "\n" + _opera_notes(settings, load_path) + marker, 1)


def _opera_notes(settings: ModelSettings, load_path: str) -> str:
    """How the pipeline encodes queries and passages, in the card: sentence-transformers keeps one
    maximum length per model, and the query side's shorter one must be given when encoding."""
    encoder = settings.encoder
    return (
        "## Encoding as OPERA does\n\n"
        f"Queries are cut at {encoder.query_max_length} tokens and passages at {encoder.passage_max_length}; "
        "the model keeps the longer length, so give the query side's when encoding queries longer than it "
        "(the embeddings then equal the pipeline's):\n\n"
        "```python\n"
        "from sentence_transformers import SentenceTransformer\n\n"
        f'model = SentenceTransformer("{load_path}")\n'
        "queries = model.encode_query(\n"
        '    ["what causes ..."],\n'
        f'    processing_kwargs={{"text": {{"max_length": {encoder.query_max_length}, "truncation": True}}}},\n'
        ")\n"
        'passages = model.encode_document(["a passage ..."])\n'
        "```\n"
    )


def _flat(settings: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _course(train_log: Sequence[Mapping], evaluated: Mapping[int, Mapping]) -> list[dict]:
    """Per evaluated checkpoint: its step, the training loss logged there and its primary metric."""
    loss = {entry["step"]: entry["loss"] for entry in train_log}
    return [
        {"Step": step, "Training Loss": loss.get(step, "-"), PRIMARY_METRIC: metrics["metrics"][PRIMARY_METRIC]}
        for step, metrics in sorted(evaluated.items())
        if PRIMARY_METRIC in metrics["metrics"]
    ]


def publish_run(
    *,
    finetune_dir: str | Path,
    metrics_paths: Sequence[str | Path],
    out_dir: str | Path,
    settings: ModelSettings,
    method_params: Mapping,
    tracking_settings: tracking.Tracking | None = None,
) -> list[Path]:
    """Publish the evaluated checkpoints of the finetune run in ``finetune_dir`` (their
    ``metrics.json`` files: ``metrics_paths``) into ``out_dir``, one model folder per checkpoint, and
    write their metrics to the run's tracking (``eval/``). Returns the model folders."""
    finetune_dir, out_dir = Path(finetune_dir), Path(out_dir)
    evaluated = {}
    for path in metrics_paths:
        record = io.read_json(path)
        for key in ("step", "split", "n_queries", "metrics"):
            if key not in record:
                raise ValueError(f"{path}: no {key!r}: not an evaluate stage's metrics.json")
        evaluated[int(record["step"])] = record
    train_log = io.read_train_log(finetune_dir / "train_log.jsonl")
    course = _course(train_log, evaluated)
    folders = []
    with io.atomic_dir(out_dir) as tmp:
        for step, record in sorted(evaluated.items()):
            source = finetune_dir / f"step{step}"
            io.verify_dir(source)  # the weights a card describes are the ones the metrics came from
            target = tmp / source.name
            shutil.copytree(
                source, target, copy_function=os.link, ignore=shutil.ignore_patterns(CARD_FILE, io.DIR_CHECKSUMS)
            )
            run = {key: record[key] for key in ("dataset", "model", "method", "seed", "budget", "step")}
            card = model_card(source, run, record, course, settings, method_params, str(out_dir / source.name))
            io.write_text(target / CARD_FILE, card)
            io.readable_by_group(target)
            io.write_dir_checksums(target)
            folders.append(out_dir / source.name)
    if tracking_settings is not None:
        with tracking.Tracker(tracking_settings, "eval") as tracker:
            for step, record in sorted(evaluated.items()):
                tracker.log({f"eval/{name}": value for name, value in record["metrics"].items()}, step)
    log.info("published %d checkpoints of %s in %s", len(folders), finetune_dir, out_dir)
    return folders
