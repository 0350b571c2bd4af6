"""How faithful is validation on a pool? Every checkpoint of a finished run, scored on validation
pools of several sizes, against its exact evaluation on the full corpus.

For each config (a workflow run whose every ``eval_every`` checkpoint was indexed and evaluated
exactly; run it first), each dataset x model and each pool setting (opera.retrieval.validation: the judged
documents of the validation queries, each query's top ``candidates`` under the base model, a random
``random`` share of the corpus; ``queries`` of the evaluation split, seeded), the table reports:

- the pool's size (share of the corpus) and queries;
- |pool - exact| of NDCG@10 and Recall@20 over every checkpoint of every method (mean and max):
  against the exact metric on all evaluation queries (what the curves show without a pool) and
  on the pool's own queries (the pool's effect alone, without query sampling);
- Kendall's tau between the methods' order on the pool and on the full corpus (NDCG@10), at each
  checkpoint step: the mean over steps and the lowest;
- time to quality (opera.report.time_to_quality, checkpoint reading, NDCG@10 within 0, 0.005, 0.01, 0.02
  of basic's final value, each read on its own scale): for how many (method, tolerance) cells the
  pool gives the exact step.

Pools over ``--max-fraction`` of the corpus are not scored (a line lists them). Each checkpoint is loaded
once and encodes the union of the scored pools and every evaluation query.

    .venv/bin/python bench/pool_fidelity.py --config config/config.yaml config/pool_fidelity.yaml \
        > bench/pool_fidelity.md
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from opera import data, io
from opera.config import eval_split, load_config, model_settings, trained_methods
from opera.embedding_store import EmbeddingStore
from opera.models import encoders
from opera.report import time_to_quality
from opera.retrieval import validation
from opera.settings import PoolMetrics, PoolSettings

QUERIES = (None, 100, 50, 25, 15)
CANDIDATES = (0, 10, 50)
RANDOM = (0, 0.05)
METRICS = ("NDCG@10", "Recall@20")


def _settings(seed: int) -> list[PoolSettings]:
    return [
        PoolSettings(candidates=c, random=r, queries=q, seed=seed)
        for q, c, r in itertools.product(QUERIES, CANDIDATES, RANDOM)
    ]


def _label(pool: PoolSettings) -> str:
    return f"q={pool.queries or 'all'} c={pool.candidates} r={pool.random}"


def _checkpoints(cell: Cell) -> list[tuple[str, int, Path]]:
    """(method, step, folder) of every main-run checkpoint of the first seed."""
    settings = model_settings(cell.config, cell.model)
    seed = cell.config["seeds"][0]
    found = []
    for method in trained_methods(cell.config):
        run = (
            cell.results
            / "finetune"
            / cell.dataset
            / cell.model
            / method
            / f"seed{seed}"
            / f"budget{settings.max_steps}"
        )
        for step in settings.checkpoint_steps():
            if not (run / f"step{step}").is_dir():
                raise SystemExit(f"{run}/step{step}: missing; run the workflow on this config first")
            found.append((method, step, run / f"step{step}"))
    return found


def _exact(results: Path, dataset: str, model: str, seed: int) -> pd.DataFrame:
    """The exact per-query metrics of every checkpoint (method, step, query_id, metrics)."""
    runs = pd.read_csv(results / "tables" / "runs.csv")
    runs = runs[(runs["dataset"] == dataset) & (runs["model"] == model) & runs["main_run"]]
    runs = runs[(runs["method"] == "pretrain") | (runs["seed"] == seed)]
    frames = []
    for row in runs.itertuples(index=False):
        per_query = io.load_table(row.per_query_path)
        frames.append(per_query.assign(method=row.method, step=int(row.step)))
    return pd.concat(frames, ignore_index=True)


@dataclass
class Cell:
    """One dataset x model of a finished run: what scoring a pool needs."""

    name: str
    dataset: str
    model: str
    results: Path
    config: dict
    qrels: pd.DataFrame
    queries: list[str]  # every judged query of the evaluation split
    query_texts: list[str]
    doc_ids: data.CorpusIds

    @classmethod
    def of(cls, config: dict, name: str, dataset: str, model: str) -> Cell:
        results = Path(config["results_dir"])
        split = eval_split(config["datasets"][dataset], config["evaluation"]["split"])
        prepared = data.read_prepared(results / "data" / dataset, corpus=False)
        qrels = prepared.qrels[split]
        queries = validation.validation_queries(qrels, PoolSettings(0, 0, None, 0))
        text = prepared.queries.set_index("query_id")["text"]
        doc_ids = data.CorpusIds(results / "data" / dataset)
        return cls(name, dataset, model, results, config, qrels, queries, [text[q] for q in queries], doc_ids)

    @property
    def encoder(self):
        return model_settings(self.config, self.model).encoder

    def encode(self, model, texts: list[str], side: str, desc: str) -> np.ndarray:
        batch = self.config["evaluation"]["encode_batch_size"]
        return encoders.encode_side(model, self.encoder, side, texts, batch, desc)


def _pools(cell: Cell, base) -> dict[PoolSettings, tuple[list[str], pd.DataFrame]]:
    """Every pool setting of the grid: its queries and its documents, from the base model's ranking."""
    query_emb = cell.encode(base, cell.query_texts, "query", "queries")
    store = EmbeddingStore(cell.results / "score" / cell.dataset / cell.model / "corpus_embeddings")
    ranked = store.search(query_emb, max(CANDIDATES))[1]
    row_of = {q: i for i, q in enumerate(cell.queries)}
    pools = {}
    for pool in _settings(cell.config["validation"]["seed"]):
        if pool.queries is not None and pool.queries >= len(cell.queries):
            continue  # the same as all queries
        queries = validation.validation_queries(cell.qrels, pool)
        rows = ranked[[row_of[q] for q in queries], : pool.candidates]
        pools[pool] = (queries, validation.build_pool(cell.qrels, queries, rows, cell.doc_ids, pool))
    return pools


