"""The result tables in their three forms (csv, md, tex): results per dataset x model x method,
the average rank, and the paper's table."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from opera import methods as method_registry
from opera.io import write_text
from opera.report import comparisons, frames
from opera.report.frames import MAIN_METRICS, write_table

log = logging.getLogger(__name__)

AVG_RANK_COLUMNS = ["model", "method", "avg_rank", "n_cells"]


_EPS = 1e-12


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
    final: pd.DataFrame, out_dir: str | Path, display_metrics: Sequence[str] | None = None
) -> list[Path]:
    """Write ``results.csv`` (every metric, numeric mean/std), ``results.md`` and ``results.tex``
    (``display_metrics`` as "mean ± std" with 4 decimals, best method per dataset x model in bold,
    plus training time in seconds and the number of seeds). Returns the written paths."""
    out_dir = Path(out_dir)
    display_metrics = frames.display_metrics() if display_metrics is None else display_metrics
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
