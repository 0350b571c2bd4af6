# Config validation, the grid, wildcard constraints and every path of the workflow.
import re

from snakemake.exceptions import WorkflowError

from opera import config as opera_config
from opera import cost as opera_cost
from opera.report import html_tables as opera_html_tables
from opera import data as opera_data
from opera import methods as method_registry
from opera import preflight
from opera.methods import pruning as opera_pruning
from opera.methods import sampling as opera_sampling
from opera.pipeline import stage_params as opera_stage_params

# Each config writes to its own folder (outputs, logs, benchmarks): results/<config file stem>
# (results/config for the embedded default) unless it sets results_dir, so configs never overwrite
# each other. workflow.configfiles: the --configfile files, else the embedded default.
EXPLICIT_RESULTS_DIR = "results_dir" in config
config.setdefault("results_dir", preflight.default_results_dir(workflow.configfiles))

try:
    # Validates against opera/schema.yaml (defaults filled in), resolves registry entries and checks
    # sources and model paths, so a bad config stops here, before any job, with the key path and the problem.
    opera_config.validate_config(config)
    # A folder named after the config file's stem is that file's: owner.json says who ran there first.
    OWNERS = preflight.config_names(workflow.configfiles)
    preflight.check_results_owner(config["results_dir"], OWNERS, EXPLICIT_RESULTS_DIR)
except opera_config.ConfigError as error:
    raise WorkflowError(str(error))


onstart:
    preflight.claim_results_dir(config["results_dir"], OWNERS)


DATASETS = list(config["datasets"])
MODELS = list(config["models"])
TRAINED_IN_CONFIG = opera_config.trained_methods(config)
SEEDS = list(config["seeds"])
RESOURCES = config["resources"]
EVAL_THREADS = RESOURCES["eval_threads"] or RESOURCES["threads"]  # index and evaluate jobs
RESULTS = config["results_dir"]