def _score(cell: Cell, base, scored: dict) -> list[dict]:
    """Every checkpoint (and the base model) scored on every pool of ``scored``: each loads once and
    encodes the union of the pools and every query."""
    union = np.unique(np.concatenate([table["row"].to_numpy() for _, table in scored.values()]))
    passages = data.passages_at(cell.results / "data" / cell.dataset, union, cell.config["data"]["title_join"])
    position = pd.Series(np.arange(len(union)), index=union)
    row_of = {q: i for i, q in enumerate(cell.queries)}
    scoring = PoolMetrics.from_evaluation(cell.config["evaluation"])
    records = []
    for method, step, folder in [("pretrain", 0, None), *_checkpoints(cell)]:
        model = base if folder is None else encoders.load(cell.encoder, path=str(folder))
        pool_emb = cell.encode(model, passages, "passage", f"{method} {step} pool")
        query_emb = cell.encode(model, cell.query_texts, "query", f"{method} {step} queries")
        for pool, (queries, table) in scored.items():
            emb = pool_emb[position.loc[table["row"].to_numpy()].to_numpy()]
            rows = [row_of[q] for q in queries]
            metrics = validation.score_pool(queries, query_emb[rows], table, emb, cell.qrels, scoring)
            records.append({"pool": _label(pool), "method": method, "step": step} | {m: metrics[m] for m in METRICS})
    return records


def _cell(cell: Cell, max_fraction: float) -> list[dict]:
    base = encoders.load(cell.encoder)
    pools = _pools(cell, base)
    scored = {p: v for p, v in pools.items() if len(v[1]) <= max_fraction * len(cell.doc_ids)}
    # the scores are kept beside the run: another reading of them encodes nothing again
    cache = cell.results / "bench" / f"pool_fidelity__{cell.dataset}__{cell.model}.parquet"
    cached = pd.read_parquet(cache) if cache.is_file() else None
    if cached is not None and set(cached["pool"]) == {_label(p) for p in scored}:
        records = cached
    else:
        records = pd.DataFrame(_score(cell, base, scored))
        cache.parent.mkdir(parents=True, exist_ok=True)
        records.to_parquet(cache)
    exact = _exact(cell.results, cell.dataset, cell.model, cell.config["seeds"][0])
    return _rows(cell, pools, scored, records, exact)


