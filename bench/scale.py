"""Peak memory of the score and evaluate stages against corpus size: it must not grow with the corpus.

For each size (default 1M, 2M and 4M synthetic passages, 1,000 train and 1,000 test queries) a
fresh process runs the real score stage (`pipeline.score`: the corpus streamed from corpus.parquet
and encoded shard by shard into an embedding store, the train pairs scored, hard negatives mined
over every shard) with a tiny local encoder (opera.models.tiny_models' BERT with random weights, 64
dimensions, 16 tokens), and another fresh process the real evaluate stage on that store (exact
top 100 over every shard, metrics). The index stage encodes a checkpoint with score's code
(`embedding_store.encode_corpus`). Prints a markdown table of passages, shards, disk, seconds and
peak RSS (ru_maxrss of the process), the ratio of the largest corpus's peak to the smallest's, and
the extrapolation to TriviaQA's 21M passages at 1,024 dimensions.

    .venv/bin/python bench/scale.py [--sizes 1000000 2000000 4000000] [--shard 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(5000)]


def _encoder(model_dir: Path):
    from opera.config import resolve_model
    from opera.settings import EncoderSettings

    overrides = {"path": str(model_dir), "query_max_length": 16, "passage_max_length": 16, "encode_precision": "fp32"}
    return EncoderSettings.from_dict(resolve_model("bge-large-en-v1.5", overrides))


def write_dataset(folder: Path, passages: int, queries: int = 1000) -> None:
    """A prepared dataset (the download stage's tables): ``passages`` synthetic 12-word passages
    written in chunks, ``queries`` train and as many test queries, one relevant passage each."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from opera import io

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    schema = pa.schema([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string())])

    def sentence(n: int) -> list[str]:
        return [" ".join(WORDS[w] for w in row) for row in rng.integers(0, len(WORDS), size=(n, 12))]

    def writer(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as out:
            for start in range(0, passages, 200_000):
                n = min(200_000, passages - start)
                ids = [f"d{i}" for i in range(start, start + n)]
                out.write_table(pa.table({"doc_id": ids, "title": [""] * n, "text": sentence(n)}, schema=schema))

    io.write_checked(folder / "corpus.parquet", writer, rows=passages)
    ids = [f"q{i}" for i in range(2 * queries)]
    io.save_table(folder / "queries.parquet", pd.DataFrame({"query_id": ids, "text": sentence(2 * queries)}))
    relevant = [f"d{i}" for i in rng.choice(passages, size=2 * queries, replace=False)]
    splits = {}
    for split, part in (("train", slice(0, queries)), ("test", slice(queries, None))):
        qrels = pd.DataFrame({"query_id": ids[part], "doc_id": relevant[part], "relevance": np.ones(queries, "int64")})
        io.save_table(folder / f"qrels_{split}.parquet", qrels)
        splits[split] = {"documents": passages, "queries": queries, "judged_pairs": queries}
    io.write_json(folder / "summary.json", {"splits": splits})


def child_score(data_dir: Path, model_dir: Path, out: Path, shard: int) -> dict:
    """The score stage: corpus encoded into shards, train queries scored, negatives mined."""
    import torch

    from opera import pipeline
    from opera.embedding_store import StoreLayout
    from opera.settings import Mining

    torch.set_num_threads(2)
    began = time.perf_counter()
    report = pipeline.score(
        data_dir=data_dir,
        encoder=_encoder(model_dir),
        mining=Mining(lo=10, hi=60),
        encode_batch_size=512,
        title_join="space",
        layout=StoreLayout(shard_passages=shard),
        out_dir=out,
    )
    return {"shards": report["corpus_shards"], "seconds": time.perf_counter() - began}


def child_evaluate(data_dir: Path, model_dir: Path, out: Path) -> dict:
    """The evaluate stage on score's corpus embeddings: test queries, exact top 100, metrics."""
    import torch

    from opera import pipeline

    torch.set_num_threads(2)
    evaluation = {"encode_batch_size": 512, "top_k": 100, "index_factory": "Flat", "cutoffs": [10, 20]}
    evaluation |= {"mrr_cutoff": 10, "authors_ndcg": False}
    began = time.perf_counter()
    pipeline.evaluate(
        data_dir=data_dir,
        encoder=_encoder(model_dir),
        evaluation=evaluation,
        index_path=out / "corpus_embeddings",
        split="test",
        out_run=out / "run.trec",
        out_per_query=out / "per_query.parquet",
        out_metrics=out / "metrics.json",
        run_meta={"method": "pretrain"},
    )
    return {"seconds": time.perf_counter() - began}


def _run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000])
    parser.add_argument("--shard", type=int, default=100_000)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *paths = args.child
        if kind == "score":
            result = child_score(Path(paths[0]), Path(paths[1]), Path(paths[2]), int(paths[3]))
        else:
            result = child_evaluate(Path(paths[0]), Path(paths[1]), Path(paths[2]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    from opera.models import tiny_models

    rows = []
    with tempfile.TemporaryDirectory(prefix="opera-scale-") as scratch:
        scratch = Path(scratch)
        model_dir = tiny_models.build("bert", scratch / "tiny-bert")
        for size in args.sizes:
            data_dir, out = scratch / f"data{size}", scratch / f"score{size}"
            write_dataset(data_dir, size)
            score = _run_child("score", str(data_dir), str(model_dir), str(out), str(args.shard))
            evaluate = _run_child("evaluate", str(data_dir), str(model_dir), str(out))
            store_mb = sum(p.stat().st_size for p in (out / "corpus_embeddings").glob("*.npy")) / 2**20
            rows.append((size, score["shards"], score, evaluate, store_mb))
            print(f"{size:,} passages: score {score['seconds']:.0f} s, {score['peak_rss_mb']:.0f} MB peak", flush=True)
            for path in (data_dir, out):
                subprocess.run(["rm", "-rf", str(path)], check=True)
    lines = [
        f"Shards of {args.shard:,} passages; tiny BERT (64 dimensions, 16 tokens, fp32, 2 threads); "
        "1,000 queries, top 100.",
        "",
        "| passages | shards | embeddings MB | score s | score peak RSS MB | evaluate s | evaluate peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, shards, score, evaluate, store_mb in rows:
        lines.append(
            f"| {size:,} | {shards} | {store_mb:,.0f} | {score['seconds']:.0f} | {score['peak_rss_mb']:,.0f} "
            f"| {evaluate['seconds']:.0f} | {evaluate['peak_rss_mb']:,.0f} |"
        )
    first, last = rows[0], rows[-1]
    per_passage = (last[2]["seconds"] - first[2]["seconds"]) / (last[0] - first[0])
    lines += [
        "",
        f"peak RSS at {last[0]:,} / at {first[0]:,} passages: score "
        f"{last[2]['peak_rss_mb'] / first[2]['peak_rss_mb']:.2f}x, evaluate "
        f"{last[3]['peak_rss_mb'] / first[3]['peak_rss_mb']:.2f}x",
        f"extrapolated to 21,015,324 passages (TriviaQA) at 1,024 dimensions: corpus embeddings "
        f"{21_015_324 * 1024 * 4 / 1e9:,.0f} GB in float32 ({21_015_324 * 1024 * 2 / 1e9:,.0f} GB in float16) on "
        f"disk; peak RSS of a job grows with the shard, not the corpus: a 100,000-passage shard of "
        f"1,024-dim float32 embeddings is {100_000 * 1024 * 4 / 2**20:,.0f} MB; this encoder's time "
        f"{per_passage * 21_015_324 / 3600:,.1f} h (the real models' time: `opera plan`)",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
