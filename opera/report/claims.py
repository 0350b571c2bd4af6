"""The paper's three claims, each read off the comparisons table with its interval.

OPERA (arXiv 2603.17205) claims, against standard finetuning (basic):

1. ``sp_ndcg``: static pruning raises NDCG@10 by 0.5% (while Recall can fall);
2. ``dp_gain``: dynamic pruning raises NDCG@10 by 1.9% and Recall@20 by 0.7% (relative gains);
3. ``dp_time``: dynamic pruning reaches comparable quality in under half of basic's training.

Each claim becomes one row per dataset x model (claim 2: one per metric) with the estimate, its
95% interval and a verdict. The interval is the comparison's primary level (opera.report.comparisons):
Welch's t-interval over seed-level means when both arms have two or more seeds, else the
bootstrap over queries. Each claim is one pre-stated hypothesis, so its interval is not adjusted
for the other rows of the comparisons table.

- claims 1 and 2 (an effect of a stated direction or size, relative intervals in percent):
  ``supported`` when the interval lies above 0 and reaches the claimed size;
  ``smaller than claimed`` when it lies above 0 but below the claimed size; ``contradicted`` when
  it lies below the claimed size without showing a gain (the interval excludes the paper's
  effect); ``inconclusive`` when it holds both no effect and the claimed one.
- claim 3 (non-inferiority at half the steps, absolute NDCG@10 difference of dp's half-length
  run from basic's full run, tolerance ``aggregate.ttq_tolerance``): ``untestable`` when basic's
  own half-length run is already within the tolerance (its lower bound above -tolerance: the
  setting cannot tell a faster method from a plain short run); else ``supported`` when the lower
  bound is above -tolerance, ``contradicted`` when the upper bound is below it, ``inconclusive``
  otherwise.
"""

from __future__ import annotations

import math

import pandas as pd

from opera import methods as method_registry
from opera.report import comparisons

# the paper's effects (its abstract), as relative gains over basic in percent, and the share of
# basic's steps in which dp is claimed to reach comparable quality
DP_GAIN_PCT = {"NDCG@10": 1.9, "Recall@20": 0.7}
SP_GAIN_PCT = 0.5
TIME_SHARE = 0.5
COLUMNS = [
    "dataset",
    "model",
    "claim",
    "metric",
    "evidence",
    "paper",
    "estimate",
    "ci_low",
    "ci_high",
    "unit",
    "interval",
    "verdict",
]


def effect_verdict(low: float, high: float, claimed: float) -> str:
    """Verdict of a claimed gain of size ``claimed`` (> 0) from an interval."""
    if low > 0:
        return "supported" if high >= claimed else "smaller than claimed"
    if high < claimed:
        return "contradicted"
    return "inconclusive"


def time_verdict(dp_low: float, dp_high: float, basic_low: float, tolerance: float) -> str:
    """Verdict of "comparable quality in half the steps" from the intervals of the half-length
    runs' differences from basic's full run (dp's and basic's own)."""
    if basic_low > -tolerance:
        return "untestable"
    if dp_low > -tolerance:
        return "supported"
    if dp_high < -tolerance:
        return "contradicted"
    return "inconclusive"


def interval(found: pd.Series) -> tuple[float, float, str]:
    """(low, high, name) of the interval a claim is judged by: the row's primary level, Welch's
    t-interval over seed-level means when both arms have two or more seeds (the bootstrap's seed
    level is too narrow with three seeds), else the bootstrap over queries (one run: pretrain)."""
    if found["test_level"] == "seeds":
        return float(found["seed_ci_low"]), float(found["seed_ci_high"]), "Welch t over seeds"
    return float(found["ci_low"]), float(found["ci_high"]), "bootstrap over queries"


