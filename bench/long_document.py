"""The score stage on a corpus with one 30 MB document, with and without the tokenization bound.

A 41-document corpus (bench/scale.py's 40 synthetic 12-word passages plus one 30 MB document of
synthetic words, deterministic) goes through the real score stage (`pipeline.score`, as bench/scale.py
runs it: tiny local BERT from opera.models.tiny_models, fp32, 2 threads) with passage_max_length 32, once with
opera.models.encoders' bound on long texts (`bounded_texts`) and once without it (the child sets
`encoders.BOUND_MIN_CHARS` to sys.maxsize, so no text is cut). Each run is a fresh process; it reports
its wall seconds and peak RSS (ru_maxrss). Prints a markdown table, and checks that both runs wrote
the same corpus embeddings.

    .venv/bin/python bench/long_document.py [--megabytes 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scale  # bench/scale.py, beside this script

MAX_LENGTH = 32


def add_long_document(folder: Path, megabytes: float) -> None:
    """Append one document of about ``megabytes`` MB of synthetic words to the prepared corpus."""
    import numpy as np
    import pandas as pd

    from opera import io

    corpus = pd.read_parquet(folder / "corpus.parquet")
    words = np.random.default_rng(1).integers(0, len(scale.WORDS), size=int(megabytes * 2**20 / 5.5))
    text = " ".join(scale.WORDS[w] for w in words)
    corpus = pd.concat([corpus, pd.DataFrame({"doc_id": ["long"], "title": [""], "text": [text]})], ignore_index=True)
    io.save_table(folder / "corpus.parquet", corpus)
    summary = json.loads((folder / "summary.json").read_text())
    for split in summary["splits"].values():
        split["documents"] = len(corpus)
    io.write_json(folder / "summary.json", summary)


def child_score(data_dir: Path, model_dir: Path, out: Path, bound: bool) -> dict:
    """The score stage with passage_max_length 32, the bound on or off."""
    import torch

    from opera import pipeline
    from opera.embedding_store import StoreLayout
    from opera.models import encoders
    from opera.settings import Mining

    torch.set_num_threads(2)
    if not bound:
        encoders.BOUND_MIN_CHARS = sys.maxsize
    encoder = dataclasses.replace(scale._encoder(model_dir), query_max_length=MAX_LENGTH, passage_max_length=MAX_LENGTH)
    began = time.perf_counter()
    pipeline.score(
        data_dir=data_dir,
        encoder=encoder,
        mining=Mining(lo=2, hi=12),
        encode_batch_size=512,
        title_join="space",
        layout=StoreLayout(shard_passages=100_000),
        out_dir=out,
    )
    return {"seconds": time.perf_counter() - began}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data_dir, model_dir, out, bound = args.child
        result = child_score(Path(data_dir), Path(model_dir), Path(out), bound == "on")
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    import numpy as np

    from opera.models import tiny_models

    rows = {}
    with tempfile.TemporaryDirectory(prefix="opera-long-document-") as scratch:
        scratch = Path(scratch)
        model_dir = tiny_models.build("bert", scratch / "tiny-bert")
        data_dir = scratch / "data"
        scale.write_dataset(data_dir, 40, queries=20)
        add_long_document(data_dir, args.megabytes)
        for bound in ("off", "on"):
            out = scratch / f"score-{bound}"
            command = [sys.executable, __file__, "--child", str(data_dir), str(model_dir), str(out), bound]
            done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=scale.ROOT)
            rows[bound] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"bound {bound}: {rows[bound]['seconds']:.1f} s, {rows[bound]['peak_rss_mb']:,.0f} MB peak", flush=True
            )
        stores = [
            np.concatenate([np.load(p) for p in sorted((scratch / f"score-{b}" / "corpus_embeddings").glob("*.npy"))])
            for b in ("off", "on")
        ]
        same = stores[0].shape == stores[1].shape and np.array_equal(stores[0], stores[1])
        corpus_mb = (data_dir / "corpus.parquet").stat().st_size / 2**20
    lines = [
        f"Score stage, 41 documents (40 of 12 words, one of {args.megabytes:g} MB of words; corpus.parquet "
        f"{corpus_mb:.0f} MB), tiny BERT (passage_max_length {MAX_LENGTH}, fp32, 2 threads), 20 train queries.",
        "",
        "| tokenization | score s | score peak RSS MB |",
        "|---|---:|---:|",
    ]
    for bound, label in (("off", "whole text (before)"), ("on", "bounded (`encoders.bounded_texts`)")):
        lines.append(f"| {label} | {rows[bound]['seconds']:.1f} | {rows[bound]['peak_rss_mb']:,.0f} |")
    lines += ["", f"corpus embeddings identical with and without the bound: {'yes' if same else 'NO'}"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
