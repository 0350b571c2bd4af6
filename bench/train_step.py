"""Training-step speed: opera's trainer step vs a plain sentence-transformers
MultipleNegativesRankingLoss step, on the same batches and the same model; and the share of
training time that the online samplers (dp, infobatch) take.

Both steps do the same work: tokenize queries, positives and hard negatives, forward, InfoNCE over
in-batch + hard negatives, backward, gradient clipping, AdamW step, scheduler step. Opera's step
also masks known positives among the in-batch negatives and returns per-query statistics to the
sampler.

    .venv/bin/python bench/train_step.py [--steps 12] [--precision fp32] [--threads 2]

Data: a seeded slice of NFCorpus (shipped), prepared and scored into a temporary folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from opera import io, pipeline, training
from opera.config import method_params, resolve_model, validate_config
from opera.data import passage_texts, read_prepared
from opera.methods.sampling import make_sampler
from opera.models import encoders, precision
from opera.settings import ModelSettings


def minilm_settings(batch_size: int, query_length: int, passage_length: int, precision: str, **extra) -> ModelSettings:
    """all-MiniLM-L6-v2's training settings for a timed step: no warm-up, a long schedule, ``extra``
    fields (e.g. mini_batch_size) on top."""
    return ModelSettings.from_dict(
        {
            **resolve_model("all-MiniLM-L6-v2"),
            "batch_size": batch_size,
            "query_max_length": query_length,
            "passage_max_length": passage_length,
            "precision": precision,
            "encode_precision": precision,
            "max_steps": 1000,
            "warmup_ratio": 0.0,
            **extra,
        }
    )


def prepare(root: Path, settings: ModelSettings, docs: int, queries: int) -> training.TrainingData:
    prepare_files(root, settings, docs, queries)
    return training_data(root)


def prepare_files(root: Path, settings: ModelSettings, docs: int, queries: int) -> None:
    """The NFCorpus slice prepared (root/data) and scored by the base model (root/score)."""
    config = validate_config(
        {
            "datasets": {"nfcorpus": {"subsample": {"docs": docs, "queries": {"train": queries}}}},
            "models": {"all-MiniLM-L6-v2": {}},
            "methods": ["basic"],
        }
    )
    pipeline.download(
        name="nfcorpus", spec=config["datasets"]["nfcorpus"], options=config["data"], out_dir=root / "data"
    )
    pipeline.score(
        data_dir=root / "data",
        encoder=settings.encoder,
        mining=settings.mining,
        encode_batch_size=64,
        title_join="space",
        out_dir=root / "score",
    )


def training_data(root: Path) -> training.TrainingData:
    """What the trainer draws from, built from :func:`prepare_files`' folders."""
    dataset = read_prepared(root / "data")
    pairs = io.load_table(root / "score" / "pairs.parquet")
    return training.TrainingData.build(
        pairs,
        pairs,
        io.load_table(root / "score" / "negatives.parquet"),
        dataset.queries,
        dict(zip(dataset.corpus["doc_id"], passage_texts(dataset.corpus), strict=True)),
    )


def opera_steps(data, settings, batches) -> list[float]:
    model = encoders.load(settings.encoder, device="cpu")
    model.train()
    optimizer, scheduler, params = training.make_optimizer(model, settings)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    times = []
    for batch, docs in batches:
        start = time.perf_counter()
        training.train_step(model, data, batch, docs, settings, training.Dist(), optimizer, scheduler, scaler, params)
        times.append(time.perf_counter() - start)
    return times


def sentence_transformers_steps(data, settings, batches) -> list[float]:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = encoders.load(settings.encoder, device="cpu")
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model, scale=1.0 / settings.temperature)
    optimizer, scheduler, params = training.make_optimizer(model, settings)
    group = settings.group_size
    times = []
    for batch, docs in batches:
        start = time.perf_counter()
        features = [
            encoders.tokenize_side(model, settings.encoder, "query", [data.query_texts[q] for q in batch.queries])
        ]
        for column in range(group):  # positives, then each negative column
            features.append(
                encoders.tokenize_side(
                    model, settings.encoder, "passage", [data.doc_texts[d] for d in docs[column::group]]
                )
            )
        with precision.autocast("cpu", settings.precision):
            loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def sampler_share(root: Path, settings: ModelSettings, method: str, steps: int) -> tuple[float, float]:
    config = validate_config({"datasets": {"nfcorpus": {}}, "models": {"all-MiniLM-L6-v2": {}}, "methods": [method]})
    run_settings = dataclasses.replace(settings, max_steps=steps, eval_every=steps)
    pipeline.finetune(
        data_dir=root / "data",
        pairs_path=root / "score" / "pairs.parquet",
        negatives_path=root / "score" / "negatives.parquet",
        kept_pairs_path=root / "score" / "pairs.parquet",
        settings=run_settings,
        method=method,
        method_params=method_params(config, method),
        seed=0,
        title_join="space",
        out_dir=root / f"ft-{method}",
        work_dir=root / f"work-{method}",
    )
    last = io.read_train_log(root / f"ft-{method}" / "train_log.jsonl")[-1]
    return last["sampler_seconds"], last["elapsed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per trainer (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--passage-length", type=int, default=96)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--train-queries", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = minilm_settings(args.batch_size, args.query_length, args.passage_length, args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = prepare(root, settings, args.docs, args.train_queries)
        sampler = make_sampler("basic", data.pairs, 1000, 0, {})
        rng = np.random.default_rng(0)
        batches = []
        for step in range(args.steps + 2):
            batch = sampler.next_batch(step, args.batch_size)
            batches.append((batch, training.batch_documents(data, batch, settings.group_size, rng)))
        # Interleave the two trainers in halves so drift of the machine hits both alike.
        ours, theirs = [], []
        for part in (batches[: len(batches) // 2 + 1], batches[len(batches) // 2 + 1 :]):
            ours += opera_steps(data, settings, part)[1:]
            theirs += sentence_transformers_steps(data, settings, part)[1:]
        shares = {method: sampler_share(root, settings, method, args.steps) for method in ("dp", "infobatch")}

    print(
        f"all-MiniLM-L6-v2, batch {args.batch_size} x (1 positive + {settings.group_size - 1} hard negative), "
        f"lengths {args.query_length}/{args.passage_length}, {args.precision}, {args.threads} threads, CPU"
    )
    print("| trainer | median s/step | steps timed |")
    print("|---|---:|---:|")
    print(f"| opera train_step | {statistics.median(ours):.3f} | {len(ours)} |")
    print(f"| sentence-transformers MNRL | {statistics.median(theirs):.3f} | {len(theirs)} |")
    print(f"ratio (sentence-transformers / opera): {statistics.median(theirs) / statistics.median(ours):.2f}")
    print()
    print("| sampler | sampler s | training s | share |")
    print("|---|---:|---:|---:|")
    for method, (sampler_s, total_s) in shares.items():
        print(f"| {method} | {sampler_s:.3f} | {total_s:.2f} | {100 * sampler_s / total_s:.2f}% |")


if __name__ == "__main__":
    main()
