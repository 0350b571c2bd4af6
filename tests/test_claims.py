"""opera.report.claims: each of the paper's claims read off a hand-made comparisons table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from opera.report import claims, comparisons


@pytest.mark.parametrize(
    ("low", "high", "claimed", "expected"),
    [
        (0.5, 3.0, 1.9, "supported"),
        (0.1, 1.5, 1.9, "smaller than claimed"),
        (-1.0, 1.5, 1.9, "contradicted"),  # excludes the paper's +1.9%, shows no gain
        (-3.0, -0.5, 1.9, "contradicted"),
        (-1.0, 2.5, 1.9, "inconclusive"),  # holds both 0 and +1.9%
        (0.2, 0.8, 0.5, "supported"),  # sp's +0.5%
        (0.1, 0.4, 0.5, "smaller than claimed"),
        (-0.4, 0.2, 0.5, "contradicted"),
        (-0.4, 0.6, 0.5, "inconclusive"),
    ],
)
def test_effect_verdict(low, high, claimed, expected):
    assert claims.effect_verdict(low, high, claimed) == expected


@pytest.mark.parametrize(
    ("dp", "basic_low", "expected"),
    [
        ((-0.005, 0.01), -0.02, "supported"),
        ((-0.03, -0.02), -0.02, "contradicted"),
        ((-0.02, 0.0), -0.03, "inconclusive"),
        ((-0.005, 0.01), -0.005, "untestable"),  # basic's own half run is within the tolerance
    ],
)
def test_time_verdict(dp, basic_low, expected):
    assert claims.time_verdict(*dp, basic_low, tolerance=0.01) == expected


def comparison(method, steps, baseline, metric, diff, low, high, level="seeds", mean_baseline=0.5):
    """A comparisons row whose primary interval is [low, high] (Welch over seeds, or the bootstrap
    for a one-run arm); the other interval is deliberately different, so a test sees which is read."""
    seed = (low, high) if level == "seeds" else (float("nan"), float("nan"))
    boot = (diff - 0.001, diff + 0.001) if level == "seeds" else (low, high)
    return {
        "dataset": "d",
        "model": "m",
        "metric": metric,
        "method": method,
        "steps": steps,
        "baseline": baseline,
        "baseline_steps": 64,
        "mean_baseline": mean_baseline,
        "diff": diff,
        "ci_low": boot[0],
        "ci_high": boot[1],
        "seed_ci_low": seed[0],
        "seed_ci_high": seed[1],
        "test_level": level,
    }


def test_claims_from_a_comparisons_table():
    rows = [
        comparison("pretrain", None, "basic", "NDCG@10", -0.05, -0.06, -0.04, level="queries"),
        comparison("sp", 64, "basic", "NDCG@10", -0.02, -0.03, -0.01),  # -4% [-6%, -2%] of 0.5
        comparison("dp", 64, "basic", "NDCG@10", 0.003, -0.002, 0.012),  # +0.6% [-0.4%, +2.4%]
        comparison("dp", 64, "basic", "Recall@20", 0.01, 0.005, 0.015),  # +2% [+1%, +3%]
        comparison("dp", 32, "basic", "NDCG@10", -0.004, -0.008, 0.0),
        comparison("basic", 32, "basic", "NDCG@10", -0.02, -0.03, -0.012),
        comparison("dp", 64, "dp_doc", "NDCG@10", 0.0, -0.01, 0.01),
    ]
    table = pd.DataFrame(rows)
    table["steps"] = table["steps"].astype("Int64")
    found = claims.claims(table, tolerance=0.01)
    assert list(found.columns) == claims.COLUMNS
    out = found.set_index(["claim", "metric"])
    sp = out.loc[("sp_ndcg", "NDCG@10")]
    assert sp["verdict"] == "contradicted" and sp["unit"] == "%" and sp["interval"] == "Welch t over seeds"
    assert (sp["estimate"], sp["ci_low"], sp["ci_high"]) == pytest.approx((-4.0, -6.0, -2.0))  # Welch, not bootstrap
    assert out.loc[("dp_gain", "NDCG@10")]["verdict"] == "inconclusive"  # [-0.4%, +2.4%] holds 0 and 1.9%
    assert out.loc[("dp_gain", "Recall@20")]["verdict"] == "supported"  # [+1%, +3%] above 0, reaches 0.7%
    time = out.loc[("dp_time", "NDCG@10")]
    assert time["verdict"] == "supported" and time["estimate"] == pytest.approx(-0.004) and time["unit"] == "abs"
    assert "dp at 32 steps vs basic at 64" in time["evidence"]
    assert "basic at 32: -0.0200 [-0.0300, -0.0120]" in time["evidence"]
    assert list(comparisons.main_rows(table)["method"]) == ["pretrain", "sp", "dp", "dp"]  # no budget rows
    markdown = claims.markdown(found)
    assert "| dp_gain | Recall@20 | +0.7% |" in markdown and "+2.0% [+1.0, +3.0]" in markdown


def test_a_one_run_arm_is_judged_by_the_bootstrap_over_queries():
    rows = [comparison("sp", 64, "basic", "NDCG@10", 0.01, 0.005, 0.02, level="queries")]
    found = claims.claims(pd.DataFrame(rows).astype({"steps": "Int64"}), tolerance=0.01).iloc[0]
    assert found["interval"] == "bootstrap over queries" and found["ci_low"] == pytest.approx(1.0)


def test_claims_need_their_methods():
    rows = [comparison("sp", 64, "basic", "NDCG@10", 0.01, 0.005, 0.02)]
    out = claims.claims(pd.DataFrame(rows).astype({"steps": "Int64"}), tolerance=0.01)
    assert list(out["claim"]) == ["sp_ndcg"]  # no dp: neither dp claim has evidence
    empty = claims.claims(pd.DataFrame(columns=comparisons.COLUMNS), tolerance=0.01)
    assert empty.empty and list(empty.columns) == claims.COLUMNS


def test_a_baseline_of_zero_gives_no_relative_claim():
    rows = [comparison("sp", 64, "basic", "NDCG@10", 0.0, 0.0, 0.0, mean_baseline=0.0)]  # random weights: NDCG 0
    found = claims.claims(pd.DataFrame(rows).astype({"steps": "Int64"}), tolerance=0.01).iloc[0]
    assert found["verdict"] == "inconclusive" and math.isnan(found["estimate"])
    assert "| – |" in claims.markdown(pd.DataFrame([found]))
