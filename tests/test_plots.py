"""Smoke tests of opera.report.plots: every figure is written as a non-empty PNG and PDF."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opera.report import plots, sampler_plots
from opera.report.aggregate import final_results


def _long(seconds_scale: float = 1.0) -> pd.DataFrame:
    rows = []
    for dataset in ("d1", "d2"):
        rows.append(
            {
                "dataset": dataset,
                "model": "org/m",
                "method": "pretrain",
                "seed": pd.NA,
                "step": 0,
                "train_seconds": 0.0,
                "NDCG@10": 0.3,
                "Recall@20": 0.5,
            }
        )
        for i, method in enumerate(["basic", "sp", "random", "infobatch", "dp", "dp_query", "dp_doc"]):
            seeds = (1, 2) if method in ("basic", "dp") else (1,)
            for seed in seeds:
                for step in (50, 100, 150):
                    rows.append(
                        {
                            "dataset": dataset,
                            "model": "org/m",
                            "method": method,
                            "seed": seed,
                            "step": step,
                            "train_seconds": seconds_scale * step * (1.0 - 0.05 * i) + seed,
                            "NDCG@10": 0.3 + 0.001 * step + 0.01 * i + 0.005 * seed,
                            "Recall@20": 0.5 + 0.0008 * step + 0.01 * seed,
                        }
                    )
    frame = pd.DataFrame(rows)
    frame["seed"] = frame["seed"].astype("Int64")
    frame["split"] = "test"
    return frame


def _check(paths, expected):
    assert len(paths) == expected
    for path in paths:
        assert path.exists() and path.stat().st_size > 0, path
    assert {p.suffix for p in paths} == {".png", ".pdf"}


@pytest.mark.parametrize(("x", "kind"), [("step", "metric_vs_steps"), ("train_seconds", "metric_vs_time")])
def test_metric_vs_progress(tmp_path, x, kind):
    paths = plots.metric_vs_progress(_long(), tmp_path, x=x)
    _check(paths, 4)  # 2 datasets x 1 model x (png, pdf)
    assert (tmp_path / f"d1__org_m__{kind}.png").exists()
    _check(plots.metric_vs_progress(_long(seconds_scale=10.0), tmp_path / "minutes", x=x), 4)  # > 600 s: minutes


def test_sampler_diagnostics(tmp_path):
    frame = pd.DataFrame(
        [
            {"method": method, "seed": seed, "step": step, "positive_tv": 0.1 * seed if method == "dp" else 0.0}
            | {"fresh_above_tau": 0.1 * step if method == "dp" else None, "visit_cv": 1 / step}
            | {"distinct_share": 0.1 * step}
            for method in ("basic", "dp")
            for seed in (1, 2)
            for step in (1, 2, 3)
        ]
    ).astype({"fresh_above_tau": float})
    _check(sampler_plots.sampler_diagnostics(frame, tmp_path / "d__m__sampler_diagnostics", title="d · m"), 2)
    empty = frame.assign(fresh_above_tau=np.nan)  # logs without a field: the panel says so, no error
    _check(sampler_plots.sampler_diagnostics(empty, tmp_path / "empty"), 2)


def test_training_time(tmp_path):
    paths = plots.training_time(final_results(_long()), tmp_path)
    _check(paths, 4)
    assert (tmp_path / "d2__org_m__training_time.pdf").exists()


def test_pruning_card(tmp_path):
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame(
        {
            "query_id": [f"q{i // 3}" for i in range(300)],
            "doc_id": [f"d{i}" for i in range(300)],
            "score": rng.normal(0.5, 0.15, size=300),
        }
    )
    kept = pairs.nlargest(75, "score")
    logs = {
        "dp": [
            {
                "step": s,
                "elapsed": s / 10,
                "loss": 1.0,
                "lr": 1e-5,
                "sampler": {"queries_seen": min(100, s), "n_queries": 100},
            }
            for s in range(10, 160, 10)
        ],
        "basic": [
            {"step": 150, "elapsed": 15.0, "loss": 1.0, "lr": 1e-5, "sampler": {"queries_seen": 90, "n_queries": 100}}
        ],
        "infobatch": [{"step": 150, "elapsed": 15.0, "loss": 1.0, "lr": 1e-5, "sampler": {}}],
    }
    _check(plots.pruning_card(pairs, kept, logs, tmp_path / "card" / "d1__m__pruning", pruner="sp"), 2)
    assert (tmp_path / "card" / "d1__m__pruning.png").exists()
    # no coverage curve, only the static bar
    _check(plots.pruning_card(pairs, kept, {}, tmp_path / "card2", pruner="sp"), 2)


def _entry(step, **sampler):
    return {"step": step, "elapsed": step / 10, "loss": 1.0, "lr": 1e-5, "sampler": sampler}


def test_schedules_plot_draws_the_samplers_fields(tmp_path):
    logs = {
        "dp": [
            _entry(s, x=2.0 + s // 16, c=0.25 + s / 400, query_threshold=0.5 + s / 1000, epoch=s // 16)
            for s in range(1, 65)
        ],
        "infobatch": [_entry(s, epoch=s // 25 + 1, pruned=0 if s < 25 else 40, n_queries=400) for s in range(1, 65)],
        "basic": [_entry(s, epoch=1, queries_seen=s * 16, n_queries=400) for s in range(1, 65)],
    }
    _check(sampler_plots.schedules(logs, tmp_path / "d__m__schedules", title="d · m"), 2)
    assert sampler_plots._pruned_per_epoch(logs["infobatch"]) == [(1, 0.0), (2, 0.1), (3, 0.1)]
    assert sampler_plots._sampler_series(logs["dp"], "x")[1][:2] == [2.0, 2.0]
    assert sampler_plots.schedules({"basic": logs["basic"]}, tmp_path / "none") == []  # nothing to show: no file
