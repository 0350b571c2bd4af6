"""What a config's grid costs before it is submitted: jobs, passages encoded, bytes and GPU-hours.

Counts come from the prepared data where it exists, else from the source without reading it:
ir_datasets' bundled metadata (``docs_count()``, ``queries_count()``), or the line count of a local
file. Time comes from a throughput table: measured values from the config's ``cost.throughput``
(``bench/gpu_check.sh`` prints them for a GPU) or, where none is given, a stated assumption: the
model's FLOPs per passage or per training step at ``cost.utilization`` of the GPU's peak dense
bf16 FLOP/s (the registry's ``gpus``). Every assumption is printed beside the plan.

The same numbers size the workflow's resource requests (:func:`job_resources`), which grow with
Snakemake's ``attempt`` on retries.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opera import io, methods

# global_batch and global_batches are config's; workflow_scripts/download.py and prune.py read them
# here, and editing a workflow script reruns its rule in every existing results folder
from opera.config import (  # noqa: F401  (global_batches: re-exported for those scripts)
    EvaluatedRun,
    eval_split,
    evaluation_of,
    finetune_gpus,
    global_batch,
    global_batches,
    gpu_peak_tflops,
    grid,
    method_params,
    model_settings,
    resources_of,
    trained_methods,
)
from opera.data.sources import source_of
from opera.methods import pruning
from opera.preflight import local_model_folder
from opera.settings import PoolSettings

if TYPE_CHECKING:  # pandas is imported where a plan is printed, not when jobs are sized
    import pandas as pd


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

log = logging.getLogger(__name__)

BYTES = {"float32": 4, "float16": 2}
CHECKPOINT_BYTES_PER_PARAMETER = 4  # checkpoints are saved in float32


class CostError(ValueError):
    """A count or a model size the plan needs cannot be found offline; the message says what to set."""


# --- sizes ------------------------------------------------------------------------------------------


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


# --- throughput -------------------------------------------------------------------------------------


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


# --- the plan ---------------------------------------------------------------------------------------


def _checkpoint_runs(runs: list[EvaluatedRun]) -> list[EvaluatedRun]:
    return [r for r in runs if methods.get(r.method).trains]


def plan_rows(config: dict) -> list[dict]:
    """One row per dataset x model: jobs, passages encoded, bytes and GPU-hours."""
    runs = grid(config)
    rows = []
    for dataset in config["datasets"]:
        split = eval_split(config["datasets"][dataset], evaluation_of(config).split)
        size = dataset_size(config, dataset, split)
        for model in config["models"]:
            settings = model_settings(config, model)
            cells = [r for r in runs if r.dataset == dataset and r.model == model]
            indexed = _checkpoint_runs(cells)
            trainings = {(r.method, r.seed, r.budget) for r in indexed}
            dim = model_dimension(settings.encoder.path)
            params = model_parameters(settings.encoder.path)
            store = size.documents * dim * BYTES[evaluation_of(config).embedding_dtype]
            checkpoints = sum(len(_steps_saved(settings, budget)) for _, _, budget in trainings)
            speed = throughput(config, model)
            pool = pool_documents(config, size) if settings.validate_every else 0
            validations = sum(len(_validations(settings, budget)) for _, _, budget in trainings)
            passages = size.documents * (1 + len(indexed)) + pool * validations
            steps = sum(budget for _, _, budget in trainings)
            search_flops = 2.0 * size.eval_queries * dim * (size.documents * len(cells) + pool * validations)
            gpu_seconds = (
                passages / speed.passages_per_s
                + steps / speed.steps_per_s * settings.gpus
                + search_flops / (gpu_peak_tflops()[config["cost"]["gpu"]] * 1e12 * config["cost"]["utilization"])
            )
            concurrent = min(len(indexed), config["cost"]["concurrent_jobs"])
            kept = store + checkpoints * params * CHECKPOINT_BYTES_PER_PARAMETER
            index_job = job_resources(config, "index", dataset, model) if indexed else {"gpu": 0, "runtime": 0}
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "documents": size.documents,
                    "index_job": f"{index_job['gpu']} GPU x {index_job['runtime'] / 60:.1f} h",
                    "finetune_jobs": len(trainings),
                    "index_jobs": len(indexed),
                    "evaluate_jobs": len(cells),
                    "pool_documents": pool,
                    "validations": validations,
                    "passages_encoded": passages,
                    "store_bytes": store,
                    "checkpoint_bytes": checkpoints * params * CHECKPOINT_BYTES_PER_PARAMETER,
                    "kept_bytes": kept,
                    "peak_disk_bytes": kept + concurrent * store,
                    "peak_disk_keep_bytes": kept + len(indexed) * store,
                    "gpu_hours": gpu_seconds / 3600,
                    "counts_from": size.source,
                    "throughput_from": speed.source,
                }
            )
    return rows


def _steps_saved(settings, budget: int) -> list[int]:
    return [s for s in settings.checkpoint_steps() if s <= budget] if budget == settings.max_steps else [budget]


def _validations(settings, budget: int) -> list[int]:
    """The validated steps of a run of ``budget`` steps (its schedules end there)."""
    return dataclasses.replace(settings, max_steps=budget).validation_steps()


def pool_documents(config: dict, size: DatasetSize) -> int:
    """The validation pool's size (opera.retrieval.validation), estimated before it is built: the evaluation
    split's judgments (every judged document, at most), each validation query's top candidates (at
    most; they overlap the judged ones), and the random sample; at most the corpus."""
    block = config["validation"]
    queries = min(size.eval_queries, block["queries"] or size.eval_queries)
    judged = size.eval_judgments or 0
    if block["queries"] and size.eval_queries:
        judged = round(judged * queries / size.eval_queries)
    random = PoolSettings.from_dict(block).random_count(size.documents)
    return min(size.documents, judged + queries * block["candidates"] + random)


def curve_variants(config: dict) -> dict[str, dict]:
    """The config with every curve point (each model's validate_every, else its eval_every) either
    evaluated exactly on the full corpus (``exact``: eval_every at that interval, no pool) or
    validated on the pool with only each run's last step evaluated exactly (``pool``)."""
    variants = {}
    for name in ("exact", "pool"):
        variant = copy.deepcopy(config)
        for entry in variant["models"].values():
            every = entry.get("validate_every") or entry["eval_every"]
            entry["eval_every"] = entry["max_steps"] if name == "pool" else every
            entry["validate_every"] = every if name == "pool" else None
        variants[name] = variant
    return variants


def curve_plans(config: dict, variants: dict[str, dict] | None = None) -> pd.DataFrame:
    """Per dataset x model, passages encoded, GPU-hours and peak disk of both :func:`curve_variants`
    (``variants``, when the caller has them already)."""
    import pandas as pd

    frames = []
    for name, variant in (variants or curve_variants(config)).items():
        rows = pd.DataFrame(plan_rows(variant))
        frames.append(rows.assign(curves=name))
    return pd.concat(frames, ignore_index=True)


def _pair_subset(config: dict, model: str, method: str, seed: int) -> str:
    """The pair set a run trains on (opera.methods.pruning.subset): one per seed for a seeded pruner."""
    return pruning.subset(method, pruning.run_params(method, method_params(config, method, model), seed))


def job_counts(config: dict) -> Counter:
    """Jobs per stage, as the workflow plans them (the DAG's own count is `snakemake -n`)."""
    runs = grid(config)
    trained = _checkpoint_runs(runs)
    counts = Counter()
    counts["download"] = len(config["datasets"])
    counts["score"] = len(config["datasets"]) * len(config["models"])
    pruned = {(r.dataset, r.model, r.method, _pair_subset(config, r.model, r.method, r.seed)) for r in trained}
    counts["prune"] = len(pruned)
    counts["mine"] = sum(
        1 for _, model, method, _ in pruned if method_params(config, method, model).get("mine_after_prune")
    )
    counts["finetune"] = len({(r.dataset, r.model, r.method, r.seed, r.budget) for r in trained})
    counts["publish"] = counts["finetune"]  # each finished run's checkpoints, with model cards
    pools = sum(1 for _ in config["datasets"] for m in config["models"] if model_settings(config, m).validate_every)
    if trained and pools:  # only a config that validates has the stage
        counts["validation_pool"] = pools
    counts["index"] = len(trained)
    counts["evaluate"] = len(runs)
    counts["aggregate"] = 1
    return counts


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def format_plan(config: dict) -> str:
    """The plan as the `opera plan` command prints it: a table per dataset x model, totals and the
    assumptions the numbers rest on."""
    import pandas as pd

    rows = plan_rows(config)
    table = pd.DataFrame(rows)
    shown = table[["dataset", "model", "documents", "finetune_jobs", "index_jobs", "evaluate_jobs"]].copy()
    shown["passages encoded"] = table["passages_encoded"].map("{:,}".format)
    shown["embeddings per index"] = table["store_bytes"].map(human_bytes)
    shown["checkpoints"] = table["checkpoint_bytes"].map(human_bytes)
    shown["peak disk"] = table["peak_disk_bytes"].map(human_bytes)
    shown["peak disk (keep_embeddings)"] = table["peak_disk_keep_bytes"].map(human_bytes)
    shown["GPU-hours"] = table["gpu_hours"].map("{:,.1f}".format)
    if resources_of(config).gpu:
        shown["index job asks"] = table["index_job"]
    counts = job_counts(config)
    cost = config["cost"]
    # at most concurrent_jobs stores exist at once over the whole grid; at worst the largest ones
    in_flight = table["store_bytes"].repeat(table["index_jobs"]).nlargest(cost["concurrent_jobs"]).sum()
    lines = [
        shown.to_string(index=False),
        "",
        "jobs: " + ", ".join(f"{stage} {n:,}" for stage, n in counts.items()) + f" (total {sum(counts.values()):,})",
        f"total: {table['passages_encoded'].sum():,} passages encoded, "
        f"{table['gpu_hours'].sum():,.1f} GPU-hours on {cost['gpu']}, peak disk "
        f"{human_bytes(table['kept_bytes'].sum() + in_flight)} "
        f"({human_bytes(table['peak_disk_keep_bytes'].sum())} with evaluation.keep_embeddings)",
        "",
        "assumptions:",
        f"- counts: {'; '.join(sorted(set(table['counts_from'])))}",
    ]
    for model in config["models"]:
        lines.append(f"- {model}: {throughput(config, model).source}")
        settings = model_settings(config, model)
        if trained_methods(config):
            gpus = max(1, finetune_gpus(config, model))
            caching = (
                f", gradient caching in mini-batches of {settings.mini_batch_size} queries (one more forward a step)"
                if settings.mini_batch_size
                else ""
            )
            lines.append(
                f"- {model}: global batch {global_batch(config, model)} queries = batch_size {settings.batch_size} "
                f"x {gpus} process{'es' if gpus > 1 else ''}{caching}"
            )
    lines += [
        f"- embeddings stored as {config['evaluation']['embedding_dtype']}; checkpoints as float32; "
        f"at most cost.concurrent_jobs={cost['concurrent_jobs']} checkpoint embeddings exist at once "
        "when they are deleted once evaluated",
        "- peak disk per row: its data kept (base-model embeddings, checkpoints) plus its checkpoint "
        "embeddings in flight; the total counts the grid's largest in-flight ones once",
        "- index job asks: the GPUs and time limit one index job requests (resources.encode_gpus, runtime)",
        "- GPU-hours: corpus encoding (score and index, at the passage max length) + training steps x the "
        "model's gpus + exact search; model loading, data preparation and queueing are not counted",
    ]
    if trained_methods(config):
        lines += ["", *_curve_lines(config)]
    return "\n".join(lines)


def _curve_lines(config: dict) -> list[str]:
    """The plan's second part: the learning curves' points evaluated exactly vs validated on the pool."""
    variants = curve_variants(config)
    plans = curve_plans(config, variants)
    own = {
        name
        for name, variant in variants.items()
        if all(model_settings(variant, m) == model_settings(config, m) for m in config["models"])
    }
    shown = plans[["curves", "dataset", "model", "pool_documents", "validations", "index_jobs"]].copy()
    shown["curves"] = shown["curves"].map(lambda name: name + (" (this config)" if name in own else ""))
    shown["passages encoded"] = plans["passages_encoded"].map("{:,}".format)
    shown["peak disk"] = plans["peak_disk_bytes"].map(human_bytes)
    shown["GPU-hours"] = plans["gpu_hours"].map("{:,.1f}".format)
    totals = plans.groupby("curves", sort=False)[["passages_encoded", "gpu_hours", "kept_bytes"]].sum()
    exact, pool = totals.loc["exact"], totals.loc["pool"]
    return [
        "learning curves, the same points either way (each model's validate_every, else eval_every): "
        "exact = every point's checkpoint indexed and evaluated on the full corpus; pool = every point "
        "validated on the validation pool inside the finetune job (opera.retrieval.validation) and only each run's "
        "last checkpoint evaluated on the full corpus (the result tables are the same in both)",
        shown.to_string(index=False),
        f"total exact: {int(exact['passages_encoded']):,} passages, {exact['gpu_hours']:,.1f} GPU-hours; "
        f"pool: {int(pool['passages_encoded']):,} passages, {pool['gpu_hours']:,.1f} GPU-hours "
        f"({exact['passages_encoded'] / max(pool['passages_encoded'], 1):.1f}x fewer passages, "
        f"{exact['gpu_hours'] / max(pool['gpu_hours'], 1e-9):.1f}x fewer GPU-hours)",
        "- pool documents: estimated before the pool exists: the evaluation split's judgments + "
        f"validation queries x validation.candidates ({config['validation']['candidates']}) + validation.random "
        f"({config['validation']['random']}), at most the corpus; the pool report (validation_pool.json) "
        "has the real size",
    ]


# --- resources of one job ----------------------------------------------------------------------------


def job_resources(config: dict, stage: str, dataset: str | None, model: str | None, attempt: int = 1) -> dict:
    """mem_mb, runtime (minutes) and gpu of one job. The config's `resources` are the floor; the
    plan raises them to what the job needs: a corpus-encoding job (score, index) takes as many GPUs
    as bring its encoding under `resources.runtime`, at most `resources.encode_gpus`, and memory
    for one shard per GPU. Memory and runtime are multiplied by ``attempt`` (a retry asks for more)."""
    base = resources_of(config)
    finetune = stage == "finetune"
    mem = base.finetune_mem_mb if finetune else base.mem_mb
    runtime = base.finetune_runtime if finetune else base.runtime
    if stage in {"score", "index", "evaluate", "finetune"}:
        return _model_job_resources(config, stage, dataset, model, mem, runtime, attempt)
    return {"mem_mb": int(mem * attempt), "runtime": int(runtime * attempt), "gpu": 0}


# datasets already warned about: the workflow sizes each job, and one line per dataset is enough
_UNSIZED: set[str] = set()


def _model_job_resources(
    config: dict, stage: str, dataset: str, model: str, mem: int, runtime: int, attempt: int
) -> dict:
    """:func:`job_resources` of a job that loads the model."""
    settings = model_settings(config, model)
    try:
        size = dataset_size(config, dataset, _eval_split(config, dataset))
    except CostError as exc:  # a source counted only once prepared (hf, ir_datasets without metadata)
        if dataset not in _UNSIZED:
            log.warning("%s: its %s jobs ask for the config's resources until it is prepared", exc, stage)
            _UNSIZED.add(dataset)
        gpus = (finetune_gpus(config, model) if stage == "finetune" else 1) if resources_of(config).gpu else 0
        return {"mem_mb": int(mem * attempt), "runtime": int(runtime * attempt), "gpu": gpus}
    gpus = 0
    if resources_of(config).gpu:
        gpus, minutes = _gpu_time(config, stage, settings, size, model)
        runtime = max(runtime, math.ceil(2 * minutes) + 15)  # twice the estimate, plus loading
    shard = min(evaluation_of(config).shard_passages, size.documents)
    try:
        dim = model_dimension(settings.encoder.path)
    except CostError as exc:  # sized while Snakemake schedules the job: name the key to fix
        raise CostError(f"config key 'models.{model}.path': {exc}") from None
    # per process: a shard's texts (~1 KB each), token ids (64 B a token as Python ints) and
    # embeddings (3 copies); the model's weights and libraries in the 4 GB
    per_passage = 1000 + 64 * settings.encoder.passage_max_length + 12 * dim
    mem = max(mem, 4000 + max(gpus, 1) * (shard * per_passage // 2**20))
    return {"mem_mb": int(mem * attempt), "runtime": int(runtime * attempt), "gpu": gpus}


def _gpu_time(config: dict, stage: str, settings, size: DatasetSize, model: str) -> tuple[int, float]:
    """(GPUs, estimated minutes) of one job on the throughput table's GPUs."""
    base = resources_of(config)
    speed = throughput(config, model)
    if stage == "finetune":
        return finetune_gpus(config, model), settings.max_steps / speed.steps_per_s / 60
    if stage == "evaluate":  # exact search at ~1 TFLOP/s (faiss on one GPU does far better)
        return 1, size.eval_queries * size.documents * model_dimension(settings.encoder.path) * 2 / 1e12 / 60
    one_gpu = size.documents / speed.passages_per_s / 60
    gpus = min(base.encode_gpus, max(1, math.ceil(2 * one_gpu / max(base.runtime - 15, 1))))
    return gpus, one_gpu / gpus


def _eval_split(config: dict, dataset: str) -> str:
    return eval_split(config["datasets"][dataset], evaluation_of(config).split)
