"""Each job's request (mem_mb, runtime, gpu), sized by the plan above the config's `resources`
floor and raised with Snakemake's attempt on a retry."""

from __future__ import annotations

import logging
import math

from opera.config import eval_split, evaluation_of, finetune_gpus, model_settings, resources_of
from opera.cost.sizes import CostError, DatasetSize, dataset_size, model_dimension, throughput

log = logging.getLogger(__name__)


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
