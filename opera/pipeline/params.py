"""Each stage's parameters, declared once: what a stage takes from the config, and how.

``STAGES[stage]`` maps a parameter's name to a :class:`Param`: how its value follows from the
resolved config and the job's wildcards (dataset, model, method, seed, budget, subset, run), and
how the stage function takes it. Everything reads this table:

- the rule: ``params: **stage_params("score")`` in rules/*.smk (rules/common.smk builds one
  wildcard function per parameter); Snakemake records the values, so a change reruns the job;
- the workflow script passes each parameter to the stage function under its ``argument`` name
  (tests/test_stage_params.py checks every script, rule and signature against this table);
- the CLI and :func:`opera.pipeline.prune_and_finetune` call :func:`arguments`, so a command-line
  run takes the values a workflow job would.

Paths (inputs, outputs, work folders, checkpoints) are not parameters: the rule's path helpers in
rules/common.smk give them. Values are plain data, as Snakemake records them; ``typed`` turns one
into what the stage function takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from opera import config as opera_config
from opera import preflight
from opera.embedding_store import StoreLayout, layout_of
from opera.methods import get as method_entry
from opera.methods import pruning
from opera.settings import EncoderSettings, Evaluation, Mining, ModelSettings, PoolMetrics, PoolSettings


@dataclass(frozen=True)
class Param:
    """One parameter of a stage.

    ``derive(config, wildcards)`` gives its plain value; ``typed`` turns that into the stage
    function's argument, named ``argument`` (the parameter's own name when empty). A parameter with
    ``passed=False`` is a rerun trigger only: the rule records it, the stage function never sees it.
    """

    derive: Callable[[dict, Any], Any]
    typed: Callable[[Any], Any] = lambda value: value
    argument: str = ""
    passed: bool = True


# --- derivations shared by several stages ---


def _encoder(config: dict, wc) -> dict:
    """Only what changes embeddings: a change here reruns scoring, indexing and evaluation."""
    return opera_config.model_settings(config, wc.model).encoder.to_dict()


def _model_digest(config: dict, wc) -> str:
    """The base model's content (opera.preflight.model_digest): replacing its weights or tokenizer
    in place reruns the jobs that load it, and everything after."""
    return preflight.model_digest(opera_config.model_settings(config, wc.model).encoder.path)


def _run_settings(config: dict, wc) -> dict:
    """The model's settings for one run: the budget is the run's max_steps (every schedule ends there)."""
    return {**opera_config.model_settings(config, wc.model).to_dict(), "max_steps": int(wc.budget)}


def _method_params(config: dict, wc) -> dict:
    return opera_config.method_params(config, wc.method, wc.model)


def _prune_params(config: dict, wc) -> dict:
    """What a prune job's pairs depend on: the method's params, and the seed its subset names."""
    if not method_entry(wc.method).pruner:
        return {}  # the others keep every pair
    params = _method_params(config, wc)
    seed = pruning.subset_seed(wc.subset)
    return params if seed is None else {**params, "seed": seed}


def _eval_split(config: dict, wc) -> str:
    return opera_config.eval_split(config["datasets"][wc.dataset], config["evaluation"]["split"])


def _store_layout(config: dict, wc) -> dict:
    """How corpus embeddings are cut and stored (StoreLayout's fields)."""
    return dataclasses.asdict(layout_of(opera_config.evaluation_of(config)))


def _run_meta(config: dict, wc) -> dict:
    run = opera_config.EvaluatedRun.from_id(wc.dataset, wc.model, wc.run)
    # max_steps tells a main run from a budget run; pretrain has neither (and must not rerun when it changes)
    trains = method_entry(run.method).trains
    max_steps = opera_config.model_settings(config, run.model).max_steps if trains else None
    return {
        "dataset": run.dataset,
        "model": run.model,
        "method": run.method,
        "seed": run.seed,
        "step": run.step or 0,
        "budget": run.budget,
        "max_steps": max_steps,
    }


def _from(block: str, key: str) -> Param:
    """A value read as it is from one config block."""
    return Param(lambda config, wc: config[block][key])


_ENCODER = Param(_encoder, EncoderSettings.from_dict)
_MODEL_DIGEST = Param(_model_digest, passed=False)
_LAYOUT = Param(_store_layout, lambda value: StoreLayout(**value))
_MINING = Param(lambda config, wc: config["models"][wc.model]["mining"], lambda value: Mining(**value))
_TITLE_JOIN = _from("data", "title_join")

STAGES: dict[str, dict[str, Param]] = {
    "download": {
        "name": Param(lambda config, wc: wc.dataset),
        "spec": Param(lambda config, wc: config["datasets"][wc.dataset]),
        # title_join changes encoding, not the prepared tables: it reruns score, not download
        "options": Param(lambda config, wc: {k: v for k, v in config["data"].items() if k != "title_join"}),
    },
    "score": {
        "encoder": _ENCODER,
        "model_digest": _MODEL_DIGEST,
        "layout": _LAYOUT,
        "mining": _MINING,
        "encode_batch_size": _from("scoring", "encode_batch_size"),
        "judged_negatives_first": _from("scoring", "judged_negatives_first"),
        "negative_pool_cap": _from("scoring", "negative_pool_cap"),
        "title_join": _TITLE_JOIN,
    },
    "validation_pool": {
        "encoder": _ENCODER,
        "model_digest": _MODEL_DIGEST,
        "split": Param(_eval_split),
        "pool": Param(lambda config, wc: config["validation"], PoolSettings.from_dict),
        # only what pool metrics depend on (not, say, keep_embeddings): a change here reruns the training that validates
        "scoring": Param(
            lambda config, wc: dataclasses.asdict(PoolMetrics.from_evaluation(config["evaluation"])),
            lambda value: PoolMetrics(**value),
        ),
        "encode_batch_size": _from("evaluation", "encode_batch_size"),
    },
    "prune": {
        "method": Param(lambda config, wc: wc.method),
        "method_params": Param(_prune_params, argument="params"),
    },
    "mine": {
        "mining": _MINING,
        "judged_negatives_first": _from("scoring", "judged_negatives_first"),
        "negative_pool_cap": _from("scoring", "negative_pool_cap"),
    },
    "finetune": {
        "settings": Param(_run_settings, ModelSettings.from_dict),
        "method": Param(lambda config, wc: wc.method),
        "model_digest": _MODEL_DIGEST,
        "method_params": Param(_method_params),
        "seed": Param(lambda config, wc: int(wc.seed)),
        "title_join": _TITLE_JOIN,
    },
    "publish": {
        "settings": Param(_run_settings, ModelSettings.from_dict),
        "method_params": Param(_method_params),
    },
    "index": {
        "encoder": _ENCODER,
        "layout": _LAYOUT,
        "encode_batch_size": _from("evaluation", "encode_batch_size"),
        "title_join": _TITLE_JOIN,
        "split": Param(_eval_split),
    },
    "evaluate": {
        "encoder": _ENCODER,
        # whether checkpoint embeddings are kept changes no result
        "evaluation": Param(
            lambda config, wc: {k: v for k, v in config["evaluation"].items() if k != "keep_embeddings"},
            Evaluation.of,
        ),
        "split": Param(_eval_split),
        "run_meta": Param(_run_meta),
    },
    "aggregate": {
        "ttq_tolerance": _from("aggregate", "ttq_tolerance"),
        "equivalence_margin": _from("aggregate", "equivalence_margin"),
        "global_batch": Param(lambda config, wc: opera_config.global_batches(config)),
        "rank_pretrain": _from("aggregate", "rank_pretrain"),
        "display_names": Param(lambda config, wc: config["display_names"]),
    },
}


def values(stage: str, config: dict, wildcards) -> dict[str, Any]:
    """The stage's parameters for one job, as the rule records them (plain values)."""
    return {name: param.derive(config, wildcards) for name, param in STAGES[stage].items()}


def arguments(stage: str, config: dict, wildcards: dict, **chosen) -> dict[str, Any]:
    """The stage function's keyword arguments that come from the config, typed, for the job that
    ``wildcards`` names (``{"dataset": ..., "model": ...}``): what its workflow script would pass.
    ``chosen`` gives an argument its own value instead (the CLI's ``--split``), derived from nothing."""
    job = SimpleNamespace(**wildcards)
    unknown = set(chosen) - {param.argument or name for name, param in STAGES[stage].items() if param.passed}
    if unknown:
        raise TypeError(f"stage {stage!r} takes no argument {sorted(unknown)} from the config")
    typed = {
        param.argument or name: param.typed(param.derive(config, job))
        for name, param in STAGES[stage].items()
        if param.passed and (param.argument or name) not in chosen
    }
    return typed | chosen
