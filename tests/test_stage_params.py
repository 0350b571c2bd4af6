"""A stage's parameters are declared once (opera/pipeline/stage_params.py): every rule builds its
params from the declaration, the workflow script passes each to the stage function under its
declared argument name, the function takes them, the CLI derives the same values, and the values
the rules record stay those of the snapshot (a change reruns that stage in every results folder)."""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
from pathlib import Path

import pytest

from opera import pipeline
from opera.config import load_config
from opera.pipeline.stage_params import STAGES, arguments, values

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "smoke.yaml"
SNAPSHOT = Path(__file__).with_name("stage_params_smoke.json")

# What a rule adds to its declared params: where its files are (paths, and lists of run ids with
# their paths); a value from the config there would be declared twice.
RULE_OWN = {
    "finetune": {"work_dir"},
    "index": {"checkpoint"},
    "evaluate": {"checkpoint"},
    "aggregate": {"train_logs", "cards", "pool_reports", "tables_dir", "plots_dir"},
}
# The stage function each script calls (finetune_job takes finetune's keywords through **job).
FUNCTIONS = {"finetune": pipeline.finetune}
# Jobs of the smoke config whose recorded params the snapshot holds, one or two per stage.
MODEL = "all-MiniLM-L6-v2"
SNAPSHOT_JOBS = {
    "download": [{"dataset": "scifact"}],
    "score": [{"dataset": "scifact", "model": MODEL}],
    "validation_pool": [{"dataset": "scifact", "model": MODEL}],
    "prune": [{"dataset": "scifact", "model": MODEL, "method": m, "subset": "all"} for m in ("basic", "sp", "dp")],
    "mine": [{"dataset": "scifact", "model": MODEL, "method": "sp", "subset": "all"}],
    "finetune": [
        {"dataset": "scifact", "model": MODEL, "method": m, "seed": "42", "budget": "4"} for m in ("basic", "sp", "dp")
    ],
    "publish": [{"dataset": "scifact", "model": MODEL, "method": "dp", "seed": "42", "budget": "4"}],
    "index": [{"dataset": "scifact", "model": MODEL, "run": "dp/seed42/budget4/step2"}],
    "evaluate": [{"dataset": "scifact", "model": MODEL, "run": r} for r in ("pretrain", "sp/seed42/budget4/step4")],
    "aggregate": [{}],
}


def _rules() -> dict[str, str]:
    """Each rule of rules/*.smk and its text."""
    text = "".join(path.read_text() for path in sorted((ROOT / "rules").glob("*.smk")))
    return dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.MULTILINE | re.DOTALL))


def _rule_params(body: str) -> tuple[list[str], set[str]]:
    """The stages a rule's params unpack (``**stage_params(...)``) and its own named params."""
    block = re.search(r"^    params:\n(.*?)(?=^    \w+:)", body, flags=re.MULTILINE | re.DOTALL)
    if not block:
        return [], set()
    declared = re.findall(r'^        \*\*stage_params\("(\w+)"\)', block.group(1), flags=re.MULTILINE)
    return declared, set(re.findall(r"^        (\w+)=", block.group(1), flags=re.MULTILINE))


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


def test_every_stage_with_params_is_declared():
    with_params = {rule for rule, body in _rules().items() if "    params:\n" in body}
    assert with_params == set(STAGES)


@pytest.mark.parametrize("rule", sorted(_rules()))
def test_a_rule_takes_its_params_from_the_declaration_and_adds_only_its_files(rule):
    declared, own = _rule_params(_rules()[rule])
    assert declared == ([rule] if rule in STAGES else [])
    assert own == RULE_OWN.get(rule, set()), f"rule {rule}: a param from the config belongs in STAGES"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_script_passes_each_declared_param_under_its_argument_name(stage):
    passed = _script_params(stage)
    expected = {name: param.argument_name(name) for name, param in STAGES[stage].items() if not param.trigger_only}
    expected |= {name: passed.get(name) for name in RULE_OWN.get(stage, ())}
    assert passed == expected  # a trigger-only param (model_digest) is never read


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_stage_function_takes_each_declared_argument(stage):
    function = FUNCTIONS.get(stage, getattr(pipeline, stage))
    taken = set(inspect.signature(function).parameters)
    wanted = {param.argument_name(name) for name, param in STAGES[stage].items() if not param.trigger_only}
    assert wanted <= taken, f"pipeline.{function.__name__} takes no {sorted(wanted - taken)}"


def _recorded() -> dict:
    """Each snapshot job's params as Snakemake records them (repr of each value)."""
    config = load_config(SMOKE)
    return {
        stage: {
            "/".join(job.values()) or "-": {name: repr(value) for name, value in values(stage, config, job).items()}
            for job in jobs
        }
        for stage, jobs in SNAPSHOT_JOBS.items()
    }


def test_the_recorded_values_are_the_snapshots():
    """A deliberate change: UPDATE_STAGE_PARAMS=1 pytest tests/test_stage_params.py rewrites the
    snapshot; say in the change that it reruns that stage (and all after it) in existing folders."""
    recorded = _recorded()
    if os.environ.get("UPDATE_STAGE_PARAMS"):
        SNAPSHOT.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    assert recorded == json.loads(SNAPSHOT.read_text())


def test_arguments_convert_what_the_rule_records():
    config = load_config(SMOKE)
    job = {"dataset": "scifact", "model": MODEL, "method": "dp", "seed": "42", "budget": "4"}
    typed = arguments("finetune", config, job)
    assert "model_digest" in values("finetune", config, job) and "model_digest" not in typed
    assert typed["settings"].max_steps == 4 and typed["settings"].encoder.query_max_length == 24
    assert typed["seed"] == 42 and typed["method_params"]["x_end"] == 5.0
    sp = job | {"method": "sp", "subset": "all"}
    assert arguments("prune", config, sp)["params"] == arguments("finetune", config, sp)["method_params"]
    assert arguments("prune", config, job | {"subset": "all"})["params"] == {}  # dp prunes nothing up front


def test_a_chosen_argument_replaces_the_derived_one_and_an_unknown_one_is_refused():
    config = load_config(SMOKE)
    job = {"dataset": "scifact", "model": MODEL}
    assert arguments("index", config, job)["split"] == "test"
    assert arguments("index", config, job, split="dev")["split"] == "dev"
    # evaluate's run_meta needs a run wildcard; the CLI gives its own instead
    assert arguments("evaluate", config, job, run_meta={"method": "cli"})["run_meta"] == {"method": "cli"}
    with pytest.raises(TypeError, match=r"stage 'score' takes no argument \['model_digest'\]"):
        arguments("score", config, job, model_digest="x")  # a trigger only
