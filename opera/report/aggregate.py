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
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from opera import methods as method_registry
from opera.io import read_json, write_text
from opera.report import claims, comparisons, html_tables, time_to_quality

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
AVG_RANK_COLUMNS = ["model", "method", "avg_rank", "n_cells"]
_EPS = 1e-12


# --- helpers ---------------------------------------------------------------------------------------


def _metric_key(name: str) -> tuple:
    """NDCG@1 < NDCG@5 < NDCG@10 < NDCG@10_authors < NDCG@20 < Recall@1 ..."""
    family, _, rest = name.partition("@")
    cutoff, _, variant = rest.partition("_")
    order = {"NDCG": 0, "Recall": 1, "MRR": 2, "MAP": 3, "P": 4}
    return (order.get(family, 9), family, int(cutoff) if cutoff.isdigit() else 0, variant)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a long table (names like ``NDCG@10``), in a stable order."""
    names = [c for c in frame.columns if "@" in c and not c.endswith(("_mean", "_std"))]
    return sorted(names, key=_metric_key)


def _main_first(metrics: Iterable[str]) -> list[str]:
    metrics = list(metrics)
    return [m for m in MAIN_METRICS if m in metrics] + [m for m in metrics if m not in MAIN_METRICS]


def _sort(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    if frame.empty:
        return frame.reset_index(drop=True)

    def key(col: pd.Series) -> pd.Series:
        if col.name == "method":  # the registry's order (opera.methods), then others by name
            return col.map(lambda m: "{:03d}{}".format(*method_registry.order_key(m)))
        return col

    return frame.sort_values(list(by), key=key, kind="stable").reset_index(drop=True)


def _final_rows(long: pd.DataFrame) -> pd.DataFrame:
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
    frame = _sort(frame, ["dataset", "model", "method", "seed", "budget", "step"])
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
    return _sort(out[[*keys, "n_seeds", *DIAGNOSTIC_FIELDS]], keys)


# --- final results ---------------------------------------------------------------------------------


def final_results(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x model x method: the final step of each seed, then mean and std over seeds of
    every metric and of train_seconds (``{name}_mean``, ``{name}_std``; std is NaN with one seed).

    Columns: dataset, model, method, split, step (the final step; the largest if seeds differ),
    n_seeds, then ``{metric}_mean``/``{metric}_std`` (NDCG@10 and Recall@20 first), then
    ``train_seconds_mean``/``train_seconds_std``.
    """
    metrics = _main_first(metric_columns(long))
    values = metrics + ["train_seconds"]
    columns = ["dataset", "model", "method", "split", "step", "n_seeds"] + [
        f"{v}_{s}" for v in values for s in ("mean", "std")
    ]
    if long.empty:
        return pd.DataFrame(columns=columns)
    last = _final_rows(long)
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
    return _sort(out, keys)


def _fmt(mean: float, std: float, n: int, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{digits}f}"
    if n > 1 and std is not None and not math.isnan(std):
        text += f" ± {std:.{digits}f}"
    return text


def _best_mask(final: pd.DataFrame, column: str, higher_is_better: bool = True) -> pd.Series:
    """True where a row holds the best value of ``column`` within its dataset x model group."""
    mask = pd.Series(False, index=final.index)
    for _, group in final.groupby(["dataset", "model"], sort=False):
        values = group[column].astype(float).dropna()
        if len(values) < 2:
            continue
        best = values.max() if higher_is_better else values.min()
        mask.loc[values.index[(values - best).abs() <= _EPS]] = True
    return mask


def _tex_escape(text: str) -> str:
    table = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(table.get(ch, ch) for ch in str(text))


def _markdown(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    rule = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if a == "r" else (":" + "-" * (w - 1)) for a, w in zip(align, widths, strict=True)
        )
        + " |"
    )
    return "\n".join([line(header), rule] + [line(r) for r in rows]) + "\n"


