"""A run of the embedded default against the committed reference of its precision class.

``auto`` runs the default in bf16 on a CPU with native bf16 and in fp32 elsewhere, and the two give
different metrics, so there is one reference per precision: ``results/reference/`` (bf16) and
``results/reference/fp32/``. On another CPU of the same class the kernels sum in another order
(SIMD width, thread blocking) and 64 steps of training carry that on; a checkpoint's metrics move
only where a query's top documents swap. ``TOLERANCES`` holds, per precision, the largest
difference a run may have from its reference, per metric and checkpoint: for fp32, a run with
other matrix and elementwise kernels (MKL limited to AVX, ATen to its scalar code) differed from the
reference in its losses but in none of its 84 values, and 0.005 (per-query NDCG@10 changing by 1.5
in all over 300 queries) leaves room for CPUs that swap a few rankings; for bf16, whose rounding is
65,000 times coarser, no second CPU was at hand and 0.01 is a bound, not a measurement. README
"Results of the embedded default" says how it was measured.

    python -m opera.report.reference results/config      # after `make run`; exits 1 outside the tolerance
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from opera.io import FileFormatError

ROOT = Path(__file__).resolve().parents[2]
REFERENCES = {"bf16": ROOT / "results" / "reference", "fp32": ROOT / "results" / "reference" / "fp32"}
# Absolute, on metrics in [0, 1]: see the module docstring and README.
TOLERANCES = {"fp32": 0.005, "bf16": 0.01}
METRICS = ("NDCG@10", "Recall@20", "MRR@10", "Recall@100")
KEY = ["dataset", "model", "method", "seed", "budget", "step"]


def read_runs(path: str | Path) -> pd.DataFrame:
    """An aggregate's runs.csv, with the columns a comparison needs, or an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no runs table (run the workflow's aggregate first)")
    frame = pd.read_csv(path)
    missing = [c for c in [*KEY, "precision", *METRICS] if c not in frame.columns]
    if missing:
        raise FileFormatError(f"{path}: runs table lacks column(s) {missing}")
    return frame


def precision_of(runs: pd.DataFrame, path: str | Path) -> str:
    """The one precision a runs table was computed at (aggregate refuses mixed ones)."""
    labels = sorted(runs["precision"].astype(str).unique())
    if len(labels) != 1 or labels[0] not in REFERENCES:
        raise ValueError(f"{path}: runs at precision {labels}; a reference exists for {sorted(REFERENCES)}")
    return labels[0]


def compare(ours: pd.DataFrame, reference: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """One row per (checkpoint, metric): ours, the reference's, their difference and whether it is
    within ``tolerance``. Checkpoints that one side has and the other lacks are an error."""
    keys = KEY
    left, right = ours.set_index(keys), reference.set_index(keys)
    only_ours, only_ref = left.index.difference(right.index), right.index.difference(left.index)
    if len(only_ours) or len(only_ref):
        raise ValueError(
            f"the run and the reference evaluate different checkpoints: only in the run {list(only_ours)}, "
            f"only in the reference {list(only_ref)}; compare a run of the same config"
        )
    rows = []
    for key in right.index:
        for metric in METRICS:
            mine, theirs = float(left.at[key, metric]), float(right.at[key, metric])
            rows.append({**dict(zip(keys, key, strict=True)), "metric": metric, "run": mine, "reference": theirs})
    table = pd.DataFrame(rows)
    table["difference"] = table["run"] - table["reference"]
    table["within"] = table["difference"].abs() <= tolerance
    return table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m opera.report.reference RESULTS_DIR   (e.g. results/config)", file=sys.stderr)
        return 2
    path = Path(args[0]) / "tables" / "runs.csv"
    ours = read_runs(path)
    name = precision_of(ours, path)
    reference_path = REFERENCES[name] / "tables" / "runs.csv"
    tolerance = TOLERANCES[name]
    table = compare(ours, read_runs(reference_path), tolerance)
    worst = table.loc[table["difference"].abs().idxmax()]
    print(
        f"{path} against the {name} reference {reference_path.relative_to(ROOT)}: {len(table)} values "
        f"({table['within'].sum()} within {tolerance}), largest difference {worst['difference']:+.4f} "
        f"({worst['method']} step {worst['step']} {worst['metric']})"
    )
    final = table[table["step"] == table.groupby(["method", "seed", "budget"], dropna=False)["step"].transform("max")]
    for row in final[final["metric"] == "NDCG@10"].itertuples():
        print(f"  {row.method:<10} NDCG@10 {row.run:.4f} (reference {row.reference:.4f}, {row.difference:+.4f})")
    if not table["within"].all():
        print(f"outside the tolerance {tolerance}:", file=sys.stderr)
        print(table[~table["within"]].to_string(index=False), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