def _rows(cell: Cell, pools: dict, scored: dict, records: pd.DataFrame, exact: pd.DataFrame) -> list[dict]:
    """One table row per pool setting: its size, and its fidelity where it was scored."""
    rows = []
    for pool, (queries, table) in pools.items():
        row = {
            "config": cell.name,
            "dataset": cell.dataset,
            "pool": _label(pool),
            "documents": len(table),
            "share": len(table) / len(cell.doc_ids),
            "queries": len(queries),
            "scored": pool in scored,
        }
        if pool in scored:
            pooled = records[records["pool"] == _label(pool)].drop(columns="pool")
            row |= _fidelity(pooled, exact, queries)
        rows.append(row)
    return rows


def _fidelity(pooled: pd.DataFrame, exact: pd.DataFrame, queries: list[str]) -> dict:
    """Differences, rank agreement and time-to-quality agreement of one pool's scores."""
    all_q = exact.groupby(["method", "step"])[list(METRICS)].mean()
    same_q = exact[exact["query_id"].isin(queries)].groupby(["method", "step"])[list(METRICS)].mean()
    joined = pooled.set_index(["method", "step"])
    out = {}
    for metric in METRICS:
        for name, reference in (("all", all_q), ("same", same_q)):
            diff = (joined[metric] - reference[metric].reindex(joined.index)).abs()
            out[f"{metric} |d| {name} mean"] = diff.mean()
            out[f"{metric} |d| {name} max"] = diff.max()
    trained = joined.drop(index="pretrain", level="method")
    taus = []
    for _, at_step in trained.groupby(level="step"):
        truth = all_q.loc[at_step.index, "NDCG@10"]
        if len(at_step) > 2:
            taus.append(stats.kendalltau(at_step["NDCG@10"], truth).statistic)
    out["tau mean"] = float(np.nanmean(taus)) if taus else math.nan
    out["tau min"] = float(np.nanmin(taus)) if taus else math.nan
    out["ttq agree"] = _ttq_agreement(trained["NDCG@10"], all_q.drop(index="pretrain", level="method")["NDCG@10"])
    return out


def _ttq_agreement(pool: pd.Series, exact: pd.Series) -> str:
    """Cells (method x tolerance) whose checkpoint time to quality is the same step on both scales."""

    def table(values: pd.Series) -> pd.DataFrame:
        long = values.rename("NDCG@10").reset_index()
        long = long.assign(dataset="d", model="m", seed=0, budget=long["step"].max(), main_run=True, train_seconds=0.0)
        return time_to_quality.time_to_quality(long).set_index(["method", "tolerance"])["steps_to_target"]

    a, b = table(pool), table(exact)

    def agree(x, y) -> bool:  # the same step, or neither reaches the target
        return pd.isna(x) and pd.isna(y) if pd.isna(x) or pd.isna(y) else x == y

    same = sum(1 for key in a.index if agree(a[key], b[key]))
    return f"{same}/{len(a)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", required=True, help="configs whose runs are finished")
    parser.add_argument("--max-fraction", type=float, default=0.2, help="score pools up to this share of the corpus")
    args = parser.parse_args()
    rows = []
    for path in args.config:
        config = load_config(path)
        for dataset in config["datasets"]:
            for model in config["models"]:
                rows += _cell(Cell.of(config, Path(path).stem, dataset, model), args.max_fraction)
                print(f"{path}: {dataset} x {model} done", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    over = ~frame.pop("scored")
    print(frame[~over].to_markdown(index=False, floatfmt=".4f"))
    skipped = frame[over]
    if len(skipped):
        listed = ", ".join(f"{r.dataset} {r.pool} ({r.share:.0%})" for r in skipped.itertuples())
        print(f"\nNot scored, over {args.max_fraction:.0%} of the corpus: {listed}")


if __name__ == "__main__":
    main()
