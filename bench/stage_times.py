"""Wall time and peak memory per workflow stage, from Snakemake's benchmark files.

    .venv/bin/python bench/stage_times.py [results/config/benchmarks/]

Prints one row per rule: jobs, total and median wall seconds, largest max_rss (MB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/config/benchmarks")
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        record = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"rule": rule, "seconds": float(record["s"]), "max_rss_mb": float(record["max_rss"])})
    if not rows:
        sys.exit(f"no benchmark files under {root}")
    frame = pd.DataFrame(rows)
    order = ["download", "score", "prune", "finetune", "index", "evaluate", "aggregate"]
    table = frame.groupby("rule").agg(
        jobs=("seconds", "size"),
        total_s=("seconds", "sum"),
        median_s=("seconds", "median"),
        max_rss_mb=("max_rss_mb", "max"),
    )
    table = table.reindex([r for r in order if r in table.index] + [r for r in table.index if r not in order])
    print("| stage | jobs | total s | median s per job | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for rule, row in table.iterrows():
        print(f"| {rule} | {int(row.jobs)} | {row.total_s:.1f} | {row.median_s:.1f} | {row.max_rss_mb:.0f} |")
    print(f"| all | {int(table.jobs.sum())} | {table.total_s.sum():.1f} | | |")


if __name__ == "__main__":
    main()
