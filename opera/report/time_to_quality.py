"""Time to quality in training steps: when a method first reaches the reference method's quality.

The target is the reference's (basic's) final metric of its main run, mean over seeds, minus a
tolerance ("comparable" quality). Progress is counted in optimizer steps and training queries
(steps x global batch): every method costs the same per step, and steps do not depend on the load
of the machine; wall seconds are a secondary column. Two readings:

- ``budget``: each seed's runs of every budget (separate runs, each with its schedules ending at
  its budget; the authors' reading), read at their last step: the smallest budget that reaches
  the target.
- ``checkpoint``: along each seed's main run, the first evaluated checkpoint that reaches the
  target (a checkpoint half-way through a run is not a run of half the length: its learning rate
  has not decayed).

Per method x reading x tolerance: how many seeds reach the target, the step at which the
seed-averaged curve first reaches it, and the mean over seeds of each seed's first step with a
t-interval over seeds (defined only when every seed reaches it). The table shows several
tolerances so that a reader sees how the verdict moves; ``primary`` marks the configured one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from opera import methods as method_registry

log = logging.getLogger(__name__)

SHOWN_TOLERANCES = (0.0, 0.005, 0.01, 0.02)
CONFIDENCE = 0.95
_EPS = 1e-12
COLUMNS = [
    "dataset",
    "model",
    "method",
    "reading",
    "metric",
    "tolerance",
    "primary",
    "target",
    "n_seeds",
    "seeds_reached",
    "steps_to_target",
    "queries_to_target",
    "steps_seed_mean",
    "steps_ci_low",
    "steps_ci_high",
    "max_steps",
    "ratio_to_reference_steps",
    "seconds_to_target",
    "ratio_to_reference_seconds",
]


def first_reaching(curve: pd.DataFrame, metric: str, target: float) -> pd.Series | None:
    """The first row (in ``step`` order) whose ``metric`` reaches ``target``, or None."""
    hit = curve[curve[metric] >= target - _EPS].sort_values("step")
    return None if hit.empty else hit.iloc[0]


def _reading_curves(runs: pd.DataFrame, reading: str) -> pd.DataFrame:
    """The (seed, step, metric, train_seconds) points one reading walks along."""
    if reading == "checkpoint":
        return runs[runs["main_run"]]
    return runs[runs["step"] == runs["budget"]]  # every budget's run, read at its last step


def _seed_interval(steps: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of per-seed steps: a t-interval over seeds; NaN bounds with one seed."""
    values = np.asarray(steps, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    if np.ptp(values) == 0:
        return mean, mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def _row(runs: pd.DataFrame, reading: str, metric: str, target: float) -> dict:
    curve = _reading_curves(runs, reading)
    mean_curve = curve.groupby("step", as_index=False)[[metric, "train_seconds"]].mean()
    hit = first_reaching(mean_curve, metric, target)
    per_seed = [first_reaching(points, metric, target) for _, points in curve.groupby("seed", sort=True)]
    reached = [float(h["step"]) for h in per_seed if h is not None]
    all_reached = len(reached) == len(per_seed) and reached
    mean, low, high = _seed_interval(reached) if all_reached else (math.nan, math.nan, math.nan)
    return {
        "n_seeds": len(per_seed),
        "seeds_reached": len(reached),
        "steps_to_target": int(hit["step"]) if hit is not None else pd.NA,
        "seconds_to_target": float(hit["train_seconds"]) if hit is not None else math.nan,
        "steps_seed_mean": mean,
        "steps_ci_low": low,
        "steps_ci_high": high,
        "max_steps": int(runs.loc[runs["main_run"], "step"].max()),
    }


def time_to_quality(
    long: pd.DataFrame,
    global_batch: Mapping[str, int] | None = None,
    metric: str = "NDCG@10",
    tolerance: float = 0.01,
    tolerances: Sequence[float] = SHOWN_TOLERANCES,
) -> pd.DataFrame:
    """The time-to-quality table of ``long`` (every evaluated checkpoint, budgets included).

    ``global_batch`` maps a model to the queries of one optimizer step (queries_to_target is
    NaN for a model it lacks); ``tolerance`` is the configured one (``primary``), shown with
    ``tolerances``. The budget reading appears only when the grid has budget runs."""
    reference = method_registry.REFERENCE_METHOD
    global_batch = global_batch or {}
    readings = ["budget", "checkpoint"] if not long["main_run"].all() else ["checkpoint"]
    shown = sorted({*tolerances, tolerance})
    records = []
    for (dataset, model), cell in long.groupby(["dataset", "model"], sort=True):
        ref = cell[(cell["method"] == reference) & cell["main_run"]]
        if ref.empty:
            log.warning("time to quality: %s/%s has no %s runs; skipped", dataset, model, reference)
            continue
        final = ref.loc[ref.groupby("seed")["step"].idxmax()]
        for tol in shown:
            target = float(final[metric].mean()) - tol
            rows = []
            for method, runs in cell.groupby("method", sort=False):
                if not method_registry.get(method).trains:
                    continue
                for reading in readings:
                    rows.append(
                        {
                            "dataset": dataset,
                            "model": model,
                            "method": method,
                            "reading": reading,
                            "metric": metric,
                            "tolerance": tol,
                            "primary": math.isclose(tol, tolerance),
                            "target": target,
                            **_row(runs, reading, metric, target),
                        }
                    )
            for row in rows:  # ratios to the reference's own total (the paper's "x% of basic's time")
                ref_row = next(r for r in rows if r["method"] == reference and r["reading"] == row["reading"])
                steps = row["steps_to_target"]
                row["queries_to_target"] = (
                    steps * global_batch[model] if steps is not pd.NA and model in global_batch else math.nan
                )
                row["ratio_to_reference_steps"] = steps / ref_row["max_steps"] if steps is not pd.NA else math.nan
                ref_seconds = float(final["train_seconds"].mean())
                row["ratio_to_reference_seconds"] = (
                    row["seconds_to_target"] / ref_seconds if ref_seconds > 0 else math.nan
                )
            records += rows
    table = pd.DataFrame(records, columns=COLUMNS)
    for column in ("steps_to_target", "max_steps", "n_seeds", "seeds_reached"):
        table[column] = table[column].astype("Int64")
    table["primary"] = table["primary"].astype(bool)
    order = {m: method_registry.order_key(m) for m in table["method"].unique()}
    return (
        table.assign(_order=table["method"].map(order))
        .sort_values(["dataset", "model", "tolerance", "reading", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
