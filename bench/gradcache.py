"""Gradient caching (`mini_batch_size`): peak memory and step time of opera's training step at a
large global batch, encoded in one pass and in mini-batches, on the same batches and model.

Each setting runs in a fresh process, so its peak resident memory (ru_maxrss) is its own; the
table shows that peak and the part of it above the loaded model, data and optimizer (what the
step's activations cost). Step times are medians after one warm-up step; the settings are
interleaved, in turns, so that drift of a shared machine hits them alike.

    .venv/bin/python bench/gradcache.py [--batch 128] [--mini 8 16 32] [--steps 3] [--threads 2]

Data: a seeded slice of NFCorpus (shipped), prepared and scored into a temporary folder
(bench/train_step.py's `prepare`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from opera import training
from opera.methods.sampling import make_sampler
from opera.models import encoders
from opera.settings import ModelSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import minilm_settings, prepare_files, training_data  # noqa: E402  (a sibling script)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _settings(args, mini: int | None) -> ModelSettings:
    return minilm_settings(args.batch, args.query_length, args.passage_length, args.precision, mini_batch_size=mini)


def one_setting(args) -> None:
    """Run in a child process: steps of one setting; print a JSON line (times, peak, baseline)."""
    torch.set_num_threads(args.threads)
    mini = args.one or None
    settings = _settings(args, mini)
    data = training_data(Path(args.root))
    model = encoders.load(settings.encoder, device="cpu")
    model.train()
    optimizer, scheduler, params = training.make_optimizer(model, settings)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    sampler = make_sampler("basic", data.pairs, 1000, 0, {})
    rng = np.random.default_rng(0)
    batches = []
    for step in range(args.steps + 1):
        batch = sampler.next_batch(step, args.batch)
        batches.append((batch, training.batch_documents(data, batch, settings.group_size, rng)))
    baseline = _rss_mb()
    times = []
    for batch, docs in batches:
        start = time.perf_counter()
        training.train_step(model, data, batch, docs, settings, training.Dist(), optimizer, scheduler, scaler, params)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times[1:], "peak_mb": peak, "baseline_mb": baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="queries per step (one process: the global batch)")
    parser.add_argument("--mini", type=int, nargs="+", default=[8, 16, 32], help="mini-batch sizes to compare")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting and turn (after 1 warm-up)")
    parser.add_argument("--turns", type=int, default=1, help="rounds over all settings")
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--passage-length", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--train-queries", type=int, default=400)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: 0 = uncached
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one_setting(args)
        return

    settings = [0, *args.mini]
    results = {mini: [] for mini in settings}
    with tempfile.TemporaryDirectory() as root:
        prepare_files(Path(root), _settings(args, None), args.docs, args.train_queries)
        for _ in range(args.turns):
            for mini in settings:
                command = [sys.executable, __file__, "--one", str(mini), "--root", root]
                command += [
                    f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("one", "root", "mini")
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"setting mini_batch_size={mini or None} failed:\n{done.stderr[-3000:]}")
                results[mini].append(json.loads(done.stdout.strip().splitlines()[-1]))

    plain = results[0]
    plain_time = statistics.median(t for run in plain for t in run["times"])
    plain_extra = statistics.median(run["peak_mb"] - run["baseline_mb"] for run in plain)
    print(
        f"all-MiniLM-L6-v2, global batch {args.batch} x (1 positive + 1 hard negative) on one process, "
        f"lengths {args.query_length}/{args.passage_length}, {args.precision}, {args.threads} threads, "
        f"CPU: {torch.backends.cpu.get_cpu_capability()}, native bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    )
    print(
        "| mini_batch_size | peak RSS (MB) | above model+data (MB) | share of uncached | median s/step | time ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for mini in settings:
        runs = results[mini]
        peak = statistics.median(run["peak_mb"] for run in runs)
        extra = statistics.median(run["peak_mb"] - run["baseline_mb"] for run in runs)
        step = statistics.median(t for run in runs for t in run["times"])
        print(
            f"| {mini or 'none (one pass)'} | {peak:,.0f} | {extra:,.0f} | {extra / plain_extra:.2f} | {step:.2f} | "
            f"{step / plain_time:.2f} |"
        )


if __name__ == "__main__":
    main()
