"""What each setting reruns, planned against a finished smoke run: the authors' settings of
docs/comparability.md (each moves exactly the numbers the page says) and the budget axis."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, plan, results_dir, snakemake, write_config

from opera import io
from opera.config import validate_config
from opera.methods.sampling import PairIndex, make_sampler

pytestmark = pytest.mark.workflow
SMOKE = ROOT / "config" / "smoke.yaml"
BASE = yaml.safe_load(SMOKE.read_text())
# the smoke grid: pretrain + basic, sp, dp at 2 checkpoints each
TRAINED_RUNS = {"finetune": 3, "index": 6, "evaluate": 6, "publish": 3, "aggregate": 1, "all": 1}
BASE_DP = validate_config(yaml.safe_load(SMOKE.read_text()))["method_params"]["dp"]
SP_ONLY = {"prune": 1, "finetune": 1, "index": 2, "evaluate": 2, "publish": 1, "aggregate": 1, "all": 1}
# pretrain is evaluated on score's corpus embeddings: no index job of its own
EVERYTHING_BUT_DOWNLOAD = {
    "score": 1,
    "prune": 3,
    "finetune": 3,
    "index": 6,
    "evaluate": 7,
    "publish": 3,
    "aggregate": 1,
    "all": 1,
}


def _with(block: str, **values) -> dict:
    return {block: {**BASE.get(block, {}), **values}}


SWITCHES = {
    # D1: an extra column; no training changes. The checkpoints' corpus embeddings were deleted once
    # evaluated (evaluation.keep_embeddings: false), so evaluating again encodes them again
    "authors_ndcg": (
        _with("evaluation", authors_ndcg=True),
        {"index": 6, "evaluate": 7, "publish": 3, "aggregate": 1, "all": 1},
    ),
    # D3: passage text changes every embedding, pretrain included; the prepared tables stay
    "text_only": (_with("data", title_join="text_only"), EVERYTHING_BUT_DOWNLOAD),
    # D4: the negatives of every trained method (the score stage writes them)
    "judged_negatives": (_with("scoring", judged_negatives_first=True, negative_pool_cap=5), EVERYTHING_BUT_DOWNLOAD),
    # D5: sp's kept share for one model only
    "per_model_kept_pct": ({"model": {"method_params": {"sp": {"kept_pct": 0.5}}}}, SP_ONLY),
    # D6: sp mines its own negatives after pruning
    "mine_after_prune": ({"method_params": {"sp": {"mine_after_prune": True}}}, {**SP_ONLY, "mine": 1}),
    # D9 and D10: the loss and the training tokenization of every trained method, not pretrain
    "no_false_negative_mask": ({"model": {"mask_false_negatives": False}}, TRAINED_RUNS),
    "train_without_eos": ({"model": {"train_append_eos": False}}, TRAINED_RUNS),
    # time to quality and average rank are read off the same runs
    "ttq_tolerance": ({"aggregate": {"ttq_tolerance": 0.02}}, {"aggregate": 1, "all": 1}),
    "equivalence_margin": ({"aggregate": {"equivalence_margin": 0.02}}, {"aggregate": 1, "all": 1}),
    "rank_without_pretrain": ({"aggregate": {"rank_pretrain": False}}, {"aggregate": 1, "all": 1}),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_each_switch_reruns_what_the_comparability_page_says(smoke_run, tmp_path, name):
    changes, expected = SWITCHES[name]
    config = write_config(tmp_path / f"{name}.yaml", SMOKE, **changes)
    assert plan(smoke_run, config) == expected


def test_a_new_budget_plans_its_runs_and_the_full_budget_reuses_the_main_run(smoke_run, tmp_path):
    """budgets: 0.5 of max_steps (4) is a new 2-step run per method and seed, evaluated at its end;
    1.0 is the main run, already there."""
    full = write_config(tmp_path / "full.yaml", SMOKE, budgets=[1.0])
    assert plan(smoke_run, full) == {}
    half = write_config(tmp_path / "half.yaml", SMOKE, budgets=[0.5, 1.0], budget_methods=["basic", "dp"])
    assert plan(smoke_run, half) == {"finetune": 2, "index": 2, "evaluate": 2, "publish": 2, "aggregate": 1, "all": 1}


def test_a_budget_run_ends_its_schedules_at_its_budget(smoke_run, tmp_path):
    """The learning rate decays to 0 and dp's schedules reach their end at the budget (step 2), not
    at max_steps (4); the main run at step 2 is half-way. Run in a copy of the smoke run's folder
    (Snakemake's records included), so the shared run stays as it was."""
    workdir = tmp_path / "work"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    config = write_config(tmp_path / "half.yaml", SMOKE, budgets=[2], budget_methods=["dp"])
    snakemake(workdir, config, "--cores", "2")
    results = results_dir(workdir, SMOKE)
    finetune = results / "finetune" / "scifact" / "all-MiniLM-L6-v2" / "dp" / "seed42"
    short, main = (io.read_train_log(finetune / f"budget{b}" / "train_log.jsonl") for b in (2, 4))
    assert json.loads((finetune / "budget2" / "run.json").read_text())["max_steps"] == 2
    assert short[-1]["step"] == 2 and short[-1]["lr"] == 0.0
    assert main[1]["step"] == 2 and main[1]["lr"] > 0.0
    sampler = make_sampler(
        "dp", PairIndex(io.load_table(results / "score/scifact/all-MiniLM-L6-v2/pairs.parquet")), 2, 42, BASE_DP
    )
    assert sampler.strength(2) == BASE_DP["x_end"] and sampler.cutoff(2) == BASE_DP["c_end"]
    reading = pd.read_csv(results / "tables" / "time_to_quality.csv")
    assert set(reading["reading"]) == {"checkpoint", "budget"}
    budgets = pd.read_csv(results / "tables" / "budgets.csv")
    assert sorted(budgets.loc[budgets["method"] == "dp", "budget"]) == [2, 4]
