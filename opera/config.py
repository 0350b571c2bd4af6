"""Configuration: schema validation (with defaults), registry resolution and the derived grid.

Both the Snakefile and the ``opera`` CLI go through :func:`validate_config`, so a bad config stops
before any job with the key path of the problem and the allowed values.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from opera import methods, preflight, tracking
from opera.errors import ConfigError  # raised here and by the checks this module calls
from opera.settings import POOLINGS, Evaluation, ModelSettings, PoolMetrics, Resources, Scoring, Validation

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR / "schema.yaml"  # package data: found the same from a checkout or an installed wheel
REGISTRY_PATH = PACKAGE_DIR / "registry.yaml"


@cache
def load_registry() -> dict:
    from opera import io  # lazy: numpy, pandas

    return io.read_yaml(REGISTRY_PATH)


def gpu_peak_tflops() -> dict[str, float]:
    """Peak dense bf16 TFLOP/s per GPU type (the registry's gpus): `cost.gpu` names one."""
    return load_registry()["gpus"]


@cache
def _load_schema() -> dict:
    """opera/schema.yaml, with the names its registries define: methods (opera.methods), GPU types
    (registry.yaml), poolings (opera.settings.POOLINGS) and dataset sources with their fields
    (opera.data.sources)."""
    from opera import io  # lazy: numpy, pandas
    from opera.data.sources import SOURCES  # lazy: pandas

    schema = io.read_yaml(SCHEMA_PATH)
    schema["definitions"]["model"]["properties"]["pooling"]["enum"] = list(POOLINGS)
    source = schema["definitions"]["dataset"]["properties"]["source"]["properties"]
    source["type"]["enum"] = sorted(SOURCES)
    for kind in SOURCES.values():
        source.update(kind.fields)
    schema["properties"]["methods"]["items"]["enum"] = methods.names()
    schema["properties"]["budget_methods"]["items"]["enum"] = methods.trained()
    schema["properties"]["cost"]["properties"]["gpu"]["enum"] = sorted(gpu_peak_tflops())
    per_model = schema["definitions"]["model"]["properties"]["method_params"]
    per_model.update(_without_defaults(schema["properties"]["method_params"]))
    return schema


def _without_defaults(schema: Any) -> Any:
    """A copy of a schema with every ``default`` removed (overrides must not fill in defaults)."""
    if isinstance(schema, dict):
        return {key: _without_defaults(value) for key, value in schema.items() if key != "default"}
    if isinstance(schema, list):
        return [_without_defaults(item) for item in schema]
    return schema


def _with_defaults(validator_class):
    """A jsonschema validator that also fills in `default` values (as Snakemake's validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _explain(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        return f"config key '{where}': unknown key(s) {extra}; allowed keys: {allowed}"
    if error.validator == "contains" and "const" in error.validator_value:
        return f"config key '{where}': {error.instance!r} must include {error.validator_value['const']!r}"
    if error.validator == "enum":
        return f"config key '{where}': {error.instance!r} is not allowed; allowed values: {schema['enum']}"
    return f"config key '{where}': {error.message}"


def validate_config(config: dict) -> dict:
    """Validate ``config`` in place against opera/schema.yaml, fill defaults, resolve registry entries.

    Returns the same dict, with ``datasets`` and ``models`` replaced by fully resolved entries.
    """
    preflight.coerce_command_line_values(config)
    pool_keys = sorted(config.get("validation") or {})  # as written, before defaults fill the block in
    errors = sorted(_Validator(_load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_explain(e) for e in errors))
    config["datasets"] = {name: resolve_dataset(name, spec) for name, spec in config["datasets"].items()}
    _check_dataset_sources(config["datasets"])
    config["models"] = {name: resolve_model(name, spec) for name, spec in config["models"].items()}
    for name in config["models"]:
        mining = model_settings(config, name).mining
        if mining.hi <= mining.lo:
            raise ConfigError(f"config key 'models.{name}.mining': hi ({mining.hi}) must exceed lo ({mining.lo})")
    preflight.check_models(config["models"])
    preflight.check_results_dir(config["results_dir"])
    preflight.check_evaluation_depth(evaluation_of(config))
    trained = trained_methods(config)
    unknown = sorted(set(config["cost"]["throughput"]) - set(config["models"]))
    if unknown:
        raise ConfigError(
            f"config key 'cost.throughput': {unknown} are not models of this config ({list(config['models'])})"
        )
    absent = sorted(set(config.get("budget_methods") or []) - set(trained))
    if absent:
        raise ConfigError(f"config key 'budget_methods': {absent} are not finetuned methods of this config ({trained})")
    for name, dataset in config["datasets"].items():
        if trained and "train" not in dataset["splits"]:
            raise ConfigError(
                f"config key 'datasets.{name}.splits': {dataset['splits']} has no 'train' split, but methods "
                f"{trained} finetune on it; add a train split or use methods: [pretrain]"
            )
    absent = sorted(set(config["display_names"]) - set(config["methods"]))
    if absent:
        raise ConfigError(f"config key 'display_names': {absent} are not methods of this config ({config['methods']})")
    if missing := tracking.missing_backends(config["tracking"]["backends"]):
        raise ConfigError(
            f"config key 'tracking.backends': {missing} named but not installed (pip install {' '.join(missing)}), "
            "or take them out of the list"
        )
    for name, model in config["models"].items():  # a mini-batch as large as the batch caches nothing
        mini = model.get("mini_batch_size")
        if mini is not None and mini >= model["batch_size"]:
            raise ConfigError(
                f"config key 'models.{name}.mini_batch_size': {mini} is not below batch_size {model['batch_size']}, "
                "so gradient caching would change nothing; lower it, or remove it to encode the batch in one pass"
            )
    if pool_keys and not any(model.get("validate_every") for model in config["models"].values()):
        raise ConfigError(
            f"config key 'validation': {pool_keys} set, but no model sets validate_every, so no pool is built; "
            "set models.<model>.validate_every or remove the block"
        )
    check_batch_sizes(config)
    check_negatives(config)
    # Sorted keys everywhere: Snakemake compares params by their text, so the same settings written
    # in another key order must not look like a change (and rerun everything).
    canonical = _sorted_dicts(config)
    config.clear()
    config.update(canonical)
    return config


def _check_dataset_sources(datasets: dict) -> None:
    """What a dry run can know about each source: ir_datasets ids are registered (offline); local
    sources (shipped, BEIR folder, local hf copy) and their files exist."""
    from opera.data import DataError, check_source  # lazy: pandas, numpy

    for name, dataset in datasets.items():
        try:
            check_source(name, dataset)
        except DataError as exc:
            raise ConfigError(str(exc)) from exc


def _sorted_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_dicts(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_dicts(item) for item in value]
    return value


def load_config(path: str | Path) -> dict:
    path = Path(path)
    config = preflight.read_config_file(path)
    if isinstance(config, dict):
        config.setdefault("results_dir", preflight.default_results_dir([path]))
    try:
        return validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_dataset(name: str, overrides: dict | None = None) -> dict:
    """The registry entry for ``name`` merged with ``overrides``; a new name needs its own ``source``."""
    known = load_registry()["datasets"]
    overrides = overrides or {}
    if name not in known and "source" not in overrides:
        raise ConfigError(
            f"config key 'datasets.{name}': unknown dataset {name!r} and no 'source' given; "
            f"known datasets: {sorted(known)}"
        )
    entry = _merge(known.get(name, {}), overrides)
    entry.setdefault("splits", ["train", "dev", "test"])
    entry.setdefault("positive_threshold", {})
    return entry


# Settings a checkpoint cannot tell and a new model inherits from this entry, with a warning.
INHERITED_FROM = "all-MiniLM-L6-v2"
# Inherited settings not worth a warning: training defaults shared by every registry entry.
_QUIET_INHERITANCE = {
    "temperature",
    "warmup_ratio",
    "weight_decay",
    "grad_clip",
    "group_size",
    "gpus",
    "trust_remote_code",
    "mask_false_negatives",
    "train_append_eos",
}


def resolve_model(name: str, overrides: dict | None = None) -> dict:
    """The registry entry for ``name`` merged with ``overrides``.

    A new name needs a ``path``. A local sentence-transformers checkpoint fixes its own pooling,
    instructions (its saved prompts) and padding side unless the entry sets them; every other field
    comes from all-MiniLM-L6-v2's entry, and the ones that change what is computed are named in a
    warning, so a user sees which settings were not theirs."""
    known = load_registry()["models"]
    overrides = overrides or {}
    if name in known:
        return _merge(known[name], overrides)
    if "path" not in overrides:
        raise ConfigError(
            f"config key 'models.{name}': unknown model {name!r} and no 'path' given; known models: {sorted(known)}"
        )
    from opera.models import st_checkpoint

    own = {key: value for key, value in st_checkpoint.settings_of(overrides["path"]).items() if key not in overrides}
    entry = _merge(_merge(known[INHERITED_FROM], own), overrides)
    inherited = sorted(set(known[INHERITED_FROM]) - set(overrides) - set(own) - {"path"} - _QUIET_INHERITANCE)
    if inherited:
        logging.getLogger(__name__).warning(
            "config key 'models.%s': %s from the checkpoint; %s inherited from %s's entry: %s",
            name,
            ", ".join(f"{k}={v!r}" for k, v in sorted(own.items())) or "nothing read",
            "these settings are",
            INHERITED_FROM,
            ", ".join(f"{key}={entry[key]!r}" for key in inherited),
        )
    return entry


def model_settings(config: dict, name: str) -> ModelSettings:
    """The typed settings of a resolved model entry (its method_params are read by :func:`method_params`)."""
    entry = {key: value for key, value in config["models"][name].items() if key != "method_params"}
    return ModelSettings.from_dict(entry)


def trained_methods(config: dict) -> list[str]:
    """The config's methods that finetune (all but the pretrained baseline), in config order."""
    return [name for name in config["methods"] if methods.get(name).trains]


def finetune_gpus(config: dict, model: str) -> int:
    """The GPUs a finetune job of ``model`` asks for: the model's ``gpus`` when ``resources.gpu``, else none."""
    return model_settings(config, model).gpus if resources_of(config).gpu else 0


def global_batch(config: dict, model: str) -> int:
    """Distinct queries one training step of ``model`` draws: its batch_size on each of the finetune
    job's processes (one per GPU it holds, one without GPUs; opera.pipeline.finetune_job)."""
    return model_settings(config, model).batch_size * max(1, finetune_gpus(config, model))


def global_batches(config: dict) -> dict[str, int]:
    """Each model's :func:`global_batch`, for the models that finetune (none without a trained method)."""
    return {model: global_batch(config, model) for model in config["models"]} if trained_methods(config) else {}


def check_batch_sizes(config: dict) -> None:
    """A training step draws ``batch_size x GPUs`` distinct queries (:func:`global_batch`): every
    model that finetunes must draw no more than each dataset's train queries, where that number is
    known without running anything (opera.data.train_queries: a local source's qrels, or
    ``subsample.queries.train``). Other sources are checked once prepared (the download) and after pruning."""
    from opera.data import DataError, train_queries  # lazy: pandas, numpy

    if not trained_methods(config):
        return
    problems = []
    for name, spec in config["datasets"].items():
        try:
            known = train_queries(name, spec)
        except DataError as exc:
            raise ConfigError(f"config key 'datasets.{name}.source': {exc}") from exc
        if known is None:
            continue
        count, where = known
        more = f"datasets.{name}.subsample.queries.train" if "subsample" in where else f"datasets.{name}"
        for model in config["models"]:
            batch, gpus = global_batch(config, model), finetune_gpus(config, model)
            if batch <= count:
                continue
            drawn = f"batch_size {batch // max(gpus, 1)} x {gpus} GPUs = {batch}" if gpus > 1 else f"batch_size {batch}"
            problems.append(
                f"config key 'models.{model}.batch_size': a training step draws {batch} distinct queries "
                f"({drawn}), but 'datasets.{name}' has at most {count} train queries ({where}); lower "
                f"models.{model}.batch_size{' or its gpus' if gpus > 1 else ''} so that at most {count} are drawn, "
                f"or give {more} more train queries"
            )
    if problems:
        raise ConfigError("\n  ".join(problems))


def check_negatives(config: dict) -> None:
    """A training step must hold at least one negative: with a global batch of one query and
    group_size 1 (no hard negative) the InfoNCE loss has a single candidate, is 0 whatever the
    model, and training would learn nothing while reporting success."""
    if not trained_methods(config):
        return
    for model, entry in config["models"].items():
        if global_batch(config, model) == 1 and entry["group_size"] == 1:
            raise ConfigError(
                f"config keys 'models.{model}.batch_size' and 'models.{model}.group_size': a step of one query "
                "with its positive only (no in-batch and no hard negative) has a loss that cannot depend on the "
                "model; raise batch_size to 2 or more, or group_size to 2 or more"
            )


# --- the grid --------------------------------------------------------------------------------------


def eval_split(dataset: dict, choice: str = "auto") -> str:
    splits = dataset["splits"]
    if choice != "auto":
        if choice not in splits:
            raise ConfigError(f"evaluation.split is {choice!r} but the dataset has only {splits}")
        return choice
    for split in ("test", "dev"):
        if split in splits:
            return split
    raise ConfigError(f"dataset has no test or dev split to evaluate on (splits: {splits})")


@dataclass(frozen=True)
class EvaluatedRun:
    """One evaluated retriever: a (dataset, model, method, seed, budget, step) cell of the grid.

    ``budget`` is the length in steps of the finetuning run (its schedules end there); ``step`` is
    the checkpoint evaluated. The main run of a model has budget = max_steps and is evaluated at
    every checkpoint; the extra runs of ``budgets`` are evaluated at their last step.
    """

    dataset: str
    model: str
    method: str
    seed: int | None = None
    budget: int | None = None
    step: int | None = None

    # The run id below {dataset}/{model}/ in every stage's paths: 'pretrain' or 'dp/seed42/budget300/step100'.
    ID_PATTERN = r"pretrain|[a-z_]+/seed\d+/budget\d+/step\d+"

    @property
    def run_id(self) -> str:
        if not methods.get(self.method).trains:
            return self.method
        return f"{self.method}/seed{self.seed}/budget{self.budget}/step{self.step}"

    @classmethod
    def from_id(cls, dataset: str, model: str, run_id: str) -> EvaluatedRun:
        """The inverse of :attr:`run_id`."""
        if not re.fullmatch(cls.ID_PATTERN, run_id):
            raise ValueError(f"not a run id: {run_id!r} (expected 'pretrain' or '<method>/seed<N>/budget<N>/step<N>')")
        if "/" not in run_id:
            return cls(dataset, model, run_id)
        method, seed, budget, step = run_id.split("/")
        return cls(
            dataset, model, method, int(seed[len("seed") :]), int(budget[len("budget") :]), int(step[len("step") :])
        )


def validation_of(config: dict, dataset: str, model: str) -> Validation | None:
    """How a finetune run of ``model`` on ``dataset`` validates on its pool (opera.retrieval.validation), or
    None when the model has no ``validate_every``."""
    if model_settings(config, model).validate_every is None:
        return None
    return Validation(
        split=eval_split(config["datasets"][dataset], evaluation_of(config).split),
        scoring=PoolMetrics.from_evaluation(evaluation_of(config)),
        encode_batch_size=evaluation_of(config).encode_batch_size,
        title_join=config["data"]["title_join"],
    )


def budget_steps(config: dict, model: str, method: str) -> list[int]:
    """The run lengths (steps) a method is finetuned for: the model's max_steps (the main run), and
    for the methods of ``budget_methods`` every entry of ``budgets`` (a float: a fraction of
    max_steps; an int: steps), in increasing order without repeats."""
    max_steps = model_settings(config, model).max_steps
    steps = {max_steps}
    if method in (config.get("budget_methods") or trained_methods(config)):
        for budget in config["budgets"]:
            steps.add(max(1, round(budget * max_steps)) if isinstance(budget, float) else int(budget))
    return sorted(steps)


def grid(config: dict) -> list[EvaluatedRun]:
    """Every evaluated run: pretrain once; each trained method's main run at every checkpoint, and
    its budget runs at their last step."""
    runs = []
    for dataset in config["datasets"]:
        for model_name in config["models"]:
            settings = model_settings(config, model_name)
            for method in config["methods"]:
                if not methods.get(method).trains:
                    runs.append(EvaluatedRun(dataset, model_name, method))
                    continue
                for seed in config["seeds"]:
                    for budget in budget_steps(config, model_name, method):
                        steps = settings.checkpoint_steps() if budget == settings.max_steps else [budget]
                        for step in steps:
                            runs.append(EvaluatedRun(dataset, model_name, method, seed, budget, step))
    return runs


def method_params_with_defaults(method: str, params: dict | None = None) -> dict:
    """``params`` for ``method`` checked against the schema's ``method_params`` block and completed
    with its defaults, outside any config (opera.methods.samplers: a user's own training loop)."""
    key = methods.get(method).params_key
    if not key:
        if params:
            raise ConfigError(f"method {method!r} takes no params; got {sorted(params)}")
        return {}
    schema = _load_schema()
    block = {**schema["properties"]["method_params"], "definitions": schema["definitions"]}
    instance = {key: copy.deepcopy(dict(params or {}))}
    errors = sorted(_Validator(block).iter_errors(instance), key=lambda error: list(error.absolute_path))
    if errors:
        explained = (_explain(error).replace("config key '", "'method_params.", 1) for error in errors)
        raise ConfigError("\n  ".join(explained))
    return instance[key]


def method_params(config: dict, method: str, model: str | None = None) -> dict:
    """The parameters that affect one method (and nothing else), for Snakemake's params trigger:
    the top-level ``method_params`` block of its params key, overridden by the model's own."""
    key = methods.get(method).params_key
    if not key:
        return {}
    overrides = config["models"][model].get("method_params", {}).get(key, {}) if model else {}
    return {**config["method_params"][key], **overrides}


# --- typed blocks ----------------------------------------------------------------------------------
# A resolved config stays a plain dict (Snakemake passes it around and hashes it); code reads its
# blocks through these, as frozen dataclasses, never by string key.


def evaluation_of(config: dict) -> Evaluation:
    return Evaluation.of(config["evaluation"])


def scoring_of(config: dict) -> Scoring:
    return Scoring.of(config["scoring"])


def resources_of(config: dict) -> Resources:
    return Resources.of(config["resources"])
