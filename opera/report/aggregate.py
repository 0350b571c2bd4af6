"""Aggregation of evaluated runs: result tables, average rank, comparisons and time to quality.

Input is one ``metrics.json`` per evaluated run (dataset, model, method, seed, step), each beside
its ``per_query.parquet``. :func:`aggregate` turns them into the tables of ``results/tables/``:

- ``runs.csv``: the long table, one row per evaluated checkpoint;
- ``results.{csv,md,tex}``: per dataset x model x method, the final checkpoint of every seed,
  mean and standard deviation over seeds (metrics in [0, 1], 4 decimals; best method in bold);
- ``avg_rank.{csv,md,tex}``: per model, each method's mean rank over (dataset, metric) cells;
- ``comparisons.csv``: each method against basic and its controls, and each budget run against
  basic's main run: differences with bootstrap intervals over queries and seeds, tests over seeds
  and over queries, Holm-adjusted p-values, equivalence tests, verdicts (opera.report.comparisons);
- ``time_to_quality.csv``: the training steps (and queries) at which each method first reaches
  basic's final NDCG@10 within a few tolerances, with intervals over seeds (opera.report.time_to_quality);
- ``paper.{csv,md,tex}``: datasets x methods in the paper's form, differences from basic in percent
  with their intervals, and the average rank;
- ``claims.{csv,md}``: the paper's three claims, each with its estimate, interval and verdict
  (opera.report.claims);
- ``budgets.csv``: quality and training time per budget.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from opera import methods as method_registry
from opera.io import read_json, write_text
from opera.report import claims, comparisons, html_tables, time_to_quality
from opera.report.frames import (
    ID_COLUMNS,
    MAIN_METRICS,
    RUN_KEY,
    final_rows,
    main_first,
    main_runs,
    metric_columns,
    sort_rows,
    write_table,
)
from opera.report.tables import average_rank, paper_table, results_tables, write_avg_rank, write_paper_table

log = logging.getLogger(__name__)


# --- helpers ---------------------------------------------------------------------------------------


# --- collect ---------------------------------------------------------------------------------------


def collect(metrics_paths: Iterable[str | Path], train_seconds: Mapping[tuple, float] | None = None) -> pd.DataFrame:
    """One row per ``metrics.json``: the run's identity, timing, query counts, every metric, and
    ``per_query_path`` (the sibling ``per_query.parquet``).

    Metrics files hold no wall time (so they are byte-identical across reruns); training seconds
    come from ``train_seconds[(dataset, model, method, seed, budget, step)]`` (see
    :func:`train_seconds_from_logs`), else from the record, else 0 (pretrain). A record without a
    budget (pretrain, or written before budgets existed) belongs to a main run.
    """
    train_seconds = train_seconds or {}
    rows = []
    for path in metrics_paths:
        path = Path(path)
        record = read_json(path)
        missing = [k for k in ("dataset", "model", "method", "step", "metrics") if k not in record]
        if missing:
            raise ValueError(f"{path}: metrics file lacks key(s) {missing}")
        row = {key: record.get(key) for key in ID_COLUMNS}
        row["main_run"] = row["budget"] is None or row["budget"] == record.get("max_steps")
        key = (row["dataset"], row["model"], row["method"], row["seed"], row["budget"], row["step"])
        row["train_seconds"] = float(train_seconds.get(key, row.get("train_seconds") or 0.0))
        row.update({name: float(value) for name, value in record["metrics"].items()})
        row["per_query_path"] = str(path.parent / "per_query.parquet")
        row["precision"] = precision_label(record.get("precision"))
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ID_COLUMNS + ["per_query_path"]:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object)
    metrics = metric_columns(frame)
    frame = frame[ID_COLUMNS + metrics + ["per_query_path"]]
    frame["seed"] = pd.array(frame["seed"].tolist(), dtype="Int64")
    frame["budget"] = pd.array(frame["budget"].tolist(), dtype="Int64")
    frame["main_run"] = frame["main_run"].astype(bool)
    frame["step"] = frame["step"].astype("int64")
    frame["train_seconds"] = frame["train_seconds"].astype(float)
    frame = sort_rows(frame, ["dataset", "model", "method", "seed", "budget", "step"])
    _check_one_precision(frame)
    dupes = frame.duplicated(RUN_KEY + ["step"])
    if dupes.any():
        raise ValueError(
            f"duplicate runs among the metrics files: {frame.loc[dupes, RUN_KEY + ['step']].to_dict('records')}"
        )
    log.info("collected %d evaluated runs", len(frame))
    return frame


def precision_label(recorded: dict | None) -> str:
    """One evaluated run's precisions as a table cell: ``bf16`` when training and both encodings
    agree, else each named (``train fp32, corpus bf16, queries bf16``); ``unrecorded`` for files
    written before runs recorded it."""
    if not recorded:
        return "unrecorded"
    parts = {part: value for part, value in recorded.items() if value is not None}
    if len(set(parts.values())) == 1:
        return next(iter(parts.values()))
    return ", ".join(f"{part} {value}" for part, value in parts.items())


def _check_one_precision(frame: pd.DataFrame) -> None:
    """Runs of one (dataset, model) are compared only when computed at one precision: ``auto``
    resolves per machine (bf16 on a CPU with native bf16, else fp32), so outputs cached on one
    machine and runs trained on another would otherwise sit side by side in a table."""
    for (dataset, model), runs in frame.groupby(["dataset", "model"], sort=True):
        labels = sorted(runs["precision"].unique())
        if len(labels) > 1:
            found = "; ".join(
                f"{label}: {', '.join(sorted(set(runs.loc[runs['precision'] == label, 'method'])))}" for label in labels
            )
            raise ValueError(
                f"aggregate: the runs of {dataset} x {model} were computed at different precisions ({found}), "
                "most likely on machines of different CPU classes with precision `auto`. Set the model's "
                "precision and encode_precision explicitly (fp32 runs alike everywhere) and rerun, or rerun "
                "everything on one machine class"
            )


def train_seconds_from_logs(train_logs: Mapping[tuple, Sequence[Mapping]]) -> dict[tuple, float]:
    """{(*run, step): elapsed} from {run: train log entries}, run = (dataset, model, method, seed, budget)."""
    seconds = {}
    for run, entries in train_logs.items():
        for entry in entries:
            seconds[(*run, int(entry["step"]))] = float(entry["elapsed"])
    return seconds


# --- sampler diagnostics ---------------------------------------------------------------------------

# what opera.methods.sampling logs about how a sampler spread training (distinct_share is derived here)
DIAGNOSTIC_FIELDS = ("positive_tv", "fresh_above_tau", "visit_cv", "distinct_share")


def sampler_diagnostics(train_logs: Mapping[tuple, Sequence[Mapping]]) -> pd.DataFrame:
    """One row per (run, step) from {(dataset, model, method, seed, budget): train log entries}:
    the diagnostics fields the sampler logged (NaN where a log predates them);
    ``distinct_share`` = distinct_positives / n_pairs."""
    rows = []
    for (dataset, model, method, seed, budget), entries in train_logs.items():
        for entry in entries:
            sampler = entry.get("sampler") or {}
            row = {"dataset": dataset, "model": model, "method": method, "seed": seed, "budget": budget}
            row["step"] = int(entry["step"])
            row.update({field: sampler.get(field) for field in DIAGNOSTIC_FIELDS[:3]})
            positives, pairs = sampler.get("distinct_positives"), sampler.get("n_pairs")
            row["distinct_share"] = positives / pairs if positives is not None and pairs else None
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[*RUN_KEY, "step", *DIAGNOSTIC_FIELDS])
    return frame.astype({field: float for field in DIAGNOSTIC_FIELDS})


def diagnostics_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x model x method x budget, means over seeds of: the distance of the positive
    draw from uniform averaged over steps, and at the last step the fresh share of above-tau
    scores, the unevenness of query visits and the share of pairs trained on."""
    if frame.empty:
        return pd.DataFrame(columns=["dataset", "model", "method", "budget", "n_seeds", *DIAGNOSTIC_FIELDS])
    per_run = frame.groupby(RUN_KEY, sort=False)
    last = frame.loc[per_run["step"].idxmax()].set_index(RUN_KEY)
    runs = last[list(DIAGNOSTIC_FIELDS[1:])].assign(positive_tv=per_run["positive_tv"].mean())
    keys = ["dataset", "model", "method", "budget"]
    summary = runs.reset_index().groupby(keys, sort=False)
    out = summary[list(DIAGNOSTIC_FIELDS)].mean().assign(n_seeds=summary.size()).reset_index()
    return sort_rows(out[[*keys, "n_seeds", *DIAGNOSTIC_FIELDS]], keys)


