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

from opera.config import (  # config's: workflow_scripts/download.py and prune.py read them here
    global_batch,
    global_batches,
)
from opera.cost.plan import curve_plans, curve_variants, format_plan, human_bytes, job_counts, plan_rows, pool_documents
from opera.cost.resources import job_resources
from opera.cost.sizes import (
    BYTES,
    KNOWN_DIMENSIONS,
    KNOWN_PARAMETERS,
    CostError,
    DatasetSize,
    Throughput,
    dataset_size,
    model_dimension,
    model_parameters,
    throughput,
)

# global_batch and global_batches stay importable here: editing a workflow script to import them from
# config would rerun its rule in every existing results folder
__all__ = [
    "BYTES",
    "KNOWN_DIMENSIONS",
    "KNOWN_PARAMETERS",
    "CostError",
    "DatasetSize",
    "Throughput",
    "curve_plans",
    "curve_variants",
    "dataset_size",
    "format_plan",
    "global_batch",
    "global_batches",
    "human_bytes",
    "job_counts",
    "job_resources",
    "model_dimension",
    "model_parameters",
    "plan_rows",
    "pool_documents",
    "throughput",
]
