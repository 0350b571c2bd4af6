"""What the plan counts with: a dataset's documents and evaluation queries (offline), a model's
parameters and embedding size, and its throughput (measured, or assumed from FLOPs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opera import io
from opera.config import (
    gpu_peak_tflops,
    model_settings,
)
from opera.data.sources import source_of
from opera.preflight import local_model_folder

if TYPE_CHECKING:  # pandas is imported where a plan is printed, not when jobs are sized
    pass


# Parameters of the models the shipped configs name, for hub ids that are not on disk here
# (a local model folder is counted from its safetensors header instead).
KNOWN_PARAMETERS = {
    "sentence-transformers/all-MiniLM-L6-v2": 22_713_216,
    "BAAI/bge-large-en-v1.5": 335_141_888,
    "Qwen/Qwen3-Embedding-0.6B": 595_776_512,
}


KNOWN_DIMENSIONS = {
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "BAAI/bge-large-en-v1.5": 1024,
    "Qwen/Qwen3-Embedding-0.6B": 1024,
}


BYTES = {"float32": 4, "float16": 2}


CHECKPOINT_BYTES_PER_PARAMETER = 4  # checkpoints are saved in float32


class CostError(ValueError):
    """A count or a model size the plan needs cannot be found offline; the message says what to set."""


@dataclass(frozen=True)
class DatasetSize:
    documents: int
    eval_queries: int
    source: str  # where the counts come from
    eval_judgments: int | None = None  # (query, document) judgments of the evaluation split, where known


# the workflow asks once per job; the answer only changes with the dataset's entry
_SIZES: dict[tuple, DatasetSize] = {}


def dataset_size(config: dict, name: str, eval_split: str) -> DatasetSize:
    """Documents and evaluation queries of a configured dataset, offline (subsampling applied)."""
    spec = config["datasets"][name]
    key = (config["results_dir"], name, json.dumps(spec, sort_keys=True), eval_split)
    if key not in _SIZES:
        _SIZES[key] = _dataset_size(config["results_dir"], name, spec, eval_split)
    return _SIZES[key]


def _dataset_size(results_dir: str, name: str, spec: dict, eval_split: str) -> DatasetSize:
    prepared = Path(results_dir) / "data" / name / "summary.json"
    if prepared.is_file():
        splits = io.read_json(prepared)["splits"]
        split = splits.get(eval_split, {})
        return DatasetSize(split.get("documents", 0), split.get("queries", 0), str(prepared), split.get("judged_pairs"))
    counts = source_of(name, spec).counts(name, spec, eval_split)
    if counts is None:
        raise CostError(
            f"dataset {name!r}: a {spec['source']['type']} source gives no count offline; prepare the dataset first"
        )
    docs, queries, judgments, where = counts.documents, counts.queries, counts.judgments, counts.where
    if docs is None:
        raise CostError(f"dataset {name!r}: its source gives no document count offline; prepare it first")
    subsample = spec.get("subsample") or {}
    if subsample.get("docs"):
        docs = min(docs, subsample["docs"])
    limit = (subsample.get("queries") or {}).get(eval_split)
    if limit and queries and judgments:
        judgments = round(judgments * min(1.0, limit / queries))  # the sampled queries' share of them
    if limit:
        queries = min(queries or limit, limit)
    return DatasetSize(int(docs), int(queries or 0), where, judgments)


def model_parameters(path: str) -> int:
    """Parameters of a model: from the safetensors headers of a local folder, else the known table."""
    folder = local_model_folder(path)
    files = sorted(folder.rglob("*.safetensors")) if folder else []
    if files:
        total = 0
        for file in files:
            header = io.read_safetensors_header(file)
            total += sum(math.prod(t["shape"]) for key, t in header.items() if key != "__metadata__")
        return total
    if path in KNOWN_PARAMETERS:
        return KNOWN_PARAMETERS[path]
    raise CostError(f"model {path!r}: not a local folder and not in opera.cost.KNOWN_PARAMETERS; set cost.throughput")


# Where a transformers config.json gives the hidden size, by model family (BERT, Qwen and most
# others; T5 and BART; DistilBERT; GPT-2): the embedding size under any of the poolings.
DIMENSION_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


def model_dimension(path: str) -> int:
    """The embedding size of a model: its config.json's hidden size, else the known table."""
    folder = local_model_folder(path)
    config = folder / "config.json" if folder else None
    if config and config.is_file():
        entry = io.read_json(config)
        found = next((entry[key] for key in DIMENSION_KEYS if isinstance(entry.get(key), int)), None)
        if found is None:
            raise CostError(
                f"{config}: no hidden size under any of {list(DIMENSION_KEYS)}; add its key to DIMENSION_KEYS"
            )
        return int(found)
    if path in KNOWN_DIMENSIONS:
        return KNOWN_DIMENSIONS[path]
    raise CostError(
        f"model {path!r}: its embedding size is unknown here (neither a local folder, nor in the local hub cache, "
        "nor in opera.cost.KNOWN_DIMENSIONS); check the path's spelling, or download the model first"
    )


@dataclass(frozen=True)
class Throughput:
    passages_per_s: float
    steps_per_s: float
    source: str


def throughput(config: dict, model: str) -> Throughput:
    """Passages encoded and training steps per second on one GPU of ``cost.gpu``: measured values
    from ``cost.throughput.<model>`` where the config gives them, else the FLOP estimate."""
    cost = config["cost"]
    measured = cost["throughput"].get(model)
    if measured:
        return Throughput(measured["passages_per_s"], measured["steps_per_s"], "measured (config cost.throughput)")
    settings = model_settings(config, model)
    params = model_parameters(settings.encoder.path)
    flops = gpu_peak_tflops()[cost["gpu"]] * 1e12 * cost["utilization"]
    passage_flops = 2 * params * settings.encoder.passage_max_length  # forward pass, padded to the max length
    tokens_per_step = settings.batch_size * (
        settings.encoder.query_max_length + settings.group_size * settings.encoder.passage_max_length
    )
    # 2 params x tokens for a forward pass, 4 for its backward; gradient checkpointing forwards once
    # more in the backward, and gradient caching once more before it (opera.training.gradcache)
    passes = 6 + (2 if settings.gradient_checkpointing else 0) + (2 if settings.mini_batch_size else 0)
    step_flops = params * tokens_per_step * passes
    return Throughput(
        flops / passage_flops,
        flops / step_flops,
        f"assumed: {params / 1e6:.0f}M parameters at {cost['utilization']:.0%} of {cost['gpu']} peak "
        f"{gpu_peak_tflops()[cost['gpu']]} TFLOP/s",
    )
