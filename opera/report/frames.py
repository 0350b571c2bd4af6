"""The long table of evaluated checkpoints (``runs.csv``) and what every report module needs of it:
its id columns, the metric columns in a stable order, the final row of each run, the main runs, the
registry's method order, and writing a table."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from opera import methods as method_registry
from opera.io import write_text
from opera.retrieval import metrics

log = logging.getLogger(__name__)

ID_COLUMNS = [
    "dataset",
    "model",
    "method",
    "seed",
    "budget",
    "step",
    "main_run",
    "train_seconds",
    "split",
    "n_queries",
    "n_excluded",
    "precision",
]


RUN_KEY = ["dataset", "model", "method", "seed", "budget"]  # one finetune run (pretrain: budget NA)


MAIN_METRICS = ("NDCG@10", "Recall@20")


# Metrics shown in results.md / results.tex (the csv holds every metric); absent ones are skipped.
DISPLAY_METRICS = ("NDCG@10", "NDCG@10_authors", "Recall@20", "MRR@10", "Recall@100")


def display_metrics() -> tuple[str, ...]:
    """:data:`DISPLAY_METRICS` and, after them, the registered measures marked ``shown``."""
    shown = [m.name for m in metrics.MEASURES.values() if m.shown and m.name not in DISPLAY_METRICS]
    return (*DISPLAY_METRICS, *shown)


def metric_order(name: str) -> tuple:
    """NDCG@1 < NDCG@5 < NDCG@10 < NDCG@10_authors < NDCG@20 < Recall@1 ..."""
    family, _, rest = name.partition("@")
    cutoff, _, variant = rest.partition("_")
    order = {"NDCG": 0, "Recall": 1, "MRR": 2, "MAP": 3, "P": 4}  # other families after these, by name
    return (order.get(family, 9), family, int(cutoff) if cutoff.isdigit() else 0, variant)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a long table (names like ``NDCG@10``), in a stable order."""
    names = [c for c in frame.columns if "@" in c and not c.endswith(("_mean", "_std"))]
    return sorted(names, key=metric_order)


def main_first(metrics: Iterable[str]) -> list[str]:
    metrics = list(metrics)
    return [m for m in MAIN_METRICS if m in metrics] + [m for m in metrics if m not in MAIN_METRICS]


def sort_rows(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    if frame.empty:
        return frame.reset_index(drop=True)

    def key(col: pd.Series) -> pd.Series:
        if col.name == "method":  # the registry's order (opera.methods), then others by name
            return col.map(lambda m: "{:03d}{}".format(*method_registry.order_key(m)))
        return col

    return frame.sort_values(list(by), key=key, kind="stable").reset_index(drop=True)


def final_rows(long: pd.DataFrame) -> pd.DataFrame:
    """For each run (dataset, model, method, seed, budget), the row of its last evaluated step."""
    if long.empty:
        return long.copy()
    key = [column for column in RUN_KEY if column in long.columns]  # hand-made tables may lack budget
    idx = long.groupby(key, dropna=False, sort=False)["step"].idxmax()
    return long.loc[idx.to_numpy()].reset_index(drop=True)


def main_runs(long: pd.DataFrame) -> pd.DataFrame:
    """The rows of the main runs (budget = the model's max_steps) and of pretrain: what the result
    tables, ranks, significance tests and checkpoint time-to-quality read."""
    return long[long["main_run"]].reset_index(drop=True)


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    write_text(path, frame.to_csv(index=False))
    log.info("wrote %s (%d rows)", path, len(frame))
    return path
