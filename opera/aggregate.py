"""Aggregation of evaluated runs: result tables, average rank, significance and time to quality.

Input is one ``metrics.json`` per evaluated run (dataset, model, method, seed, step), each beside
its ``per_query.parquet``. :func:`aggregate` turns them into the tables of ``results/tables/``:

- ``runs.csv``: the long table, one row per evaluated checkpoint;
- ``results.{csv,md,tex}``: per dataset x model x method, the final checkpoint of every seed,
  mean and standard deviation over seeds (metrics in [0, 1], 4 decimals; best method in bold);
- ``avg_rank.{csv,md,tex}``: per model, each method's mean rank over (dataset, metric) cells;
- ``significance.csv``: paired t-test and Wilcoxon signed-rank test over queries (dp vs basic,
  sp vs basic) on the final checkpoints, per-query values averaged over seeds;
- ``time_to_quality.csv``: the first training wall time at which each method reaches basic's
  final NDCG@10, and its ratio to basic's own time.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from opera import io
from opera import methods as method_registry
from opera.io import read_json, read_train_log, write_text

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
TEST_NAME = "paired t-test (two-sided); Wilcoxon signed-rank"
SIGNIFICANCE_COLUMNS = [
    "dataset",
    "model",
    "method",
    "baseline",
    "metric",
    "n_queries",
    "mean_method",
    "mean_baseline",
    "mean_diff",
    "t_stat",
    "p_ttest",
    "p_wilcoxon",
    "test",
]
TTQ_COLUMNS = [
    "dataset",
    "model",
    "method",
    "reading",
    "target",
    "tolerance",
    "reached",
    "budget",
    "step_at_target",
    "time_to_target",
    "total_train_seconds",
    "ratio_to_reference",
    "ratio_to_reference_total",
]
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


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
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


def train_seconds_from_logs(train_logs: Mapping[tuple, str | Path]) -> dict[tuple, float]:
    """{(*run, step): elapsed} from {run: train_log path}, run = (dataset, model, method, seed, budget)."""
    seconds = {}
    for run, path in train_logs.items():
        for entry in read_train_log(path):
            seconds[(*run, int(entry["step"]))] = float(entry["elapsed"])
    return seconds


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
    paths = [_write_csv(final, out_dir / "results.csv")]
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
        ids = [str(row["dataset"]), str(row["model"]), str(row["method"])]
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
    paths = [_write_csv(ranks, out_dir / "avg_rank.csv")]
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
            [str(row["model"]), str(row["method"]), f"**{value}**" if best[i] else value, str(row["n_cells"])]
        )
        tex_rows.append(
            [
                _tex_escape(row["model"]),
                _tex_escape(row["method"]),
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


# --- significance ----------------------------------------------------------------------------------


def _per_query_means(rows: pd.DataFrame, metric: str, cache: dict) -> pd.Series | None:
    """Per-query values of ``metric`` over the given runs (one per seed), averaged over seeds."""
    series = []
    for path in rows["per_query_path"]:
        if path not in cache:  # verified against its checksum; a missing one is an error, never a skipped run
            frame = io.load_table(path)
            frame["query_id"] = frame["query_id"].astype(str)
            cache[path] = frame.set_index("query_id")
        frame = cache[path]
        if metric not in frame.columns:
            continue
        series.append(frame[metric].astype(float))
    if not series:
        return None
    return pd.concat(series, axis=1, join="inner").mean(axis=1)


def paired_tests(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(t statistic, two-sided paired t-test p, Wilcoxon signed-rank p) for paired samples.

    All-zero differences give t = 0 and both p = 1.0 (no evidence of a difference); fewer than two
    pairs give NaN."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2:
        return math.nan, math.nan, math.nan
    diff = a - b
    if np.all(np.abs(diff) <= _EPS):
        return 0.0, 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(a, b)
        w = stats.wilcoxon(a, b, zero_method="wilcox")
    return float(t.statistic), float(t.pvalue), float(w.pvalue)


def tested_pairs() -> list[tuple[str, str]]:
    """(method, baseline) pairs of the significance table: every method the registry marks as tested."""
    reference = method_registry.REFERENCE_METHOD
    return [(name, reference) for name, entry in method_registry.METHODS.items() if entry.tested]


def significance(
    long: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None, metrics: Sequence[str] = MAIN_METRICS
) -> pd.DataFrame:
    """Paired tests over queries at each run's final step, per dataset x model x pair x metric.

    Per-query values are averaged over seeds, the two methods inner-joined on query_id, then a
    two-sided paired t-test and a Wilcoxon signed-rank test (zero_method="wilcox") are run on the
    differences (method - baseline). Pairs with an absent method are skipped; the default pairs
    are :func:`tested_pairs`."""
    pairs = tested_pairs() if pairs is None else pairs
    last = _final_rows(long)
    cache: dict = {}
    rows = []
    for (dataset, model), group in last.groupby(["dataset", "model"], sort=True):
        present = set(group["method"])
        for method, baseline in pairs:
            if method not in present or baseline not in present:
                log.info("significance: %s/%s lacks %s or %s; skipped", dataset, model, method, baseline)
                continue
            for metric in metrics:
                a = _per_query_means(group[group["method"] == method], metric, cache)
                b = _per_query_means(group[group["method"] == baseline], metric, cache)
                if a is None or b is None:
                    continue
                joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
                t_stat, p_t, p_w = paired_tests(joined["a"].to_numpy(), joined["b"].to_numpy())
                rows.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "method": method,
                        "baseline": baseline,
                        "metric": metric,
                        "n_queries": len(joined),
                        "mean_method": float(joined["a"].mean()),
                        "mean_baseline": float(joined["b"].mean()),
                        "mean_diff": float((joined["a"] - joined["b"]).mean()),
                        "t_stat": t_stat,
                        "p_ttest": p_t,
                        "p_wilcoxon": p_w,
                        "test": TEST_NAME,
                    }
                )
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


# --- time to quality -------------------------------------------------------------------------------


def _first_reaching(curve: pd.DataFrame, metric: str, target: float) -> tuple[bool, float, object]:
    """(reached, train seconds, index) of the first row of ``curve`` whose metric reaches ``target``."""
    hit = curve[curve[metric] >= target - _EPS]
    if hit.empty:
        return False, math.nan, pd.NA
    return True, float(hit["train_seconds"].iloc[0]), int(hit.index[0])


def time_to_quality(
    long: pd.DataFrame,
    reference: str = method_registry.REFERENCE_METHOD,
    metric: str = "NDCG@10",
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """Time to quality, in two readings (column ``reading``), per dataset x model x trained method.

    The target is the reference method's final ``metric`` of its main run (mean over seeds) minus
    ``tolerance`` ("comparable" quality).

    - ``checkpoint``: along the seed-averaged (train_seconds, metric) curve of the method's main
      run, the first checkpoint that reaches the target. A checkpoint half-way through a run is not
      a run of half the length: its learning rate has not decayed and its schedules are half-way.
    - ``budget`` (only when the grid has ``budgets``): among the method's runs of every budget, each
      read at its last step, the smallest budget that reaches the target, and that run's training
      time: the authors' reading (separate runs of different lengths).

    ``budget`` is the run read (checkpoint reading: the main run; budget reading: the budget that
    reaches the target). Two ratios: ``ratio_to_reference``, to the time at which the reference
    itself reaches the target in the same reading, and ``ratio_to_reference_total``, to the
    reference's total training time (the paper's "comparable performance in less than 50% of the
    training time required by standard finetuning")."""
    rows = []
    main = main_runs(long)
    last = _final_rows(main)
    has_budgets = not long["main_run"].all()
    for (dataset, model), group in long.groupby(["dataset", "model"], sort=True):
        ref_final = last[(last["dataset"] == dataset) & (last["model"] == model) & (last["method"] == reference)]
        if ref_final.empty:
            log.warning("time to quality: %s/%s has no %s runs; skipped", dataset, model, reference)
            continue
        target = float(ref_final[metric].mean()) - tolerance
        cell = []
        for method, runs in group.groupby("method", sort=False):
            if not method_registry.get(method).trains:
                continue
            main_curve = runs[runs["main_run"]].groupby("step")[["train_seconds", metric]].mean().sort_index()
            main_budget = (
                int(runs.loc[runs["main_run"], "budget"].dropna().max()) if runs["budget"].notna().any() else pd.NA
            )
            readings = {"checkpoint": main_curve}
            if has_budgets:
                finals = runs[runs["step"] == runs["budget"]]
                readings["budget"] = finals.groupby("budget")[["train_seconds", metric]].mean().sort_index()
            for reading, curve in readings.items():
                reached, seconds, index = _first_reaching(curve, metric, target)
                cell.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "method": method,
                        "reading": reading,
                        "target": target,
                        "tolerance": tolerance,
                        "reached": reached,
                        "budget": main_budget if reading == "checkpoint" else index,
                        "step_at_target": index,
                        "time_to_target": seconds,
                        "total_train_seconds": float(main_curve["train_seconds"].iloc[-1]),
                    }
                )
        for reading in ("checkpoint", "budget"):
            of_reading = [r for r in cell if r["reading"] == reading]
            ref = next((r for r in of_reading if r["method"] == reference), None)
            for r in of_reading:
                ref_time = ref["time_to_target"] if ref else math.nan
                r["ratio_to_reference"] = (
                    r["time_to_target"] / ref_time if ref_time and not math.isnan(ref_time) else math.nan
                )
                ref_total = ref["total_train_seconds"] if ref else math.nan
                r["ratio_to_reference_total"] = r["time_to_target"] / ref_total if ref_total else math.nan
        rows += cell
    out = pd.DataFrame(rows, columns=TTQ_COLUMNS)
    out["step_at_target"] = out["step_at_target"].astype("Int64")
    out["budget"] = out["budget"].astype("Int64")
    out["reached"] = out["reached"].astype(bool)
    return _sort(out, ["dataset", "model", "method", "reading"])


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


