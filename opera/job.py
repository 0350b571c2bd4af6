"""Job plumbing for workflow scripts: log to the job's log file, use the job's threads, and turn
out-of-memory and time-limit deaths into messages that say which resource to raise.

This is the only module that touches process-wide state (stderr, signal handlers, torch threads);
the stage functions in opera.pipeline stay free of it, so the library behaves the same when it is
called from the CLI, a notebook or a test.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# rule -> the config keys under `resources` that size its memory and its runtime
_RESOURCE_KEYS = {"finetune": ("finetune_mem_mb", "finetune_runtime")}


class JobResourceError(RuntimeError):
    """A job ran out of memory or time; the message names the rule and the resource to raise."""


def setup(log_files, threads: int) -> None:
    """Send logging and progress bars (stderr) to the job's log file; use the job's threads."""
    import torch

    if log_files:
        sys.stderr = open(log_files[0], "a", encoding="utf-8", buffering=1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True, format=LOG_FORMAT)
    torch.set_num_threads(max(1, int(threads)))


def run(snakemake, stage: Callable[[], object]) -> None:
    """Run ``stage()`` for a workflow script under the job's log, threads and resource messages."""
    setup(snakemake.log, snakemake.threads)
    rule, resources = snakemake.rule, snakemake.resources
    mem_key, time_key = _RESOURCE_KEYS.get(rule, ("mem_mb", "runtime"))

    def on_term(signum, frame):
        # SLURM sends SIGTERM at the time limit (before SIGKILL).
        raise JobResourceError(
            f"rule {rule} was stopped by signal {signum}, most likely at its time limit "
            f"(runtime={resources.get('runtime')} min): raise resources.{time_key} in the config. "
            "A finetune job resumes from its last checkpoint when rerun."
        )

    signal.signal(signal.SIGTERM, on_term)
    try:
        stage()
    except MemoryError as exc:
        raise JobResourceError(_oom_message(rule, mem_key, resources, "CPU memory")) from exc
    except RuntimeError as exc:
        text = str(exc)
        if "out of memory" in text.lower() or "can't allocate memory" in text.lower():
            what = "GPU memory" if "CUDA" in text else "CPU memory"
            raise JobResourceError(_oom_message(rule, mem_key, resources, what)) from exc
        raise


def _oom_message(rule: str, mem_key: str, resources, what: str) -> str:
    advice = (
        f"raise resources.{mem_key} in the config (now mem_mb={resources.get('mem_mb')})"
        if what == "CPU memory"
        else "lower the model's batch_size or enable gradient_checkpointing, or ask for larger GPUs"
    )
    return f"rule {rule} ran out of {what}: {advice}."
