"""Which method differs from which, by how much, and how sure: the comparisons table.

An *arm* is one method trained for one number of steps (its main run, or a shorter budget run),
evaluated at its last step, with one run per seed. Compared, per dataset x model x metric:

- every method's main run with the reference method's (basic), and with the controls its
  registry entry names (sp with random; dp with dp_query and dp_doc) when the config has them;
- every budget run (a shorter run with its own schedules) with the reference's main run: "does
  dp at half the steps reach basic's quality?" is the row dp@32 vs basic@64, and basic@32 vs
  basic@64 says whether the setting can tell (opera.report.claims reads both).

Each row: both means, the difference with its two-level bootstrap interval (absolute and
relative) and its Welch t-interval over seed-level means, Welch's test over seed-level means,
paired t and Wilcoxon tests over queries, the row's primary test (over seeds when both arms have
two or more, else over queries) Holm-adjusted over the whole table (every method x baseline x
metric x dataset x model row is one family), a TOST equivalence test against ``margin``, the
design's minimum detectable effects, and a verdict. opera.report.uncertainty holds the statistics;
docs/methods.md ("Uncertainty") the design.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import pandas as pd

from opera import io
from opera import methods as method_registry
from opera.report import uncertainty

log = logging.getLogger(__name__)

COLUMNS = [
    "dataset",
    "model",
    "metric",
    "method",
    "steps",
    "baseline",
    "baseline_steps",
    "n_seeds",
    "n_baseline_seeds",
    "n_queries",
    "mean_method",
    "mean_baseline",
    "diff",
    "ci_low",
    "ci_high",
    "rel_diff",
    "rel_ci_low",
    "rel_ci_high",
    "seed_ci_low",
    "seed_ci_high",
    "p_seeds",
    "t_queries",
    "p_queries",
    "p_wilcoxon",
    "p_primary",
    "p_holm",
    "margin",
    "p_equivalence",
    "mde_seeds",
    "mde_queries",
    "test_level",
    "verdict",
]
VERDICTS = ("higher", "lower", "equivalent", "inconclusive")


def compared_pairs(present: Sequence[str]) -> list[tuple[str, str]]:
    """(method, baseline) of the main-run rows: every present method against the reference, then
    each method against the controls its registry entry names, in the registry's order."""
    reference = method_registry.REFERENCE_METHOD
    ordered = sorted(set(present), key=method_registry.order_key)
    if reference not in ordered:
        return []
    pairs = [(method, reference) for method in ordered if method != reference]
    for method in ordered:
        known = method_registry.METHODS.get(method)
        pairs += [(method, control) for control in (known.controls if known else ()) if control in ordered]
    return pairs


def _arm_matrix(rows: pd.DataFrame, metric: str, cache: dict) -> pd.DataFrame | None:
    """Seeds x queries values of ``metric`` for one arm's runs (one row per seed)."""
    series = {}
    for seed, path in zip(rows["seed"], rows["per_query_path"], strict=True):
        if path not in cache:  # verified against its checksum; a missing one is an error, never a skipped run
            frame = io.load_table(path)
            frame["query_id"] = frame["query_id"].astype(str)
            cache[path] = frame.set_index("query_id")
        frame = cache[path]
        if metric not in frame.columns:
            return None
        series[seed] = frame[metric].astype(float)
    return pd.DataFrame(series).T.dropna(axis=1)


def compare(a: pd.DataFrame, b: pd.DataFrame, margin: float) -> dict:
    """Every statistic of one row for arm matrices ``a`` and ``b`` (seeds x queries), on the
    queries both have. Holm columns and the verdict are filled in over the whole table."""
    queries = a.columns.intersection(b.columns)
    a_values, b_values = a[queries].to_numpy(), b[queries].to_numpy()
    difference = uncertainty.bootstrap_difference(a_values, b_values)
    a_seeds, b_seeds = a_values.mean(axis=1), b_values.mean(axis=1)
    a_queries, b_queries = a_values.mean(axis=0), b_values.mean(axis=0)
    t_queries, p_queries, p_wilcoxon = uncertainty.query_tests(a_queries, b_queries)
    level = "seeds" if min(len(a_seeds), len(b_seeds)) >= 2 else "queries"
    equivalence = (
        uncertainty.equivalence_test(a_seeds, b_seeds, margin)
        if level == "seeds"
        else uncertainty.equivalence_test_queries(a_queries, b_queries, margin)
    )
    mde_seeds, mde_queries = uncertainty.minimum_detectable_effect(a_values, b_values)
    p_seeds = uncertainty.seed_test(a_seeds, b_seeds)
    seed_low, seed_high = uncertainty.seed_interval(a_seeds, b_seeds)
    return {
        "n_seeds": len(a_seeds),
        "n_baseline_seeds": len(b_seeds),
        "n_queries": len(queries),
        "mean_method": float(a_values.mean()),
        "mean_baseline": float(b_values.mean()),
        "diff": difference.diff,
        "ci_low": difference.low,
        "ci_high": difference.high,
        "rel_diff": difference.relative,
        "rel_ci_low": difference.relative_low,
        "rel_ci_high": difference.relative_high,
        "seed_ci_low": seed_low,
        "seed_ci_high": seed_high,
        "p_seeds": p_seeds,
        "t_queries": t_queries,
        "p_queries": p_queries,
        "p_wilcoxon": p_wilcoxon,
        "p_primary": p_seeds if level == "seeds" else p_queries,
        "margin": margin,
        "p_equivalence": equivalence,
        "mde_seeds": mde_seeds,
        "mde_queries": mde_queries,
        "test_level": level,
    }