def _row(cell_keys: dict, claim: str, metric: str, evidence: str, paper: str, found: pd.Series, unit: str) -> dict:
    low, high, name = interval(found)
    diff = float(found["diff"])
    baseline = float(found["mean_baseline"])
    # relative to the baseline, in percent; undefined (NaN, so inconclusive) when the baseline scores 0
    scale = (100.0 / baseline if baseline > 0 else math.nan) if unit == "%" else 1.0
    return {
        **cell_keys,
        "claim": claim,
        "metric": metric,
        "evidence": evidence,
        "paper": paper,
        "estimate": scale * diff,
        "ci_low": scale * low,
        "ci_high": scale * high,
        "unit": unit,
        "interval": name,
    }


def _find(table: pd.DataFrame, method: str, steps, baseline: str, metric: str) -> pd.Series | None:
    match = table[
        (table["method"] == method)
        & (table["baseline"] == baseline)
        & (table["metric"] == metric)
        & ((table["steps"] == steps) if steps is not None else True)
    ]
    return None if match.empty else match.iloc[0]


def _half_budget(table: pd.DataFrame, method: str, main_steps: int) -> int | None:
    """The longest budget run of ``method`` at most TIME_SHARE of the main run's steps."""
    steps = table.loc[(table["method"] == method) & table["steps"].notna(), "steps"].astype(int)
    short = steps[steps <= TIME_SHARE * main_steps]
    return int(short.max()) if not short.empty else None


def claims(compared: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """The claims table from the comparisons table (opera.report.comparisons)."""
    reference = method_registry.REFERENCE_METHOD
    rows = []
    for (dataset, model), cell in compared.groupby(["dataset", "model"], sort=True):
        keys = {"dataset": dataset, "model": model}
        main = comparisons.main_rows(cell)
        found = _find(main, "sp", None, reference, "NDCG@10")
        if found is not None:
            row = _row(keys, "sp_ndcg", "NDCG@10", "sp vs basic", f"+{SP_GAIN_PCT}%", found, "%")
            rows.append({**row, "verdict": effect_verdict(row["ci_low"], row["ci_high"], SP_GAIN_PCT)})
        for metric, claimed in DP_GAIN_PCT.items():
            found = _find(main, "dp", None, reference, metric)
            if found is not None:
                row = _row(keys, "dp_gain", metric, "dp vs basic", f"+{claimed}%", found, "%")
                rows.append({**row, "verdict": effect_verdict(row["ci_low"], row["ci_high"], claimed)})
        main_steps = main.loc[main["method"] == "dp", "steps"].max()
        if pd.isna(main_steps):
            continue
        half = _half_budget(cell, "dp", int(main_steps))
        basic_half = _half_budget(cell, reference, int(main_steps))
        dp_row = _find(cell, "dp", half, reference, "NDCG@10") if half else None
        basic_row = _find(cell, reference, basic_half, reference, "NDCG@10") if basic_half else None
        if dp_row is None or basic_row is None:
            continue
        paper = f"within {tolerance:g} NDCG@10 of basic in <= {TIME_SHARE:.0%} of its steps"
        basic_low, basic_high, _ = interval(basic_row)
        basic_own = f"{basic_row['diff']:+.4f} [{basic_low:+.4f}, {basic_high:+.4f}]"
        evidence = f"dp at {half} steps vs basic at {int(main_steps)}; basic at {basic_half}: {basic_own}"
        row = _row(keys, "dp_time", "NDCG@10", evidence, paper, dp_row, "abs")
        verdict = time_verdict(row["ci_low"], row["ci_high"], basic_low, tolerance)
        rows.append({**row, "verdict": verdict})
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame) -> str:
    """The claims as a markdown table, intervals in brackets."""
    lines = [
        "| dataset | model | claim | metric | paper | evidence | estimate [95% CI] | verdict |",
        "| :-- | :-- | :-- | :-- | :-- | :-- | --: | :-- |",
    ]
    for _, row in table.iterrows():
        digits = 1 if row["unit"] == "%" else 4
        unit = "%" if row["unit"] == "%" else ""
        estimate = (
            f"{row['estimate']:+.{digits}f}{unit} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"
            if not math.isnan(row["estimate"])
            else "–"
        )
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['claim']} | {row['metric']} | {row['paper']} | "
            f"{row['evidence']} | {estimate} | {row['verdict']} |"
        )
    return "\n".join(lines) + "\n"
