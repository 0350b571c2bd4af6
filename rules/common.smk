# Config validation, the grid, wildcard constraints and path helpers shared by all rules.
import re

from snakemake.exceptions import WorkflowError

from opera import config as opera_config

try:
    # Validates against config/schema.yaml (defaults filled in) and resolves registry entries,
    # so a bad config stops here, before any job, with the key path and the allowed values.
    opera_config.validate_config(config)
except opera_config.ConfigError as error:
    raise WorkflowError(str(error))

DATASETS = list(config["datasets"])
MODELS = list(config["models"])
METHODS = list(config["methods"])
TRAINED = [m for m in METHODS if m != "pretrain"]
SEEDS = list(config["seeds"])
RES = config["resources"]
R = "results"


def _alternatives(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    model=_alternatives(MODELS),
    method=_alternatives(opera_config.TRAINED_METHODS),
    seed=r"\d+",
    step=r"\d+",
    run=r"pretrain|[a-z_]+/seed\d+/step\d+",


def model_settings(wildcards):
    return config["models"][wildcards.model]


def encoding_settings(wildcards):
    """Only what changes embeddings: a change here reruns scoring, indexing and evaluation."""
    settings = config["models"][wildcards.model]
    keys = ("path", "pooling", "padding_side", "query_instruction", "passage_instruction",
            "query_max_length", "passage_max_length", "encode_precision", "trust_remote_code")
    return {key: settings.get(key) for key in keys}


def eval_split(wildcards):
    return opera_config.eval_split(config["datasets"][wildcards.dataset], config["evaluation"]["split"])


def parse_run(run):
    """'pretrain' -> ('pretrain', None, None); 'dp/seed42/step300' -> ('dp', 42, 300)."""
    if run == "pretrain":
        return "pretrain", None, None
    method, seed, step = run.split("/")
    return method, int(seed[len("seed"):]), int(step[len("step"):])


def gpus_for(kind):
    """GPUs a job asks for: none unless the config enables them (resources.gpu)."""
    def request(wildcards):
        if not RES["gpu"]:
            return 0
        return config["models"][wildcards.model]["gpus"] if kind == "finetune" else 1
    return request


def metrics_files():
    return [
        f"{R}/evaluate/{run.dataset}/{run.model}/{run.run_id}/metrics.json"
        for run in opera_config.grid(config)
    ]