# --- everything ------------------------------------------------------------------------------------


def aggregate(
    metrics_paths: Iterable[str | Path],
    tables_dir: str | Path,
    train_seconds: Mapping[tuple, float] | None = None,
    ttq_tolerance: float = 0.0,
    rank_pretrain: bool = True,
) -> dict[str, pd.DataFrame]:
    """Collect the runs and write every table into ``tables_dir``; return the DataFrames under the
    keys long, final, avg_rank, significance, time_to_quality. ``rank_pretrain`` false leaves the
    methods that do not train (pretrain) out of the average rank."""
    tables_dir = Path(tables_dir)
    long = collect(metrics_paths, train_seconds)
    if long.empty:
        raise ValueError("aggregate: no metrics files given")
    main = main_runs(long)
    final = final_results(main)
    ranked = None if rank_pretrain else [m for m in final["method"].unique() if method_registry.get(m).trains]
    ranks = average_rank(final, methods=ranked)
    sig = significance(main)
    ttq = time_to_quality(long, tolerance=ttq_tolerance)
    budgets = budget_table(long)
    _write_csv(long, tables_dir / "runs.csv")
    _write_csv(budgets, tables_dir / "budgets.csv")
    results_tables(final, tables_dir)
    write_avg_rank(ranks, tables_dir)
    _write_csv(sig, tables_dir / "significance.csv")
    _write_csv(ttq, tables_dir / "time_to_quality.csv")
    return {
        "long": long,
        "main": main,
        "final": final,
        "avg_rank": ranks,
        "significance": sig,
        "time_to_quality": ttq,
        "budgets": budgets,
    }
