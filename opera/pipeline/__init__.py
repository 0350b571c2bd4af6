"""The pipeline's stages, one function each: download, score, prune, finetune, index, evaluate, aggregate.

Each function reads its inputs from files, calls the concern modules (data, encoders, scoring,
pruning, training, index, metrics, aggregate, plots) and writes its outputs atomically. The
Snakemake workflow scripts only translate ``snakemake.input/output/params`` into keyword calls of
these functions, and the ``opera`` CLI calls the same functions, so the library runs with or
without Snakemake. Process-wide job set-up (log files, threads, signals) is opera.job's.

The modules group the stages: ``data_stages`` (download, score, validation_pool, prune, mine),
``train_stages`` (finetune, publish), ``eval_stages`` (index, evaluate, aggregate). ``stage_params``
declares what each stage takes from the config, once, for the rules, the scripts and the CLI.
"""

from opera.errors import StageError
from opera.models.checkpoints import is_published_checkpoint, model_identity
from opera.pipeline.data_stages import download, mine, prune, score, validation_pool
from opera.pipeline.eval_stages import aggregate, evaluate, index
from opera.pipeline.train_stages import finetune, finetune_job, prune_and_finetune, publish

__all__ = [
    "StageError",
    "aggregate",
    "download",
    "evaluate",
    "finetune",
    "finetune_job",
    "index",
    "is_published_checkpoint",
    "mine",
    "model_identity",
    "prune",
    "prune_and_finetune",
    "publish",
    "score",
    "validation_pool",
]
