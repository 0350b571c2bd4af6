"""Encoding throughput: opera.models.encoders.encode vs SentenceTransformer.encode on the NFCorpus corpus.

Same model, same max length, same threads, same batch size; fp32 and bf16 autocast.
Prints a table of passages/second and the ratio (ours / sentence-transformers), plus the largest
difference between the two embeddings (they must agree).

    .venv/bin/python bench/encode.py [--docs N] [--max-length 256] [--batch-size 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from opera.data import passage_text
from opera.models import encoders
from opera.models.precision import autocast

ROOT = Path(__file__).resolve().parents[1]


def load_corpus(limit: int | None) -> list[str]:
    texts = []
    with gzip.open(ROOT / "opera/datasets/nfcorpus/corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            texts.append(passage_text(doc.get("title", ""), doc["text"], "space"))
    return texts[:limit] if limit else texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default: all 3,633)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each encoder (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = load_corpus(args.docs)
    model = encoders.load_model("all-MiniLM-L6-v2")
    model.max_seq_length = args.max_length

    rows = []
    for precision in args.precisions.split(","):
        encoders.encode(model, texts[:64], max_length=args.max_length, show_progress=False)  # warm-up

        def ours(precision=precision):
            return encoders.encode(
                model,
                texts,
                max_length=args.max_length,
                batch_size=args.batch_size,
                precision=precision,
                show_progress=False,
            )

        def theirs(precision=precision):
            with autocast(str(model.device), precision):
                return model.encode(
                    texts,
                    batch_size=args.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )

        times = {"ours": [], "theirs": []}
        outputs = {}
        for round_ in range(args.rounds):  # alternate the order so machine drift hits both alike
            for name in ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours"):
                start = time.perf_counter()
                outputs[name] = (ours if name == "ours" else theirs)()
                times[name].append(time.perf_counter() - start)
        ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
        rows.append(
            (
                precision,
                len(texts) / ours_s,
                len(texts) / theirs_s,
                theirs_s / ours_s,
                float(np.abs(outputs["ours"] - outputs["theirs"]).max()),
            )
        )

    print(
        f"NFCorpus corpus, {len(texts)} passages, max length {args.max_length}, batch {args.batch_size}, "
        f"{args.threads} threads, device {model.device}, median of {args.rounds} alternating runs"
    )
    print("| precision | opera passages/s | sentence-transformers passages/s | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for precision, ours, theirs, ratio, diff in rows:
        print(f"| {precision} | {ours:.1f} | {theirs:.1f} | {ratio:.2f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
