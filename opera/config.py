"""Configuration: schema validation (with defaults), registry resolution and the derived grid.

Both the Snakefile and the ``opera`` CLI go through :func:`validate_config`, so a bad config stops
before any job with the key path of the problem and the allowed values.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from opera import methods
from opera.settings import ModelSettings

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SCHEMA_PATH = PROJECT_DIR / "config" / "schema.yaml"
REGISTRY_PATH = PACKAGE_DIR / "registry.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key path and the allowed values."""


@cache
def load_registry() -> dict:
    with open(REGISTRY_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@cache
def _load_schema() -> dict:
    """config/schema.yaml, with the method enum taken from the method registry (opera.methods)."""
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    schema["properties"]["methods"]["items"]["enum"] = methods.names()
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
    if error.validator == "enum":
        return f"config key '{where}': {error.instance!r} is not allowed; allowed values: {schema['enum']}"
    return f"config key '{where}': {error.message}"


def validate_config(config: dict) -> dict:
    """Validate ``config`` in place against config/schema.yaml, fill defaults, resolve registry entries.

    Returns the same dict, with ``datasets`` and ``models`` replaced by fully resolved entries.
    """
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
    trained = trained_methods(config)
    for name, dataset in config["datasets"].items():
        if trained and "train" not in dataset["splits"]:
            raise ConfigError(
                f"config key 'datasets.{name}.splits': {dataset['splits']} has no 'train' split, but methods "
                f"{trained} finetune on it; add a train split or use methods: [pretrain]"
            )
    # Sorted keys everywhere: Snakemake compares params by their text, so the same settings written
    # in another key order must not look like a change (and rerun everything).
    canonical = _sorted_dicts(config)
    config.clear()
    config.update(canonical)
    return config


def _check_dataset_sources(datasets: dict) -> None:
    """What a dry run can know about each source: ir_datasets ids are registered (offline)."""
    from opera.data import DataError, check_ir_datasets_ids  # opera.data imports this module

    for name, dataset in datasets.items():
        try:
            check_ir_datasets_ids(name, dataset)
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
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
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


def resolve_model(name: str, overrides: dict | None = None) -> dict:
    """The registry entry for ``name`` merged with ``overrides``; a new name needs a ``path`` and
    inherits every other field from all-MiniLM-L6-v2's entry."""
    known = load_registry()["models"]
    overrides = overrides or {}
    if name not in known and "path" not in overrides:
        raise ConfigError(
            f"config key 'models.{name}': unknown model {name!r} and no 'path' given; known models: {sorted(known)}"
        )
    return _merge(known.get(name, known["all-MiniLM-L6-v2"]), overrides)


def model_settings(config: dict, name: str) -> ModelSettings:
    """The typed settings of a resolved model entry."""
    return ModelSettings.from_dict(config["models"][name])


def trained_methods(config: dict) -> list[str]:
    """The config's methods that finetune (all but the pretrained baseline), in config order."""
    return [name for name in config["methods"] if methods.get(name).trains]


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
    """One evaluated retriever: a (dataset, model, method, seed, step) cell of the grid."""

    dataset: str
    model: str
    method: str
    seed: int | None = None
    step: int | None = None

    # The run id below {dataset}/{model}/ in every stage's paths: 'pretrain' or 'dp/seed42/step300'.
    ID_PATTERN = r"pretrain|[a-z_]+/seed\d+/step\d+"

    @property
    def run_id(self) -> str:
        if not methods.get(self.method).trains:
            return self.method
        return f"{self.method}/seed{self.seed}/step{self.step}"

    @classmethod
    def from_id(cls, dataset: str, model: str, run_id: str) -> EvaluatedRun:
        """The inverse of :attr:`run_id`."""
        if not re.fullmatch(cls.ID_PATTERN, run_id):
            raise ValueError(f"not a run id: {run_id!r} (expected 'pretrain' or '<method>/seed<N>/step<N>')")
        if "/" not in run_id:
            return cls(dataset, model, run_id)
        method, seed, step = run_id.split("/")
        return cls(dataset, model, method, int(seed[len("seed") :]), int(step[len("step") :]))


def grid(config: dict) -> list[EvaluatedRun]:
    runs = []
    for dataset in config["datasets"]:
        for model_name in config["models"]:
            steps = model_settings(config, model_name).checkpoint_steps()
            for method in config["methods"]:
                if not methods.get(method).trains:
                    runs.append(EvaluatedRun(dataset, model_name, method))
                    continue
                for seed in config["seeds"]:
                    for step in steps:
                        runs.append(EvaluatedRun(dataset, model_name, method, seed, step))
    return runs


def method_params(config: dict, method: str) -> dict:
    """The parameters that affect one method (and nothing else), for Snakemake's params trigger."""
    key = methods.get(method).params_key
    return dict(config["method_params"][key]) if key else {}