def verdict(row: pd.Series | dict) -> str:
    """``higher`` / ``lower``: the Holm-adjusted primary test (over seeds when both arms have two
    or more, else over queries) rejects no difference; ``equivalent``: TOST rejects a difference of
    the margin or more; else ``inconclusive``."""
    p = row["p_holm"]
    if not math.isnan(p) and p < uncertainty.ALPHA:
        return "higher" if row["diff"] > 0 else "lower"
    if not math.isnan(row["p_equivalence"]) and row["p_equivalence"] < uncertainty.ALPHA:
        return "equivalent"
    return "inconclusive"


def _arms(final: pd.DataFrame) -> dict[tuple[str, int | None], pd.DataFrame]:
    """{(method, steps): its runs' final rows}: steps is the run's budget (a record without one:
    its last step), None for methods that do not train."""
    arms = {}
    for (method, budget), rows in final.groupby(["method", "budget"], dropna=False, sort=False):
        if not pd.isna(budget):
            steps = int(budget)
        else:
            known = method_registry.METHODS.get(method)
            steps = int(rows["step"].max()) if known is None or known.trains else None
        arms[(method, steps)] = rows
    return arms


def _rows_of_cell(final: pd.DataFrame) -> list[tuple[tuple, tuple]]:
    """((method, steps), (baseline, steps)) compared in one dataset x model cell."""
    arms = _arms(final)
    main = {method: steps for (method, steps), rows in arms.items() if rows["main_run"].all()}
    rows = [((m, main[m]), (b, main[b])) for m, b in compared_pairs(list(main))]
    reference = method_registry.REFERENCE_METHOD
    if reference in main:
        budget_arms = sorted(
            (key for key, runs in arms.items() if not runs["main_run"].all()),
            key=lambda key: (method_registry.order_key(key[0]), key[1]),
        )
        rows += [(arm, (reference, main[reference])) for arm in budget_arms]
    return rows


def comparisons(final: pd.DataFrame, metrics: Sequence[str], margin: float) -> pd.DataFrame:
    """The comparisons table from ``final`` (each run's last evaluated row: dataset, model, method,
    seed, budget, main_run, per_query_path). A cell without the reference method has no rows."""
    cache: dict = {}
    records = []
    for (dataset, model), cell in final.groupby(["dataset", "model"], sort=True):
        arms = _arms(cell)
        pairs = _rows_of_cell(cell)
        if not pairs:
            log.info("comparisons: %s/%s has no %s runs; no rows", dataset, model, method_registry.REFERENCE_METHOD)
        for (method, steps), (baseline, baseline_steps) in pairs:
            for metric in metrics:
                a = _arm_matrix(arms[(method, steps)], metric, cache)
                b = _arm_matrix(arms[(baseline, baseline_steps)], metric, cache)
                if a is None or b is None:
                    continue
                records.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "metric": metric,
                        "method": method,
                        "steps": steps,
                        "baseline": baseline,
                        "baseline_steps": baseline_steps,
                        **compare(a, b, margin),
                    }
                )
    table = pd.DataFrame(records, columns=COLUMNS)
    table["steps"] = table["steps"].astype("Int64")
    table["baseline_steps"] = table["baseline_steps"].astype("Int64")
    table["p_holm"] = uncertainty.holm(table["p_primary"].to_numpy(dtype=float))  # one family: every row's primary test
    table["verdict"] = [verdict(row) for _, row in table.iterrows()] if len(table) else []
    return table


def main_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of main runs against the reference's main run (what the paper's table shows)."""
    reference = method_registry.REFERENCE_METHOD
    main = table["steps"].isna() | (table["steps"] == table["baseline_steps"])  # budget runs differ in steps
    return table[main.fillna(False).astype(bool) & (table["baseline"] == reference)].reset_index(drop=True)
