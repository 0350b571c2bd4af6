"""fp32 against bf16 (and fp16 on a GPU) on this machine, for the embedded default's model and lengths.

Prints the CPU class as PyTorch sees it (capability, native bf16 or not), what ``auto`` resolves
to here, then per precision: encoding throughput (passages/s, SciFact passages cut at the default's
64 tokens) and the median training-step time (opera's train_step: batch 16 x (1 positive + 1 hard
negative), queries at 32 tokens, passages at 64), each with its ratio to fp32. The precisions are
measured in alternating rounds, so a drift of a shared machine hits them alike.

    .venv/bin/python bench/precision.py [--rounds 3] [--steps 6] [--threads 2] [--device cpu]

To see the AVX2 class on an AVX-512 machine, limit oneDNN and ATen to AVX2 (both, in that command):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python bench/precision.py
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

from opera import training
from opera.config import resolve_model
from opera.data import passage_text
from opera.methods.sampling import make_sampler
from opera.models import encoders, precision
from opera.settings import ModelSettings

ROOT = Path(__file__).resolve().parents[1]
MODEL = "all-MiniLM-L6-v2"


def scifact_texts(count: int) -> list[str]:
    texts = []
    with gzip.open(ROOT / "opera/datasets/scifact/corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            texts.append(passage_text(doc.get("title", ""), doc["text"], "space"))
            if len(texts) == count:
                break
    return texts


def settings_for(name: str, args) -> ModelSettings:
    return ModelSettings.from_dict(
        {
            **resolve_model(MODEL),
            "query_max_length": args.query_length,
            "passage_max_length": args.passage_length,
            "precision": name,
            "encode_precision": name,
            "batch_size": args.batch_size,
            "max_steps": 1000,
            "warmup_ratio": 0.0,
        }
    )


def encode_rate(model, settings: ModelSettings, texts: list[str]) -> float:
    began = time.perf_counter()
    encoders.encode_side(model, settings.encoder, "passage", texts, 64, desc="bench", show_progress=False)
    return len(texts) / (time.perf_counter() - began)


def training_data(texts: list[str], args) -> training.TrainingData:
    """Queries are passages' first sentences: the step's cost depends on lengths, not on meaning."""
    import pandas as pd

    n = args.batch_size * 2
    doc_ids = [f"d{i}" for i in range(len(texts))]
    pairs = pd.DataFrame({"query_id": [f"q{i}" for i in range(n)], "doc_id": doc_ids[:n], "score": 0.5})
    negatives = pd.DataFrame({"query_id": pairs["query_id"], "doc_id": doc_ids[n : 2 * n], "rank": 10})
    queries = pd.DataFrame({"query_id": pairs["query_id"], "text": [t.split(". ")[0] for t in texts[:n]]})
    return training.TrainingData.build(pairs, pairs, negatives, queries, dict(zip(doc_ids, texts, strict=True)))


def step_times(settings: ModelSettings, data: training.TrainingData, steps: int, device: str) -> list[float]:
    model = encoders.load(settings.encoder, device=device)
    model.train()
    optimizer, scheduler, params = training.make_optimizer(model, settings)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.resolve(settings.precision, device) == "fp16")
    sampler, rng = make_sampler("basic", data.pairs, 1000, 0, {}), np.random.default_rng(0)
    times = []
    for step in range(steps + 1):  # the first step warms up
        batch = sampler.next_batch(step, settings.batch_size)
        docs = training.batch_documents(data, batch, settings.group_size, rng)
        began = time.perf_counter()
        training.train_step(
            model, data, batch, docs, settings, training.Dist(device=device), optimizer, scheduler, scaler, params
        )
        times.append(time.perf_counter() - began)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=encoders.default_device())
    parser.add_argument("--precisions", default=None, help="default: fp32,bf16 (and fp16 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per precision (medians)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per round")
    parser.add_argument("--passages", type=int, default=256, help="passages encoded per round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--passage-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    names = (args.precisions or ("fp32,bf16,fp16" if cuda else "fp32,bf16")).split(",")
    texts = scifact_texts(max(args.passages, 4 * args.batch_size))
    data = training_data(texts, args)
    rates = {name: [] for name in names}
    steps = {name: [] for name in names}
    models = {name: encoders.load(settings_for(name, args).encoder, device=args.device) for name in names}
    for _ in range(args.rounds):
        for name in names:
            settings = settings_for(name, args)
            rates[name].append(encode_rate(models[name], settings, texts[: args.passages]))
            steps[name] += step_times(settings, data, args.steps, args.device)

    where = torch.cuda.get_device_name(args.device) if cuda else f"CPU {precision.cpu_description()}"
    print(f"{MODEL} on {where}, {args.threads} threads; `auto` resolves to {precision.resolve('auto', args.device)}")
    print(
        f"encoding: {args.passages} SciFact passages at {args.passage_length} tokens, batch 64; training: batch "
        f"{args.batch_size} x (1 positive + 1 hard negative), lengths {args.query_length}/{args.passage_length}"
    )
    print("| precision | encode passages/s | vs fp32 | train s/step | vs fp32 |")
    print("|---|---:|---:|---:|---:|")
    base_rate, base_step = statistics.median(rates[names[0]]), statistics.median(steps[names[0]])
    for name in names:
        rate, step = statistics.median(rates[name]), statistics.median(steps[name])
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x | {step:.3f} | {step / base_step:.2f}x |")


if __name__ == "__main__":
    main()
