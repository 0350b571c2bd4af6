"""Each stage's parameters, declared once: what a stage takes from the config, and how.

``STAGES[stage]`` maps a parameter's name to a :class:`Param`: how its value follows from the
resolved config and the job's wildcards (dataset, model, method, seed, budget, subset, run), and
how the stage function takes it. Everything reads this table:

- the rule: ``params: **stage_params("score")`` in rules/*.smk (rules/common.smk builds one
  wildcard function per parameter); Snakemake records the values, so a change reruns the job;
- the workflow script passes each parameter to the stage function under its ``argument`` name,
  converting it as ``to_argument`` does (the scripts are not generated from this table: editing
  one reruns every job of its rule in existing results folders);
- the CLI and :func:`opera.pipeline.prune_and_finetune` call :func:`arguments`, so a command-line
  run takes the values a workflow job would.

tests/test_stage_params.py checks every rule, script and stage signature against this table, and
the recorded values of the smoke config's jobs against a snapshot (a changed value reruns that
stage in every existing results folder). Paths (inputs, outputs, work folders, checkpoints) are
not parameters: the rule's path helpers in rules/common.smk give them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
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

    ``derive(config, wildcards)`` gives its plain value, as the rule records it (wildcards by
    attribute: ``wildcards.model``); ``to_argument`` turns that into the stage function's argument,
    named ``argument`` (the parameter's own name when empty). A ``trigger_only`` parameter is a
    rerun trigger: the rule records it, the stage function never sees it.
    """

    derive: Callable[[dict, Any], Any]
    to_argument: Callable[[Any], Any] = lambda value: value
    argument: str = ""
    trigger_only: bool = False

    def argument_name(self, name: str) -> str:
        return self.argument or name


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
_MODEL_DIGEST = Param(_model_digest, trigger_only=True)
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


def values(stage: str, config: dict, wildcards: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's parameters for the job that ``wildcards`` names (``{"dataset": ..., "model":
    ...}``), as its rule records them: plain values, trigger-only ones included."""
    job = SimpleNamespace(**wildcards)
    return {name: param.derive(config, job) for name, param in STAGES[stage].items()}


def arguments(stage: str, config: dict, wildcards: Mapping[str, Any], **chosen) -> dict[str, Any]:
    """The stage function's keyword arguments that come from the config, for the job that
    ``wildcards`` names: what its workflow script would pass. A ``chosen`` argument is used as
    given, neither derived nor converted (the CLI's ``--split``)."""
    taken = {param.argument_name(name): param for name, param in STAGES[stage].items() if not param.trigger_only}
    if unknown := set(chosen) - set(taken):
        raise TypeError(f"stage {stage!r} takes no argument {sorted(unknown)} from the config")
    job = SimpleNamespace(**wildcards)
    derived = {
        argument: param.to_argument(param.derive(config, job))
        for argument, param in taken.items()
        if argument not in chosen
    }
    return derived | chosen
