"""Job plumbing for workflow scripts: log to the job's log file, use the job's threads, run one job
of an output at a time, and turn out-of-memory, time-limit and full-disk deaths into messages that
say which resource to raise and what was kept.

This is the only module that touches process-wide state (stderr, signal handlers, torch threads);
the stage functions in opera.pipeline stay free of it, so the library behaves the same when it is
called from the CLI, a notebook or a test.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Callable

from opera import io
from opera.settings import ModelLoadError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"

# rule -> the config keys under `resources` that size its memory and its runtime
_RESOURCE_KEYS = {"finetune": ("finetune_mem_mb", "finetune_runtime")}


class JobResourceError(RuntimeError):
    """A job ran out of memory or time; the message names the rule and the resource to raise."""


# A progress bar written to a log file (not a terminal) updates at most this often, in seconds:
# a job log gets a few progress lines, not one per batch. TQDM_MININTERVAL in the environment wins.
LOG_FILE_PROGRESS_INTERVAL = "60"


def setup(log_files, threads: int) -> None:
    """Send logging and progress bars (stderr) to the job's log file; use the job's threads.

    In a log file (stderr not a terminal) progress bars update once a minute (tqdm reads its
    default ``mininterval`` from TQDM_MININTERVAL), and faiss's loader says which library it loaded
    only when that fails (its INFO lines are dropped). Threads are set without importing torch: a
    job that needs no model (evaluate of a checkpoint) spends no seconds on it.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_files:
        sys.stderr = open(log_files[0], "a", encoding="utf-8", buffering=1)
        # Log lines reopen the file if it is deleted: a rerun's Snakemake deletes the log of a job
        # it thinks incomplete while that job may run on (its driver was killed); the job's last
        # lines then land beside the rerun job's "waiting for pid …" instead of in a deleted file.
        handler = logging.handlers.WatchedFileHandler(log_files[0], encoding="utf-8")
    if not sys.stderr.isatty():
        _slow_progress_bars()
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True, format=LOG_FORMAT)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    _use_threads(max(1, int(threads)))


def _use_threads(threads: int) -> None:
    """torch, faiss and numpy's BLAS read OMP_NUM_THREADS when they start; torch, if started, is told."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _slow_progress_bars() -> None:
    """Progress bars update every TQDM_MININTERVAL seconds (default: LOG_FILE_PROGRESS_INTERVAL).

    tqdm reads TQDM_* variables once, when it is imported, which in a job happens before this
    runs: the environment variable serves the job's child processes (torchrun workers), and the
    default of tqdm's ``mininterval`` is set here for this process (an explicit argument still wins).
    """
    from functools import partialmethod

    from tqdm import std

    os.environ.setdefault("TQDM_MININTERVAL", LOG_FILE_PROGRESS_INTERVAL)
    if not getattr(std.tqdm, "_opera_interval_set", False):
        std.tqdm.__init__ = partialmethod(std.tqdm.__init__, mininterval=float(os.environ["TQDM_MININTERVAL"]))
        std.tqdm._opera_interval_set = True


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
    # One job of an output at a time: after its Snakemake was killed, a job keeps running (as SLURM
    # jobs do), and the rerun's job of the same output waits for it instead of writing beside it.
    lock = io.lock_file_for(snakemake.log[0] if snakemake.log else snakemake.output[0])
    try:
        with io.exclusive(lock, f"rule {rule}"):
            stage()
    except io.DiskFullError:
        raise
    except ModelLoadError as exc:  # one sentence that names the key to fix, not a chain of retries
        model = getattr(snakemake.wildcards, "model", None)
        key = ".".join(part for part in ("models", model, exc.field) if part)
        raise ModelLoadError(f"rule {rule}: config key {key!r}: {exc}", exc.field) from None
    except MemoryError as exc:
        raise JobResourceError(_oom_message(rule, mem_key, resources, "CPU memory")) from exc
    except RuntimeError as exc:
        text = str(exc)
        if "out of memory" in text.lower() or "can't allocate memory" in text.lower():
            what = "GPU memory" if "CUDA" in text else "CPU memory"
            raise JobResourceError(_oom_message(rule, mem_key, resources, what)) from exc
        if io.is_disk_full(exc):
            raise io.DiskFullError(_disk_full_message(rule, exc)) from exc
        raise
    except OSError as exc:
        if io.is_disk_full(exc):
            raise io.DiskFullError(_disk_full_message(rule, exc)) from exc
        raise


def _disk_full_message(rule: str, exc: BaseException) -> str:
    return (
        f"rule {rule}: disk full (or a quota reached) while writing: {exc}. Nothing earlier is lost: "
        "outputs are written to temporary files and renamed into place only when complete. "
        "Free space, then rerun the workflow."
    )


def _oom_message(rule: str, mem_key: str, resources, what: str) -> str:
    advice = (
        f"raise resources.{mem_key} in the config (now mem_mb={resources.get('mem_mb')})"
        if what == "CPU memory"
        else "lower the model's batch_size or enable gradient_checkpointing, or ask for larger GPUs"
    )
    return f"rule {rule} ran out of {what}: {advice}."


def encode_devices(gpus: int) -> tuple:
    """The devices a corpus-encoding job spreads its shards over: one process per GPU it holds
    when it holds several (SLURM numbers a job's GPUs from 0), else this process's default device."""
    import torch

    if gpus > 1 and torch.cuda.device_count() >= gpus:
        return tuple(f"cuda:{i}" for i in range(gpus))
    return (None,)