# --- final results ---------------------------------------------------------------------------------


def final_results(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x model x method: the final step of each seed, then mean and std over seeds of
    every metric and of train_seconds (``{name}_mean``, ``{name}_std``; std is NaN with one seed).

    Columns: dataset, model, method, split, step (the final step; the largest if seeds differ),
    n_seeds, then ``{metric}_mean``/``{metric}_std`` (NDCG@10 and Recall@20 first), then
    ``train_seconds_mean``/``train_seconds_std``.
    """
    metrics = main_first(metric_columns(long))
    values = metrics + ["train_seconds"]
    columns = ["dataset", "model", "method", "split", "step", "n_seeds"] + [
        f"{v}_{s}" for v in values for s in ("mean", "std")
    ]
    if long.empty:
        return pd.DataFrame(columns=columns)
    last = final_rows(long)
    keys = ["dataset", "model", "method"]
    grouped = last.groupby(keys, sort=False)
    steps = grouped["step"].agg(["min", "max"])
    uneven = steps[steps["min"] != steps["max"]]
    for key in uneven.index:
        log.warning(
            "%s: seeds end at different steps (%d..%d); using each seed's last step",
            "/".join(key),
            uneven.loc[key, "min"],
            uneven.loc[key, "max"],
        )
    out = grouped[values].mean().add_suffix("_mean").join(grouped[values].std(ddof=1).add_suffix("_std"))
    out["n_seeds"] = grouped.size()
    out["step"] = steps["max"]
    out["split"] = grouped["split"].first()
    out = out.reset_index()[columns]
    return sort_rows(out, keys)


# --- average rank ----------------------------------------------------------------------------------


# --- the paper's table ------------------------------------------------------------------------------


def budget_table(long: pd.DataFrame, metrics: Sequence[str] = MAIN_METRICS) -> pd.DataFrame:
    """Per dataset x model x trained method x budget: each run read at its last step, mean and std
    over seeds of the main metrics and of the training time (how quality moves with the budget)."""
    finals = long[long["budget"].notna() & (long["step"] == long["budget"])]
    columns = {"n_seeds": ("seed", "nunique")}
    for name in [*metrics, "train_seconds"]:
        columns[f"{name}_mean"] = (name, "mean")
        columns[f"{name}_std"] = (name, "std")
    table = finals.groupby(["dataset", "model", "method", "budget", "main_run"], sort=False).agg(**columns)
    return sort_rows(table.reset_index(), ["dataset", "model", "method", "budget"])


# --- the report's pages ------------------------------------------------------------------------------


def write_html_pages(tables_dir: str | Path, frames: Mapping[str, pd.DataFrame]) -> list[Path]:
    """``<stem>.html`` of every report table: from its ``.md`` where it has one, else from its frame
    in ``frames`` (so that Snakemake's report shows tables, not only CSV downloads)."""
    tables_dir = Path(tables_dir)
    written = []
    for stem, title in html_tables.REPORT_TABLES.items():
        markdown = tables_dir / f"{stem}.md"
        if markdown.exists():
            written.append(html_tables.write_markdown_page(markdown, title))
        else:
            written.append(html_tables.write_frame_page(frames[stem], tables_dir / f"{stem}.html", title))
    return written


# --- everything ------------------------------------------------------------------------------------


def aggregate(
    metrics_paths: Iterable[str | Path],
    tables_dir: str | Path,
    train_seconds: Mapping[tuple, float] | None = None,
    ttq_tolerance: float = 0.01,
    equivalence_margin: float = 0.01,
    rank_pretrain: bool = True,
    global_batch: Mapping[str, int] | None = None,
) -> dict[str, pd.DataFrame]:
    """Collect the runs and write every table into ``tables_dir``; return the DataFrames under the
    keys long, main, final, avg_rank, comparisons, time_to_quality, budgets, paper, claims.
    ``rank_pretrain`` false leaves the methods that do not train (pretrain) out of the average
    rank; ``global_batch`` (queries per optimizer step, per model) gives time to quality in
    training queries as well as steps."""
    tables_dir = Path(tables_dir)
    long = collect(metrics_paths, train_seconds)
    if long.empty:
        raise ValueError("aggregate: no metrics files given")
    main = main_runs(long)
    final = final_results(main)
    ranked = None if rank_pretrain else [m for m in final["method"].unique() if method_registry.get(m).trains]
    ranks = average_rank(final, methods=ranked)
    compared = comparisons.comparisons(final_rows(long), MAIN_METRICS, equivalence_margin)
    ttq = time_to_quality.time_to_quality(long, global_batch, tolerance=ttq_tolerance)
    budgets = budget_table(long)
    paper = paper_table(final, compared, ranks)
    claimed = claims.claims(compared, ttq_tolerance)
    write_table(long, tables_dir / "runs.csv")
    write_table(budgets, tables_dir / "budgets.csv")
    results_tables(final, tables_dir)
    write_avg_rank(ranks, tables_dir)
    write_table(compared, tables_dir / "comparisons.csv")
    write_table(ttq, tables_dir / "time_to_quality.csv")
    write_paper_table(paper, tables_dir)
    write_table(claimed, tables_dir / "claims.csv")
    write_text(tables_dir / "claims.md", claims.markdown(claimed))
    return {
        "long": long,
        "main": main,
        "final": final,
        "avg_rank": ranks,
        "comparisons": compared,
        "time_to_quality": ttq,
        "budgets": budgets,
        "paper": paper,
        "claims": claimed,
    }