def _latex(
    header: list[str], rows: list[list[str]], align: list[str], caption: str, label: str, group_cols: int = 0
) -> str:
    """A booktabs table; the first ``group_cols`` columns are blanked when repeated, with a rule
    between groups."""
    out = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{''.join(align)}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    previous = None
    for row in rows:
        cells = list(row)
        if group_cols:
            key = tuple(row[:group_cols])
            if previous is not None and key != previous:
                out.append("\\midrule")
            elif key == previous:
                cells[:group_cols] = [""] * group_cols
            previous = key
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def results_tables(
    final: pd.DataFrame, out_dir: str | Path, display_metrics: Sequence[str] = DISPLAY_METRICS
) -> list[Path]:
    """Write ``results.csv`` (every metric, numeric mean/std), ``results.md`` and ``results.tex``
    (``display_metrics`` as "mean ± std" with 4 decimals, best method per dataset x model in bold,
    plus training time in seconds and the number of seeds). Returns the written paths."""
    out_dir = Path(out_dir)
    paths = [write_table(final, out_dir / "results.csv")]
    shown = [m for m in display_metrics if f"{m}_mean" in final.columns]
    best = {m: _best_mask(final, f"{m}_mean") for m in shown}
    md_rows, tex_rows = [], []
    for i, row in final.iterrows():
        n = int(row["n_seeds"])
        cells = [_fmt(row[f"{m}_mean"], row[f"{m}_std"], n) for m in shown]
        if not method_registry.get(row["method"]).trains:
            time = "–"
        else:
            time = _fmt(row["train_seconds_mean"], row["train_seconds_std"], n, digits=1)
        ids = [str(row["dataset"]), str(row["model"]), method_registry.display_name(row["method"])]
        md_rows.append(
            ids + [f"**{c}**" if best[m][i] else c for m, c in zip(shown, cells, strict=True)] + [time, str(n)]
        )
        tex_cells = [c.replace("±", "$\\pm$").replace("–", "--") for c in cells]
        tex_rows.append(
            [_tex_escape(x) for x in ids]
            + [f"\\textbf{{{c}}}" if best[m][i] else c for m, c in zip(shown, tex_cells, strict=True)]
            + [time.replace("±", "$\\pm$").replace("–", "--"), str(n)]
        )
    header = ["dataset", "model", "method"] + shown + ["train time (s)", "seeds"]
    align = ["l", "l", "l"] + ["r"] * (len(shown) + 2)
    note = (
        "Metrics in [0, 1], 4 decimals, at each run's final checkpoint; mean ± std over seeds where "
        "there are several. Bold: best method per dataset and model. Training time: wall seconds."
    )
    write_text(out_dir / "results.md", f"{note}\n\n" + _markdown(header, md_rows, align))
    caption = _tex_escape(note).replace("±", "$\\pm$")
    write_text(
        out_dir / "results.tex",
        _latex([_tex_escape(h) for h in header], tex_rows, align, caption, "tab:results", group_cols=2),
    )
    paths += [out_dir / "results.md", out_dir / "results.tex"]
    log.info("wrote %s", ", ".join(str(p) for p in paths[1:]))
    return paths


# --- average rank ----------------------------------------------------------------------------------


def average_rank(
    final: pd.DataFrame, metrics: Sequence[str] = MAIN_METRICS, methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per model: for each dataset and each metric, rank the methods by their mean (1 = best, ties
    share the mean rank); a method's average rank is the mean over the (dataset, metric) cells it
    appears in (``n_cells``). ``methods`` restricts the ranking to those methods (default: all)."""
    if methods is not None:
        final = final[final["method"].isin(list(methods))]
    rows = []
    for model, by_model in final.groupby("model", sort=True):
        ranks: dict[str, list[float]] = {}
        n_total = 0
        for _, cell_frame in by_model.groupby("dataset", sort=True):
            for metric in metrics:
                column = f"{metric}_mean"
                if column not in cell_frame.columns:
                    raise KeyError(f"average_rank: no metric {metric!r} in the results")
                values = cell_frame.set_index("method")[column].astype(float).dropna().round(10)
                if values.empty:
                    continue
                n_total += 1
                for method, rank in values.rank(method="average", ascending=False).items():
                    ranks.setdefault(method, []).append(float(rank))
        for method, values in ranks.items():
            if len(values) < n_total:
                log.warning("average rank of %s/%s covers %d of %d cells", model, method, len(values), n_total)
            rows.append({"model": model, "method": method, "avg_rank": float(np.mean(values)), "n_cells": len(values)})
    out = pd.DataFrame(rows, columns=AVG_RANK_COLUMNS)
    if out.empty:
        return out
    return out.sort_values(["model", "avg_rank"], kind="stable").reset_index(drop=True)


def write_avg_rank(ranks: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``avg_rank.csv``, ``avg_rank.md`` and ``avg_rank.tex`` (best rank per model in bold)."""
    out_dir = Path(out_dir)
    paths = [write_table(ranks, out_dir / "avg_rank.csv")]
    best = pd.Series(False, index=ranks.index)
    for _, group in ranks.groupby("model", sort=False):
        if len(group) > 1:
            best.loc[group.index[(group["avg_rank"] - group["avg_rank"].min()).abs() <= _EPS]] = True
    header = ["model", "method", "average rank", "cells"]
    align = ["l", "l", "r", "r"]
    md_rows, tex_rows = [], []
    for i, row in ranks.iterrows():
        value = f"{row['avg_rank']:.2f}"
        md_rows.append(
            [
                str(row["model"]),
                method_registry.display_name(row["method"]),
                f"**{value}**" if best[i] else value,
                str(row["n_cells"]),
            ]
        )
        tex_rows.append(
            [
                _tex_escape(row["model"]),
                _tex_escape(method_registry.display_name(row["method"])),
                f"\\textbf{{{value}}}" if best[i] else value,
                str(row["n_cells"]),
            ]
        )
    note = (
        "Average rank per model over datasets x {NDCG@10, Recall@20} (1 = best; ties share the mean "
        "rank). Bold: best average rank per model."
    )
    write_text(out_dir / "avg_rank.md", f"{note}\n\n" + _markdown(header, md_rows, align))
    write_text(
        out_dir / "avg_rank.tex", _latex(header, tex_rows, align, _tex_escape(note), "tab:avg_rank", group_cols=1)
    )
    paths += [out_dir / "avg_rank.md", out_dir / "avg_rank.tex"]
    return paths


# --- the paper's table ------------------------------------------------------------------------------

PAPER_METRICS = ("NDCG@10", "NDCG@10_authors", "Recall@20")
PAPER_DELTAS = ("NDCG@10", "Recall@20")


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}"


