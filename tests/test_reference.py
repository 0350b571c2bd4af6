"""A run against the committed reference of its precision class (opera.report.reference)."""

from __future__ import annotations

import pandas as pd
import pytest

from opera.report import reference

ROWS = [
    ("pretrain", None, None, 0, 0.6829, 0.8737),
    ("basic", 42, 64, 16, 0.6931, 0.8770),
    ("basic", 42, 64, 64, 0.7033, 0.8853),
]


def _runs(shift: float = 0.0, precision: str = "fp32") -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {
                "dataset": "scifact",
                "model": "m",
                "method": method,
                "seed": seed,
                "budget": budget,
                "step": step,
                "precision": precision,
                "NDCG@10": ndcg + shift,
                "Recall@20": recall,
                "MRR@10": ndcg,
                "Recall@100": recall,
            }
            for method, seed, budget, step, ndcg, recall in ROWS
        ]
    )
    return frame.astype({"seed": "Int64", "budget": "Int64"})


@pytest.mark.parametrize("precision", sorted(reference.TOLERANCES))
def test_within_and_outside_the_tolerance(precision):
    tolerance = reference.TOLERANCES[precision]
    near = reference.compare(_runs(tolerance / 2), _runs(), tolerance)
    assert near["within"].all() and len(near) == len(ROWS) * len(reference.METRICS)
    far = reference.compare(_runs(tolerance * 1.5), _runs(), tolerance)
    assert set(far.loc[~far["within"], "metric"]) == {"NDCG@10"}


def test_a_run_outside_the_tolerance_fails_the_check_and_names_the_values(tmp_path, capsys):
    """dp's bf16 run against the fp32 reference, labelled fp32: the precision gap is far outside."""
    fp32 = reference.read_runs(reference.REFERENCES["fp32"] / "tables" / "runs.csv")
    bf16 = reference.read_runs(reference.REFERENCES["bf16"] / "tables" / "runs.csv").assign(precision="fp32")
    (tmp_path / "tables").mkdir()
    bf16[fp32.columns].to_csv(tmp_path / "tables" / "runs.csv", index=False)
    assert reference.main([str(tmp_path)]) == 1
    assert "outside the tolerance 0.005" in capsys.readouterr().err


def test_checkpoints_must_match():
    with pytest.raises(ValueError, match="different checkpoints"):
        reference.compare(_runs().iloc[1:], _runs(), 0.01)


def test_the_check_picks_the_reference_of_the_run_s_precision(tmp_path, capsys):
    for name, folder in reference.REFERENCES.items():
        committed = reference.read_runs(folder / "tables" / "runs.csv")
        assert reference.precision_of(committed, folder) == name  # each reference is of its class
        (tmp_path / name / "tables").mkdir(parents=True)
        committed.to_csv(tmp_path / name / "tables" / "runs.csv", index=False)
        assert reference.main([str(tmp_path / name)]) == 0
        assert f"against the {name} reference" in capsys.readouterr().out


def test_a_runs_table_without_precision_is_named(tmp_path):
    (tmp_path / "tables").mkdir()
    _runs().drop(columns="precision").to_csv(tmp_path / "tables" / "runs.csv", index=False)
    with pytest.raises(ValueError, match=r"runs.csv: runs table lacks column\(s\) \['precision'\]"):
        reference.main([str(tmp_path)])
