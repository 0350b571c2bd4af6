"""A stage's parameters are declared once (opera/pipeline/params.py): the rule builds its params
from the declaration, the workflow script passes each to the stage function under its declared
argument name, the function takes them, and the CLI derives the same values."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from opera import pipeline
from opera.config import load_config
from opera.pipeline.params import STAGES, arguments, values
from opera.settings import EncoderSettings, ModelSettings

ROOT = Path(__file__).resolve().parents[1]

# What a rule adds to its declared params: paths only (a config value there would be declared twice).
RULE_PATHS = {
    "finetune": {"work_dir"},
    "index": {"checkpoint"},
    "evaluate": {"checkpoint"},
    "aggregate": {"train_logs", "cards", "pool_reports", "tables_dir", "plots_dir"},
}
# The stage function each script calls (finetune_job takes finetune's keywords through **job).
FUNCTIONS = {"finetune": pipeline.finetune}


def _wildcards(job: dict):
    """A job's wildcards as Snakemake gives them to a param function (attributes)."""
    return type("Wildcards", (), job)


def _rule_params(stage: str) -> tuple[list[str], set[str]]:
    """The rule's ``**stage_params(...)`` stages and its own named params, read from rules/*.smk."""
    text = "".join(path.read_text() for path in sorted((ROOT / "rules").glob("*.smk")))
    match = re.search(rf"^rule {stage}:\n(.*?)(?=^rule |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no rule {stage} in rules/"
    block = re.search(r"^    params:\n(.*?)^    \w+:", match.group(1), flags=re.MULTILINE | re.DOTALL).group(1)
    declared = re.findall(r'^        \*\*stage_params\("(\w+)"\)', block, flags=re.MULTILINE)
    own = set(re.findall(r"^        (\w+)=", block, flags=re.MULTILINE))
    return declared, own


def _script_params(stage: str) -> dict[str, str]:
    """``snakemake.params.NAME`` -> the keyword of the stage call it is passed to, in the script."""
    tree = ast.parse((ROOT / "workflow_scripts" / f"{stage}.py").read_text())
    passed = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        if not (isinstance(call.func.value, ast.Name) and call.func.value.id == "pipeline"):
            continue
        for keyword in call.keywords:
            for node in ast.walk(keyword.value):
                if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "snakemake.params":
                    passed[node.attr] = keyword.arg
    return passed


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_rule_takes_its_params_from_the_declaration_and_adds_only_paths(stage):
    declared, own = _rule_params(stage)
    assert declared == [stage]
    assert own == RULE_PATHS.get(stage, set()), f"rule {stage}: a param that is not a path belongs in STAGES"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_script_passes_each_declared_param_under_its_argument_name(stage):
    passed = _script_params(stage)
    expected = {name: param.argument or name for name, param in STAGES[stage].items() if param.passed}
    expected |= {name: passed.get(name) for name in RULE_PATHS.get(stage, ())}
    assert passed == expected  # a trigger-only param (model_digest) is never read


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_stage_function_takes_each_declared_argument(stage):
    function = FUNCTIONS.get(stage, getattr(pipeline, stage))
    taken = set(inspect.signature(function).parameters)
    arguments_ = {param.argument or name for name, param in STAGES[stage].items() if param.passed}
    assert arguments_ <= taken, f"pipeline.{function.__name__} takes no {sorted(arguments_ - taken)}"


def test_arguments_are_the_recorded_values_typed():
    config = load_config(ROOT / "config" / "smoke.yaml")
    job = {"dataset": "scifact", "model": "all-MiniLM-L6-v2", "method": "dp", "seed": "42", "budget": "4"}
    recorded = values("finetune", config, _wildcards(job))
    typed = arguments("finetune", config, job)
    assert "model_digest" in recorded and "model_digest" not in typed  # a rerun trigger only
    assert typed["settings"] == ModelSettings.from_dict(recorded["settings"])
    assert typed["settings"].max_steps == 4  # the budget is the run's max_steps
    assert typed["seed"] == 42 and typed["method_params"] == recorded["method_params"]
    encoder = values("index", config, _wildcards(job))["encoder"]
    assert arguments("index", config, job)["encoder"] == EncoderSettings.from_dict(encoder)


def test_a_chosen_argument_replaces_the_derived_one_and_an_unknown_one_is_refused():
    config = load_config(ROOT / "config" / "smoke.yaml")
    job = {"dataset": "scifact", "model": "all-MiniLM-L6-v2"}
    assert arguments("index", config, job, split="dev")["split"] == "dev"
    # evaluate's run_meta needs a run wildcard; the CLI gives its own instead
    assert arguments("evaluate", config, job, run_meta={"method": "cli"})["run_meta"] == {"method": "cli"}
    with pytest.raises(TypeError, match="stage 'index' takes no argument \\['model_digest'\\]"):
        arguments("index", config, job, model_digest="x")
