"""The plan of a config's grid (`opera plan`): jobs, passages encoded, bytes and GPU-hours per
dataset x model, and the learning curves priced exactly and on a validation pool."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import TYPE_CHECKING

from opera import methods
from opera.config import (
    EvaluatedRun,
    eval_split,
    evaluation_of,
    finetune_gpus,
    global_batch,
    gpu_peak_tflops,
    grid,
    method_params,
    model_settings,
    resources_of,
    trained_methods,
)
from opera.cost.resources import job_resources
from opera.cost.sizes import (
    BYTES,
    CHECKPOINT_BYTES_PER_PARAMETER,
    DatasetSize,
    dataset_size,
    model_dimension,
    model_parameters,
    throughput,
)
from opera.methods import pruning
from opera.settings import PoolSettings

if TYPE_CHECKING:  # pandas is imported where a plan is printed, not when jobs are sized
    import pandas as pd


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


def job_counts(config: dict) -> Counter:
    """Jobs per stage, as the workflow plans them (the DAG's own count is `snakemake -n`)."""
    runs = grid(config)
    trained = _checkpoint_runs(runs)
    counts = Counter()
    counts["download"] = len(config["datasets"])
    counts["score"] = len(config["datasets"]) * len(config["models"])
    pruned = {
        (r.dataset, r.model, r.method, pruning.run_subset(r.method, method_params(config, r.method, r.model), r.seed))
        for r in trained
    }
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
