"""The run's folders: a work folder owned by one job (its fingerprint), checkpoints with every
state a resume needs (model, optimizer, scheduler, sampler, random generators) and their checksums,
the train log cut back to the checkpoint on resume, and the finished run published to its output
folder (published again, not retrained, when the same job finished there)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from opera import io
from opera.training.distributed import Dist, barrier

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


LOG_FILE = "train_log.jsonl"


FINGERPRINT_FILE = "job_fingerprint.json"


def step_dirs(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("step*"):
        match = re.fullmatch(r"step(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def claim_work_dir(work_dir: Path, job: dict) -> None:
    """Make ``work_dir`` this job's: resume state left by a run with other settings is discarded.

    Without this, a run killed under one config and restarted under another (say a new lr) would
    silently continue the old one.
    """
    fingerprint = json.dumps(job, sort_keys=True, default=str)
    marker = work_dir / FINGERPRINT_FILE
    if work_dir.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        log.warning("discarding resume state in %s: it belongs to a run with other settings", work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        io.write_text(marker, fingerprint)


def rng_state(neg_rng: np.random.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "negatives": neg_rng.bit_generator.state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, neg_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    neg_rng.bit_generator.state = state["negatives"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(work_dir: Path) -> tuple[int, str | None]:
    """(step, path) of the newest checkpoint in ``work_dir`` that matches its checksums; (0, None)
    for a fresh run. A damaged one is named in the log and passed over for the one before it."""
    for step, path in reversed(step_dirs(work_dir)):
        try:
            records = io.verify_dir(path)
        except io.CorruptArtifactError as exc:
            log.warning("not resuming from step %d: %s", step, exc)
            continue
        if STATE_FILE in records:
            return step, str(path)
    return 0, None


def open_log(log_path: Path, resumed_at: int, env: Dist):
    """The train log, truncated to the resumed step (a killed run may have logged further)."""
    if not env.main:
        return None
    if resumed_at:
        kept = [line for line in log_lines(log_path) if json.loads(line)["step"] <= resumed_at]
        io.write_text(log_path, "".join(line + "\n" for line in kept))
    else:
        io.write_text(log_path, "")
    return open(log_path, "a", encoding="utf-8")


def log_lines(path: Path) -> list[str]:
    """The train log's lines; a last line torn by a kill mid-write is dropped (it logged a step after
    the newest checkpoint, which the resumed run logs again), any other bad line names the file."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s:%d: dropping a torn last line (%s)", path, number, exc.msg)
                return lines[:-1]
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg}); the train log is damaged") from None
    return lines


def log_entries(path: Path) -> list[dict]:
    """The train log's entries, read as :func:`log_lines` reads its lines."""
    return [json.loads(line) for line in log_lines(path)]


def load_state(checkpoint: str | Path) -> dict:
    """A checkpoint's trainer state (optimizer, scheduler, sampler, RNGs): tensors and plain types
    only, never an arbitrary pickle."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


def save_checkpoint(model, path: Path, env: Dist, state: dict) -> None:
    """Write a step's checkpoint (model, trainer state, checksums of both) in one rename."""
    if env.main:
        try:
            with io.atomic_dir(path) as tmp:
                model.save(str(tmp))
                torch.save(state, tmp / STATE_FILE)
                io.readable_by_group(tmp)
                io.write_dir_checksums(tmp)
        except (OSError, RuntimeError) as exc:
            if not io.is_disk_full(exc):
                raise
            kept = step_dirs(path.parent)
            resume = f"a rerun resumes from step {kept[-1][0]} ({kept[-1][1]})" if kept else "a rerun starts over"
            raise io.DiskFullError(
                f"writing checkpoint {path} failed: disk full (or a quota reached): {exc}. Nothing is lost: "
                f"the partial checkpoint was removed, earlier checkpoints are intact, and {resume} once "
                "space is freed."
            ) from exc
        model.train()  # saving leaves the model in eval mode, which would silently turn dropout off
    barrier(env)


FINISHED_FILE = "finished.json"


def publish_run(work_dir: Path, out_dir: Path, summary: dict) -> None:
    """Put the finished run into ``out_dir`` in one rename: checkpoints (without optimizer state),
    each with its checksums, and logs.

    The files are hard links, and the work folder keeps its links and a ``finished.json``: when a
    rerun's Snakemake deletes ``out_dir`` (it deletes the outputs of a job its killed predecessor
    left incomplete, even if that job went on and finished), the next job of this run publishes the
    finished run again instead of training it again. Optimizer states are deleted (they are the
    bulk of a checkpoint and only serve resuming).
    """
    steps = step_dirs(work_dir)
    with io.atomic_dir(out_dir) as tmp:
        for _, path in steps:
            records = io.read_json(path / io.DIR_CHECKSUMS)
            shutil.copytree(
                path,
                tmp / path.name,
                copy_function=os.link,
                ignore=shutil.ignore_patterns(STATE_FILE, io.DIR_CHECKSUMS),
            )
            io.write_dir_checksums(tmp / path.name, {k: v for k, v in records.items() if k != STATE_FILE})
        shutil.copy2(work_dir / LOG_FILE, tmp / LOG_FILE)
        io.write_json(tmp / "run.json", summary)
        # the run's own files (each checkpoint has its own checksums.json): aggregate reads the log's times
        io.write_dir_checksums(tmp, {name: io.file_record(tmp / name) for name in (LOG_FILE, "run.json")})
    if not (work_dir / FINISHED_FILE).exists():
        io.write_json(work_dir / FINISHED_FILE, summary)  # first: from here on the run counts as finished
    for _, path in steps:
        if (path / STATE_FILE).exists():
            io.write_dir_checksums(path, io.read_json(out_dir / path.name / io.DIR_CHECKSUMS))
            (path / STATE_FILE).unlink()


def finished_run(work_dir: Path) -> dict | None:
    """The summary of a run that finished in ``work_dir`` and whose checkpoints verify; None if none."""
    marker = work_dir / FINISHED_FILE
    if not marker.exists():
        return None
    summary = io.read_json(marker)
    try:
        # every checkpoint the run wrote (its summary lists them) is there and intact, and its log
        steps = step_dirs(work_dir)
        present = [step for step, _ in steps]
        if present != summary["checkpoints"]:
            raise FileNotFoundError(f"checkpoints of steps {present} where the run wrote {summary['checkpoints']}")
        if not (work_dir / LOG_FILE).is_file():
            raise FileNotFoundError(f"{work_dir / LOG_FILE} is missing")
        for _, path in steps:
            io.verify_dir(path)
    except (io.CorruptArtifactError, FileNotFoundError) as exc:
        log.warning("not using the finished run in %s: %s; training again", work_dir, exc)
        for path in work_dir.iterdir():  # all but the claim (the fingerprint), so a killed retraining resumes
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != FINGERPRINT_FILE:
                path.unlink()
        return None
    return summary
