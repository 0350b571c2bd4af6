"""Index-like jobs one at a time on all threads, against two at a time on half the threads each.

Each job is a fresh process, as a Snakemake job is: it imports opera's encoder stack (torch,
transformers, sentence-transformers), loads all-MiniLM-L6-v2 and encodes SciFact passages at the
embedded default's 64 tokens. The start-up runs on one core; two jobs at a time overlap one's
start-up with the other's encoding (`resources.eval_threads`). Prints wall time per mode and
whether every job's embeddings are bitwise the same in both modes.

    .venv/bin/python bench/eval_threads.py [--jobs 4] [--passages 1500] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

JOB = """
import sys
import numpy as np
sys.path.insert(0, {bench!r})
from precision import scifact_texts
from opera.models import encoders
from opera.config import resolve_model
from opera.settings import ModelSettings
settings = ModelSettings.from_dict({{**resolve_model("all-MiniLM-L6-v2"), "query_max_length": 32,
    "passage_max_length": 64, "precision": "auto", "encode_precision": "auto"}})
model = encoders.load(settings.encoder, device="cpu")
texts = scifact_texts({passages})
np.save(sys.argv[1], encoders.encode_side(model, settings.encoder, "passage", texts, 64, desc="", show_progress=False))
"""


def run_jobs(outputs: list[Path], threads: int, at_once: int, passages: int) -> float:
    """Wall seconds to run one job per output, ``at_once`` at a time, each with ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = JOB.format(bench=str(ROOT / "bench"), passages=passages)
    began = time.perf_counter()
    pending, running = list(outputs), []
    while pending or running:
        while pending and len(running) < at_once:
            running.append(subprocess.Popen([sys.executable, "-c", code, str(pending.pop(0))], env=env, cwd=ROOT))
        running[0].wait()
        if running[0].returncode:
            sys.exit(f"a job failed (exit {running[0].returncode})")
        running.pop(0)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--passages", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2, help="the cores a job gets alone (resources.threads)")
    args = parser.parse_args()
    half = max(1, args.threads // 2)
    at_once = args.threads // half
    with tempfile.TemporaryDirectory() as tmp:
        serial = [Path(tmp) / f"serial{i}.npy" for i in range(args.jobs)]
        paired = [Path(tmp) / f"paired{i}.npy" for i in range(args.jobs)]
        one_at_a_time = run_jobs(serial, args.threads, 1, args.passages)
        overlapped = run_jobs(paired, half, at_once, args.passages)
        same = all(np.array_equal(np.load(a), np.load(b)) for a, b in zip(serial, paired, strict=True))

    import torch

    from opera.models import precision

    print(
        f"{args.jobs} jobs, each: import, load all-MiniLM-L6-v2, encode {args.passages} SciFact passages at 64 "
        f"tokens; CPU {precision.cpu_description()} ({torch.get_num_threads()} cores seen)"
    )
    print("| mode | wall s | s per job | vs one at a time |")
    print("|---|---:|---:|---:|")
    for name, seconds in (
        (f"one at a time, {args.threads} threads", one_at_a_time),
        (f"{at_once} at a time, {half} thread(s) each", overlapped),
    ):
        print(f"| {name} | {seconds:.1f} | {seconds / args.jobs:.1f} | {one_at_a_time / seconds:.2f}x |")
    print(f"embeddings bitwise identical in both modes: {same}")


if __name__ == "__main__":
    main()