def paper_table(final: pd.DataFrame, compared: pd.DataFrame, ranks: pd.DataFrame) -> pd.DataFrame:
    """Datasets x methods as the paper prints them: NDCG@10 (trec_eval), NDCG@10 as the authors
    compute it, Recall@20 (means over seeds), the difference from basic in percent with its 95%
    interval (opera.report.comparisons), and the method's average rank (per model)."""
    main = comparisons.main_rows(compared)
    rows = []
    for _, row in final.iterrows():
        record = {"dataset": row["dataset"], "model": row["model"], "method": row["method"], "n_seeds": row["n_seeds"]}
        for metric in PAPER_METRICS:
            record[metric] = row.get(f"{metric}_mean", math.nan)
        for metric in PAPER_DELTAS:
            match = main[
                (main["dataset"] == row["dataset"])
                & (main["model"] == row["model"])
                & (main["method"] == row["method"])
                & (main["metric"] == metric)
            ]
            found = not match.empty
            for column, source in (("pct", "rel_diff"), ("pct_low", "rel_ci_low"), ("pct_high", "rel_ci_high")):
                record[f"{metric}_{column}"] = 100 * float(match[source].iloc[0]) if found else math.nan
            record[f"{metric}_verdict"] = match["verdict"].iloc[0] if found else ""
        rank = ranks[(ranks["model"] == row["model"]) & (ranks["method"] == row["method"])]
        record["avg_rank"] = float(rank["avg_rank"].iloc[0]) if not rank.empty else math.nan
        rows.append(record)
    return pd.DataFrame(rows)


def write_paper_table(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``paper.csv``, ``paper.md`` and ``paper.tex`` from :func:`paper_table`."""
    out_dir = Path(out_dir)
    paths = [write_table(table, out_dir / "paper.csv")]
    shown = [m for m in PAPER_METRICS if m in table.columns and table[m].notna().any()]
    header = ["dataset", "model", "method", *shown, *(f"Δ{m} % [95% CI]" for m in PAPER_DELTAS), "avg rank"]
    rows = []
    for _, row in table.iterrows():
        cells = [str(row["dataset"]), str(row["model"]), method_registry.display_name(row["method"])]
        cells += ["–" if math.isnan(row[m]) else f"{row[m]:.4f}" for m in shown]
        for metric in PAPER_DELTAS:
            pct = row[f"{metric}_pct"]
            cells.append(
                "–"
                if math.isnan(pct)
                else f"{pct:+.1f} [{row[f'{metric}_pct_low']:+.1f}, {row[f'{metric}_pct_high']:+.1f}]"
            )
        cells.append("–" if math.isnan(row["avg_rank"]) else f"{row['avg_rank']:.2f}")
        rows.append(cells)
    align = ["l", "l", "l"] + ["r"] * (len(header) - 3)
    note = (
        "Means over seeds at each run's final checkpoint. NDCG@10: trec_eval; NDCG@10_authors: as the "
        "authors' code computes it. Δ: difference from basic in percent of basic's value, with a 95% "
        "interval from a bootstrap over queries and seeds (comparisons.csv). Average rank: per model, "
        "over datasets x {NDCG@10, Recall@20}."
    )
    write_text(out_dir / "paper.md", f"{note}\n\n" + _markdown(header, rows, align))
    tex_rows = [[_tex_escape(cell).replace("–", "--") for cell in cells] for cells in rows]
    write_text(
        out_dir / "paper.tex",
        _latex(
            [_tex_escape(h).replace("Δ", "$\\Delta$") for h in header],
            tex_rows,
            align,
            _tex_escape(note),
            "tab:paper",
            group_cols=2,
        ),
    )
    return paths + [out_dir / "paper.md", out_dir / "paper.tex"]


def budget_table(long: pd.DataFrame, metrics: Sequence[str] = MAIN_METRICS) -> pd.DataFrame:
    """Per dataset x model x trained method x budget: each run read at its last step, mean and std
    over seeds of the main metrics and of the training time (how quality moves with the budget)."""
    finals = long[long["budget"].notna() & (long["step"] == long["budget"])]
    columns = {"n_seeds": ("seed", "nunique")}
    for name in [*metrics, "train_seconds"]:
        columns[f"{name}_mean"] = (name, "mean")
        columns[f"{name}_std"] = (name, "std")
    table = finals.groupby(["dataset", "model", "method", "budget", "main_run"], sort=False).agg(**columns)
    return _sort(table.reset_index(), ["dataset", "model", "method", "budget"])


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
    compared = comparisons.comparisons(_final_rows(long), MAIN_METRICS, equivalence_margin)
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