def _alternatives(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    model=_alternatives(MODELS),
    method=_alternatives(method_registry.trained()),
    seed=r"\d+",
    subset=r"all|seed\d+",
    budget=r"\d+",
    run=opera_config.EvaluatedRun.ID_PATTERN,


# --- paths: each written once; rules pass wildcard placeholders, input functions real values ------


def data_dir(dataset="{dataset}"):
    return f"{RESULTS}/data/{dataset}"


def log_file(name):
    """A job's log, under the config's results folder: log_file("download/{dataset}.log")."""
    return f"{RESULTS}/logs/{name}"


def benchmark_file(name):
    """A job's Snakemake benchmark (wall time, memory), under the config's results folder."""
    return f"{RESULTS}/benchmarks/{name}"


def download_inputs(wildcards):
    """The local files a dataset's source reads (shipped, BEIR folder, local hf copy): an edit reruns download."""
    return opera_data.source_files(wildcards.dataset, config["datasets"][wildcards.dataset])


def score_file(name, dataset="{dataset}", model="{model}"):
    return f"{RESULTS}/score/{dataset}/{model}/{name}"


def prune_file(name, dataset="{dataset}", model="{model}", method="{method}", subset="{subset}"):
    """A method's kept pairs; subset names the draw (opera.methods.pruning.subset): all, or seed{S}."""
    return f"{RESULTS}/prune/{dataset}/{model}/{method}/{subset}/{name}"


def finetune_dir(dataset="{dataset}", model="{model}", method="{method}", seed="{seed}", budget="{budget}"):
    """A finetune run of ``budget`` steps (the model's max_steps for the main run)."""
    return f"{RESULTS}/finetune/{dataset}/{model}/{method}/seed{seed}/budget{budget}"


def models_dir(dataset="{dataset}", model="{model}", method="{method}", seed="{seed}", budget="{budget}"):
    """A finetune run's evaluated checkpoints as model folders with model cards (rule publish)."""
    return f"{RESULTS}/models/{dataset}/{model}/{method}/seed{seed}/budget{budget}"


def finetune_work_dir(dataset, model, method, seed, budget):
    """Resume state of a running finetune job. Not an output: Snakemake would delete it before a
    rerun, and with it the resume state."""
    return f"{RESULTS}/finetune_work/{dataset}/{model}/{method}/seed{seed}/budget{budget}"


def run_file(stage, name, dataset="{dataset}", model="{model}", run="{run}"):
    """A file of one evaluated run (stage index or evaluate); run is an EvaluatedRun id."""
    return f"{RESULTS}/{stage}/{dataset}/{model}/{run}/{name}"


def checksums(*paths):
    """The .sha256 files opera.io writes beside checksummed outputs, declared as outputs too, so
    that storage plugins and runs without a shared file system carry them with their files."""
    return [f"{path}.sha256" for path in paths]


def table_file(name):
    return f"{RESULTS}/tables/{name}"


def plot_file(dataset, model, kind, ext):
    return f"{RESULTS}/plots/{dataset}__{model}__{kind}.{ext}"


# --- params: what each job needs from the config, and nothing else (a change reruns the job) ------


def stage_params(stage):
    """The stage's params, one wildcard function each, as opera/pipeline/stage_params.py declares
    them (the CLI reads the same table); a rule adds only its paths."""
    return {
        name: (lambda wildcards, name=name: opera_stage_params.STAGES[stage][name].derive(config, wildcards))
        for name in opera_stage_params.STAGES[stage]
    }


def evaluated_run(wildcards):
    return opera_config.EvaluatedRun.from_id(wildcards.dataset, wildcards.model, wildcards.run)


def checkpoint_of(wildcards):
    """The checkpoint folder an index or evaluate job encodes with; None for the base model."""
    run = evaluated_run(wildcards)
    if not method_registry.get(run.method).trains:
        return None
    return f"{finetune_dir(run.dataset, run.model, run.method, run.seed, run.budget)}/step{run.step}"


# --- inputs and params of finetune ---


def pair_subset(model, method, seed):
    """Which of the method's pair sets a run of ``seed`` trains on (opera.methods.pruning.subset)."""
    return opera_pruning.run_subset(method, opera_config.method_params(config, method, model), seed)


def mines_after_prune(wildcards):
    """Whether the method's negatives are mined again after its pruning (rule mine)."""
    return opera_config.method_params(config, wildcards.method, wildcards.model).get("mine_after_prune", False)


def finetune_inputs(wildcards):
    """Known positives (masked as in-batch negatives) and hard negatives: the scored ones, or, for a
    method that mines after pruning, its kept pairs and its own negatives (docs/comparability.md D6)."""
    subset = pair_subset(wildcards.model, wildcards.method, int(wildcards.seed))
    kept = prune_file("pairs.parquet", wildcards.dataset, wildcards.model, wildcards.method, subset)
    after_prune = mines_after_prune(wildcards)
    validating = validates(wildcards.model)
    pool = {"pool": score_file("validation_pool.parquet", wildcards.dataset, wildcards.model)} if validating else {}
    return pool | {
        "data": data_dir(wildcards.dataset),
        "pairs": kept if after_prune else score_file("pairs.parquet", wildcards.dataset, wildcards.model),
        "negatives": (
            prune_file("negatives.parquet", wildcards.dataset, wildcards.model, wildcards.method, subset)
            if after_prune
            else score_file("negatives.parquet", wildcards.dataset, wildcards.model)
        ),
        "kept_pairs": kept,
    }


# --- inputs and params of index ---


def corpus_store(path):
    """A checkpoint's corpus embeddings: a folder, deleted once evaluated unless the config keeps them."""
    return directory(path) if config["evaluation"]["keep_embeddings"] else temp(directory(path))


def query_embeddings(path):
    """A checkpoint's evaluation-query embeddings and their sidecar, kept as its corpus store is."""
    files = [path, *checksums(path)]
    return files if config["evaluation"]["keep_embeddings"] else [temp(f) for f in files]


def index_inputs(wildcards):
    """Only checkpoints are indexed: the base model's corpus embeddings are `score`'s."""
    run = evaluated_run(wildcards)
    if not method_registry.get(run.method).trains:
        raise ValueError(f"{wildcards.run}: the base model's corpus embeddings come from score, not index")
    return {
        "data": data_dir(run.dataset),
        "finetune": finetune_dir(run.dataset, run.model, run.method, run.seed, run.budget),
    }


# --- inputs and params of evaluate ---


def evaluate_inputs(wildcards):
    run = evaluated_run(wildcards)
    if not method_registry.get(run.method).trains:
        return {"data": data_dir(run.dataset), "index": score_file("corpus_embeddings", run.dataset, run.model)}
    inputs = index_inputs(wildcards)
    inputs["index"] = run_file("index", "corpus_embeddings", wildcards.dataset, wildcards.model, wildcards.run)
    inputs["queries"] = run_file("index", "query_embeddings.npy", wildcards.dataset, wildcards.model, wildcards.run)
    inputs["queries_checksum"] = checksums(inputs["queries"])  # a temp file lives while a job reads it
    return inputs


# --- inputs and params of aggregate ---


def run_metrics(wildcards):
    """metrics.json of every evaluated checkpoint of one finetune run (rule publish)."""
    this = (wildcards.dataset, wildcards.model, wildcards.method, int(wildcards.seed), int(wildcards.budget))
    return [
        run_file("evaluate", "metrics.json", run.dataset, run.model, run.run_id)
        for run in opera_config.grid(config)
        if (run.dataset, run.model, run.method, run.seed, run.budget) == this
    ]


def finetune_runs():
    """(dataset, model, method, seed, budget) of every finetune run in the grid."""
    return [
        (d, m, method, seed, budget)
        for d in DATASETS
        for m in MODELS
        for method in TRAINED_IN_CONFIG
        for seed in SEEDS
        for budget in opera_config.budget_steps(config, m, method)
    ]


def main_budget(model):
    return opera_config.model_settings(config, model).max_steps


def pruning_cards():
    """A pruning data card per dataset x model: what the score-pruning method (sp) keeps of the
    scored pairs, and query coverage from the first seed's train logs. None without training."""
    pruner = method_registry.score_pruned()[0]
    if pruner not in TRAINED_IN_CONFIG:  # the card shows what the config's own pruning keeps
        return []
    return [
        {
            "dataset": d,
            "model": m,
            "pruner": pruner,
            "score_pairs": score_file("pairs.parquet", d, m),
            "pruned_pairs": prune_file("pairs.parquet", d, m, pruner, pair_subset(m, pruner, config["seeds"][0])),
            "train_logs": {
                method: f"{finetune_dir(d, m, method, SEEDS[0], main_budget(m))}/train_log.jsonl"
                for method in TRAINED_IN_CONFIG
            },
        }
        for d in DATASETS
        for m in MODELS
    ]


def validates(model):
    """Whether the model's finetune runs validate on a pool (its validate_every)."""
    return bool(TRAINED_IN_CONFIG) and opera_config.model_settings(config, model).validate_every is not None


def pool_reports():
    """(dataset, model, validation_pool.json) of every cell whose runs validate on a pool."""
    return [(d, m, score_file("validation_pool.json", d, m)) for d in DATASETS for m in MODELS if validates(m)]


def pool_tables():
    """The pool's curves and time to quality (opera.retrieval.validation), when some run validates."""
    names = ["validation.csv", "time_to_quality_pool.csv"] if pool_reports() else []
    return [_report_table(name) for name in names]


def plot_files(ext):
    kinds = ["metric_vs_steps", "metric_vs_time"] + (
        ["training_time", "sampler_diagnostics"] if TRAINED_IN_CONFIG else []
    )
    kinds += ["pruning_card"] if pruning_cards() else []
    # schedules: only when some method's sampler traces one (opera.methods.sampling.Sampler.schedule_keys)
    if any(opera_sampling.schedule_keys(m) for m in TRAINED_IN_CONFIG):
        kinds.append("schedules")
    if any(len(opera_config.budget_steps(config, m, method)) > 1 for m in MODELS for method in TRAINED_IN_CONFIG):
        kinds.append("metric_vs_budget")
    pool = [plot_file(d, m, "metric_vs_steps_pool", ext) for d, m, _ in pool_reports()]
    return pool + [plot_file(d, m, kind, ext) for d in DATASETS for m in MODELS for kind in kinds]


def _report_plot(path):
    kind = path.rsplit("__", 1)[1].split(".")[0]
    return report(path, caption=f"../report/{kind}.rst", category="Plots")


def _report_table(name):
    """A table's CSV: offered for download in the report (its HTML page, below, shows it)."""
    stem = name.split(".")[0]
    return report(table_file(name), caption=f"../report/{stem}.rst", category="Table files (CSV)")


def _report_page(stem):
    """A table's HTML page (opera.report.html_tables): shown as a table in the report."""
    return report(table_file(f"{stem}.html"), caption=f"../report/{stem}.rst", category="Tables")


def job_resource(stage, name):
    """A job's mem_mb, runtime or gpu: the config's `resources` as a floor, sized by opera.cost from
    its dataset and model (GPUs only when resources.gpu), memory and runtime multiplied by the
    attempt when Snakemake retries it."""

    def request(wildcards, attempt):
        sized = opera_cost.job_resources(config, stage, wildcards.get("dataset"), wildcards.get("model"), attempt)
        return sized[name]

    return request


def metrics_files(name="metrics.json"):
    """One evaluate output of every run of the grid (metrics.json, or per_query.parquet)."""
    return [run_file("evaluate", name, run.dataset, run.model, run.run_id) for run in opera_config.grid(config)]
