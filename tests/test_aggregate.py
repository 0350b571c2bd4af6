"""Unit tests of opera.report.aggregate on hand-made metrics.json / per_query.parquet files."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from opera import io
from opera import methods as method_registry
from opera.io import save_table, write_json
from opera.report import aggregate as agg
from opera.report import comparisons, frames, html_tables, time_to_quality, uncertainty

MODEL = "m"

# (dataset, method) -> {seed: {step: (train_seconds, NDCG@10, Recall@20)}}
RUNS = {
    ("d1", "pretrain"): {None: {0: (0.0, 0.30, 0.50)}},
    ("d1", "basic"): {
        1: {50: (50.0, 0.35, 0.55), 100: (100.0, 0.40, 0.60)},
        2: {50: (52.0, 0.37, 0.55), 100: (104.0, 0.42, 0.60)},
    },
    ("d1", "sp"): {
        1: {50: (30.0, 0.30, 0.58), 100: (60.0, 0.38, 0.62)},
        2: {50: (30.0, 0.32, 0.58), 100: (62.0, 0.40, 0.62)},
    },
    ("d1", "dp"): {
        1: {50: (40.0, 0.42, 0.57), 100: (80.0, 0.44, 0.60)},
        2: {50: (42.0, 0.42, 0.57), 100: (84.0, 0.46, 0.60)},
    },
    ("d2", "pretrain"): {None: {0: (0.0, 0.20, 0.40)}},
    ("d2", "basic"): {
        1: {50: (20.0, 0.25, 0.45), 100: (40.0, 0.30, 0.50)},
        2: {50: (20.0, 0.25, 0.47), 100: (40.0, 0.30, 0.52)},
    },
    ("d2", "sp"): {
        1: {50: (10.0, 0.30, 0.40), 100: (20.0, 0.30, 0.45)},
        2: {50: (10.0, 0.30, 0.42), 100: (20.0, 0.30, 0.47)},
    },
    ("d2", "dp"): {
        1: {50: (15.0, 0.20, 0.50), 100: (30.0, 0.28, 0.55)},
        2: {50: (15.0, 0.20, 0.52), 100: (30.0, 0.30, 0.57)},
    },
}

QUERIES = [f"q{i}" for i in range(1, 7)]
# Final-step per-query NDCG@10 on d1 (Recall@20 = NDCG@10 / 2 + 0.1), per seed.
PER_QUERY_D1 = {
    ("basic", 1): [0.10, 0.50, 0.30, 0.70, 0.20],
    ("basic", 2): [0.20, 0.40, 0.30, 0.60, 0.40],
    ("dp", 1): [0.30, 0.60, 0.20, 0.90, 0.50, 0.99],  # q6 only in dp: dropped by the inner join
    ("dp", 2): [0.10, 0.80, 0.50, 0.80, 0.30, 0.99],
}
PER_QUERY_D1[("sp", 1)] = PER_QUERY_D1[("basic", 1)]  # sp identical to basic: all differences zero
PER_QUERY_D1[("sp", 2)] = PER_QUERY_D1[("basic", 2)]


def _write_run(root, dataset, method, seed, step, seconds, ndcg, recall, per_query):
    run_dir = root / dataset / MODEL / (method if method == "pretrain" else f"{method}/seed{seed}/step{step}")
    metrics = {"NDCG@10": ndcg, "Recall@20": recall, "MRR@10": ndcg + 0.05, "NDCG@100": ndcg + 0.1}
    write_json(
        run_dir / "metrics.json",
        {
            "dataset": dataset,
            "model": MODEL,
            "method": method,
            "seed": seed,
            "step": step,
            "split": "test",
            "train_seconds": seconds,
            "n_queries": len(per_query),
            "n_excluded": 1,
            "metrics": metrics,
        },
    )
    values = np.asarray(per_query, dtype=float)
    table = pd.DataFrame(
        {
            "query_id": QUERIES[: len(values)],
            "NDCG@10": values,
            "Recall@20": values / 2 + 0.1,
            "MRR@10": values,
            "NDCG@100": values,
        }
    )
    save_table(run_dir / "per_query.parquet", table)
    return run_dir / "metrics.json"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    out = []
    for (dataset, method), seeds in RUNS.items():
        for seed, steps in seeds.items():
            final = max(steps)
            for step, (seconds, ndcg, recall) in steps.items():
                if dataset == "d1" and step == final and (method, seed) in PER_QUERY_D1:
                    per_query = PER_QUERY_D1[(method, seed)]
                elif dataset == "d1" and step != final:
                    per_query = [1.0] * 5  # a non-final step: must never enter the tests
                else:
                    per_query = rng.uniform(size=5).round(3)
                out.append(_write_run(root, dataset, method, seed, step, seconds, ndcg, recall, per_query))
    return out


@pytest.fixture(scope="module")
def long(paths):
    return agg.collect(paths)


@pytest.fixture(scope="module")
def final(long):
    return agg.final_results(long)


def _row(frame, **keys):
    mask = np.ones(len(frame), dtype=bool)
    for key, value in keys.items():
        mask &= (frame[key] == value).fillna(False).to_numpy(dtype=bool)
    assert mask.sum() == 1, keys
    return frame[mask].iloc[0]


def test_collect(long, paths):
    assert len(long) == len(paths) == 26
    assert list(long.columns[: len(agg.ID_COLUMNS)]) == agg.ID_COLUMNS
    assert {"NDCG@10", "Recall@20", "MRR@10", "NDCG@100", "per_query_path"} <= set(long.columns)
    pre = _row(long, dataset="d1", method="pretrain")
    assert pd.isna(pre["seed"]) and pre["step"] == 0 and pre["train_seconds"] == 0
    assert pre["per_query_path"].endswith("pretrain/per_query.parquet")
    assert _row(long, dataset="d1", method="dp", seed=2, step=100)["NDCG@10"] == pytest.approx(0.46)


def test_final_results(final):
    assert len(final) == 8
    assert list(final.columns[:10]) == [
        "dataset",
        "model",
        "method",
        "split",
        "step",
        "n_seeds",
        "NDCG@10_mean",
        "NDCG@10_std",
        "Recall@20_mean",
        "Recall@20_std",
    ]
    basic = _row(final, dataset="d1", method="basic")
    assert basic["n_seeds"] == 2 and basic["step"] == 100
    assert basic["NDCG@10_mean"] == pytest.approx(0.41)
    assert basic["NDCG@10_std"] == pytest.approx(np.std([0.40, 0.42], ddof=1))
    assert basic["train_seconds_mean"] == pytest.approx(102.0)
    assert basic["train_seconds_std"] == pytest.approx(np.std([100.0, 104.0], ddof=1))
    pre = _row(final, dataset="d2", method="pretrain")
    assert pre["n_seeds"] == 1 and pre["NDCG@10_mean"] == pytest.approx(0.20) and math.isnan(pre["NDCG@10_std"])
    # rows in the paper's method order
    assert list(final[final["dataset"] == "d1"]["method"]) == ["pretrain", "basic", "sp", "dp"]


def test_average_rank(final):
    ranks = agg.average_rank(final)
    assert list(ranks.columns) == ["model", "method", "avg_rank", "n_cells"]
    # d1 NDCG@10: dp 1, basic 2, sp 3, pretrain 4     d1 Recall@20: sp 1, basic = dp 2.5, pretrain 4
    # d2 NDCG@10: basic = sp 1.5, dp 3, pretrain 4    d2 Recall@20: dp 1, basic 2, sp 3, pretrain 4
    expected = {
        "dp": (1 + 2.5 + 3 + 1) / 4,
        "basic": (2 + 2.5 + 1.5 + 2) / 4,
        "sp": (3 + 1 + 1.5 + 3) / 4,
        "pretrain": 4.0,
    }
    assert list(ranks["method"]) == ["dp", "basic", "sp", "pretrain"]  # sorted by avg_rank
    for _, row in ranks.iterrows():
        assert row["avg_rank"] == pytest.approx(expected[row["method"]])
        assert row["n_cells"] == 4
    only_one = agg.average_rank(final, metrics=("Recall@20",), methods=("basic", "dp"))
    assert dict(zip(only_one["method"], only_one["avg_rank"], strict=True)) == {"dp": 1.25, "basic": 1.75}


def test_comparisons_read_final_per_query_values(long):
    table = comparisons.comparisons(frames.final_rows(long), agg.MAIN_METRICS, margin=0.01)
    assert list(table.columns) == comparisons.COLUMNS
    # per dataset: pretrain, sp, dp vs basic; dp vs its controls is absent (no dp_query, dp_doc)
    assert len(table) == 2 * 3 * 2  # datasets x pairs x metrics
    row = _row(table, dataset="d1", method="dp", baseline="basic", metric="NDCG@10")
    dp_runs = np.array([PER_QUERY_D1[("dp", 1)][:5], PER_QUERY_D1[("dp", 2)][:5]])  # q6: basic lacks it
    basic_runs = np.array([PER_QUERY_D1[("basic", 1)], PER_QUERY_D1[("basic", 2)]])
    dp, basic = dp_runs.mean(axis=0), basic_runs.mean(axis=0)
    assert row["n_queries"] == 5 and row["n_seeds"] == 2 and row["steps"] == 100
    assert row["diff"] == pytest.approx(float(np.mean(dp - basic)))
    assert row["mean_method"] == pytest.approx(dp.mean()) and row["mean_baseline"] == pytest.approx(basic.mean())
    expected = stats.ttest_rel(dp, basic)
    assert row["t_queries"] == pytest.approx(expected.statistic)
    assert row["p_queries"] == pytest.approx(expected.pvalue)
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(dp, basic, zero_method="wilcox").pvalue)
    welch = stats.ttest_ind(dp_runs.mean(axis=1), basic_runs.mean(axis=1), equal_var=False)
    assert row["p_seeds"] == pytest.approx(welch.pvalue) and row["test_level"] == "seeds"
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    assert row["rel_diff"] == pytest.approx(row["diff"] / basic.mean())
    recall = _row(table, dataset="d1", method="dp", baseline="basic", metric="Recall@20")
    assert recall["diff"] == pytest.approx(float(np.mean(dp - basic)) / 2)
    same = _row(table, dataset="d1", method="sp", baseline="basic", metric="NDCG@10")
    assert same["diff"] == 0.0 and same["p_wilcoxon"] == 1.0 and same["p_queries"] == 1.0
    assert same["p_seeds"] == pytest.approx(1.0)
    assert same["ci_low"] < 0 < same["ci_high"]  # identical runs, but each side's seeds are resampled apart
    pretrain = _row(table, dataset="d1", method="pretrain", baseline="basic", metric="NDCG@10")
    assert pretrain["n_seeds"] == 1 and math.isnan(pretrain["p_seeds"]) and pretrain["test_level"] == "queries"
    low, high = row["seed_ci_low"], row["seed_ci_high"]  # Welch's t-interval over the two seed means a side
    assert low < row["diff"] < high and row["p_primary"] == row["p_seeds"]
    assert pretrain["p_primary"] == pretrain["p_queries"]  # one run: the test over queries is primary
    # Holm once over the whole table: every row's primary test is one member of the family
    assert table["p_holm"].to_numpy() == pytest.approx(uncertainty.holm(table["p_primary"]), nan_ok=True)
    assert set(table["verdict"]) <= set(comparisons.VERDICTS)


def test_comparison_pairs_follow_the_registry():
    assert comparisons.compared_pairs(["dp", "basic", "sp", "random", "dp_doc"]) == [
        ("sp", "basic"),
        ("random", "basic"),
        ("dp", "basic"),
        ("dp_doc", "basic"),
        ("sp", "random"),
        ("dp", "dp_doc"),
    ]
    assert comparisons.compared_pairs(["dp", "sp"]) == []  # no reference: nothing to compare with


@pytest.mark.parametrize(
    ("p_holm", "p_equivalence", "diff", "expected"),
    [
        (0.01, 0.9, 0.02, "higher"),
        (0.01, 0.9, -0.02, "lower"),
        (0.5, 0.01, 0.001, "equivalent"),
        (math.nan, 0.01, 0.001, "equivalent"),  # no primary test (one run a side, one query): TOST may still say
        (0.5, 0.2, 0.0, "inconclusive"),
    ],
)
def test_verdict(p_holm, p_equivalence, diff, expected):
    assert comparisons.verdict({"p_holm": p_holm, "p_equivalence": p_equivalence, "diff": diff}) == expected


def test_aggregate_writes_tables(paths, tmp_path):
    out = agg.aggregate(paths, tmp_path / "tables")
    assert set(out) == {
        "long",
        "main",
        "final",
        "avg_rank",
        "comparisons",
        "time_to_quality",
        "budgets",
        "paper",
        "claims",
    }
    tables = tmp_path / "tables"
    for name in [
        "runs.csv",
        "results.csv",
        "results.md",
        "results.tex",
        "avg_rank.csv",
        "avg_rank.md",
        "avg_rank.tex",
        "comparisons.csv",
        "time_to_quality.csv",
        "budgets.csv",
        "paper.csv",
        "paper.md",
        "paper.tex",
        "claims.csv",
        "claims.md",
    ]:
        assert (tables / name).stat().st_size > 0, name
    results = pd.read_csv(tables / "results.csv")
    assert list(results.columns[:8]) == [
        "dataset",
        "model",
        "method",
        "split",
        "step",
        "n_seeds",
        "NDCG@10_mean",
        "NDCG@10_std",
    ]
    assert "train_seconds_mean" in results.columns and len(results) == 8
    assert list(pd.read_csv(tables / "avg_rank.csv").columns) == ["model", "method", "avg_rank", "n_cells"]
    assert list(pd.read_csv(tables / "comparisons.csv").columns) == comparisons.COLUMNS
    assert list(pd.read_csv(tables / "time_to_quality.csv").columns) == time_to_quality.COLUMNS
    paper = pd.read_csv(tables / "paper.csv")
    dp = paper[(paper["dataset"] == "d1") & (paper["method"] == "dp")].iloc[0]
    dp_row = _row(out["comparisons"], dataset="d1", method="dp", baseline="basic", metric="NDCG@10")
    assert dp["NDCG@10_pct"] == pytest.approx(100 * dp_row["rel_diff"])
    assert dp["NDCG@10"] == pytest.approx(0.45) and dp["avg_rank"] == pytest.approx(1.875)
    assert math.isnan(paper[(paper["dataset"] == "d1") & (paper["method"] == "basic")]["NDCG@10_pct"].iloc[0])
    assert "Δ" in (tables / "paper.md").read_text() and "$\\Delta$" in (tables / "paper.tex").read_text()

    md = (tables / "results.md").read_text()
    assert "| dataset | model | method | NDCG@10 | Recall@20 |" in re.sub(" +", " ", md)
    assert "**0.4500 ± 0.0141**" in md  # d1 best NDCG@10: dp
    assert "**0.6200 ± 0.0000**" in md  # d1 best Recall@20: sp
    assert md.count("**0.3000 ± 0.0000**") == 2  # d2 NDCG@10: basic and sp tie, both bold
    assert "| 0.3000 " in md  # pretrain: one seed, plain mean, not bold
    tex = (tables / "results.tex").read_text()
    assert "\\textbf{0.4500 $\\pm$ 0.0141}" in tex and "\\begin{tabular}" in tex and "\\toprule" in tex
    rank_md = (tables / "avg_rank.md").read_text()
    assert "**1.88**" in rank_md and "\\textbf{1.88}" in (tables / "avg_rank.tex").read_text()


def test_aggregate_without_inputs(tmp_path):
    with pytest.raises(ValueError, match="no metrics files"):
        agg.aggregate([], tmp_path)


def test_read_train_log(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text('{"step": 1, "elapsed": 0.5, "loss": 1.0, "lr": 0.1, "sampler": {}}\n\n{"step": 2}\n')
    assert [e["step"] for e in io.read_train_log(path)] == [1, 2]


def test_average_rank_without_pretrain(paths, tmp_path):
    frames = agg.aggregate(paths, tmp_path / "tables", rank_pretrain=False)
    ranks = frames["avg_rank"]
    assert "pretrain" not in set(ranks["method"])
    # pretrain ranked last in every cell, so leaving it out changes no other method's rank here
    with_pretrain = agg.average_rank(frames["final"])
    for method in ("dp", "basic", "sp"):
        assert _row(ranks, method=method)["avg_rank"] == pytest.approx(_row(with_pretrain, method=method)["avg_rank"])


def _with_precision(path, tmp_path, name, computed):
    """A copy of the run at ``path`` (metrics.json and per_query.parquet) that records ``computed``."""
    import shutil

    from opera.io import read_json

    copy = tmp_path / name
    shutil.copytree(path.parent, copy)
    write_json(copy / "metrics.json", {**read_json(path), "precision": computed})
    return copy / "metrics.json"


def test_precisions_are_recorded_in_runs_and_one_per_dataset_and_model(paths, tmp_path):
    d1 = [p for p in paths if "/d1/" in str(p)]
    pretrain = next(p for p in d1 if "/pretrain/" in str(p))
    basic = next(p for p in d1 if "/basic/" in str(p))
    bf16 = {"train": None, "corpus": "bf16", "queries": "bf16"}
    same = [
        _with_precision(pretrain, tmp_path, "pre", bf16),
        _with_precision(basic, tmp_path, "b", bf16 | {"train": "bf16"}),
    ]
    assert set(agg.collect(same)["precision"]) == {"bf16"}
    # a checkpoint trained on an AVX2 machine (auto: fp32) beside a base model evaluated at bf16
    fp32 = {"train": "fp32", "corpus": "fp32", "queries": "fp32"}
    mixed = [same[0], _with_precision(basic, tmp_path, "b32", fp32)]
    with pytest.raises(ValueError, match=r"d1 x .* different precisions \(bf16: pretrain; fp32: basic\).*explicitly"):
        agg.collect(mixed)
    store_elsewhere = {"train": "fp32", "corpus": "bf16", "queries": "fp32"}
    assert agg.precision_label(store_elsewhere) == "train fp32, corpus bf16, queries fp32"
    assert agg.precision_label(None) == "unrecorded"


def test_display_names_label_the_readable_tables_and_html_pages_but_not_the_csvs(paths, tmp_path):
    """`display_names` rename a method in the md, tex and html tables (and plots); CSVs keep its id.
    The report's HTML pages show the tables as tables: bold best cells kept, numbers right-aligned."""
    tables = tmp_path / "tables"
    with method_registry.display_names({"dp": "OPERA-DP"}):
        out = agg.aggregate(paths, tables)
        pages = agg.write_html_pages(tables, out | {"sampler_diagnostics": out["budgets"].head(0)})
    assert method_registry.display_name("dp") == "dp"  # the names hold inside the block only
    for name in ("results.md", "results.tex", "avg_rank.md", "paper.md", "results.html", "paper.html"):
        text = (tables / name).read_text()
        assert "OPERA-DP" in text and "| dp " not in text, name
    assert (
        "dp" in set(pd.read_csv(tables / "results.csv")["method"])
        and "OPERA-DP" not in (tables / "runs.csv").read_text()
    )
    assert sorted(page.name for page in pages) == sorted(f"{stem}.html" for stem in html_tables.REPORT_TABLES)
    results = (tables / "results.html").read_text()
    assert "<table>" in results and '<td class="r"><strong>0.4500 ± 0.0141</strong></td>' in results
    assert "<td>OPERA-DP</td>" in results and "**" not in results
    comparisons_page = (tables / "comparisons.html").read_text()
    assert comparisons_page.count("<tr") == len(out["comparisons"]) + 1  # a header row and one per comparison


def test_html_page_escapes_cell_text():
    page = html_tables.markdown_page("a <note> & more\n\n| m | v |\n| :- | -: |\n| <b> | **1** |\n", "T")
    assert (
        "&lt;note&gt; &amp; more" in page
        and "<td>&lt;b&gt;</td>" in page
        and '<td class="r"><strong>1</strong></td>' in page
    )
