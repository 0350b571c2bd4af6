"""The training loop: one for every method (only the sampler and the loss differ), resumable bit for
bit, with validation between steps and a guard against a diverging run."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from opera import io, methods, tracking
from opera.methods.sampling import Sampler, make_sampler
from opera.models import encoders, precision
from opera.settings import ModelSettings
from opera.tracking import Tracker, Tracking
from opera.training.batches import TrainingData, batch_documents
from opera.training.checkpoints import (
    FINISHED_FILE,
    LOG_FILE,
    claim_work_dir,
    finished_run,
    latest_checkpoint,
    load_state,
    log_entries,
    open_log,
    publish_run,
    restore_rng,
    rng_state,
    save_checkpoint,
    step_dirs,
)
from opera.training.distributed import Dist, barrier, init_distributed
from opera.training.loss import LOSSES, Loss, infonce
from opera.training.step import TrainingDiverged, train_step

log = logging.getLogger(__name__)


# fp16's GradScaler skips a step whose gradients overflow and lowers its scale; a few skips while it
# finds its scale are normal, more than half of a window means the run no longer learns.
SKIP_WINDOW = 20


SKIPPED_STEPS_LIMIT = SKIP_WINDOW // 2


def make_optimizer(model, settings: ModelSettings):
    """AdamW (no weight decay on biases and norms) with linear warmup and decay; returns
    (optimizer, scheduler, trainable parameters)."""
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": settings.weight_decay},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=settings.lr,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.max_steps)
    return optimizer, scheduler, [p for _, p in named]


@dataclass
class _Trainer:
    """What one training run holds between steps (model, optimizer, sampler, clocks)."""

    model: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    params: list
    sampler: Sampler
    neg_rng: np.random.Generator
    loss: Loss = infonce  # the method's (its registry entry names it)
    elapsed: float = 0.0
    sampler_seconds: float = 0.0
    # whether fp16's scaler skipped each of the last steps (diagnostic only: a resumed run starts it empty)
    skipped: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SKIP_WINDOW))

    def state(self, step: int) -> dict:
        """Everything a resumed run needs to continue bit for bit after ``step``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(self.neg_rng),
            "step": step,
            "elapsed": self.elapsed,
            "sampler_seconds": self.sampler_seconds,
        }

    def restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng(state["rng"], self.neg_rng)
        self.elapsed, self.sampler_seconds = state["elapsed"], state["sampler_seconds"]


def _build_trainer(
    settings: ModelSettings, sampler: Sampler, neg_rng: np.random.Generator, env: Dist, model_path: str, seed: int
) -> _Trainer:
    model = encoders.load(settings.encoder, device=env.device, path=model_path)
    if settings.gradient_checkpointing:
        encoders.enable_gradient_checkpointing(model)
        log.info("gradient checkpointing on")
    model.train()
    optimizer, scheduler, params = make_optimizer(model, settings)
    use_scaler = precision.resolve(settings.precision, env.device) == "fp16"  # fp16 resolves only on CUDA
    scaler = torch.amp.GradScaler(precision.device_type(env.device), enabled=use_scaler)
    torch.manual_seed(seed + env.rank)  # dropout
    return _Trainer(model, optimizer, scheduler, scaler, params, sampler, neg_rng)


def _run_step(
    trainer: _Trainer, data: TrainingData, settings: ModelSettings, env: Dist, step: int, global_batch: int
) -> dict:
    """One training step; returns its train-log entry. Sampler time counts into ``elapsed`` too."""
    began = time.perf_counter()
    scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
    batch = trainer.sampler.next_batch(step - 1, global_batch)
    sampled = time.perf_counter()
    docs = batch_documents(data, batch, settings.group_size, trainer.neg_rng)
    loss_value, pos_scores, losses = train_step(
        trainer.model,
        data,
        batch,
        docs,
        settings,
        env,
        trainer.optimizer,
        trainer.scheduler,
        trainer.scaler,
        trainer.params,
        loss_fn=trainer.loss,
    )
    updating = time.perf_counter()
    if scale is not None:  # the scaler lowers its scale exactly when it skipped the step
        trainer.skipped.append(trainer.scaler.get_scale() < scale)
        if sum(trainer.skipped) > SKIPPED_STEPS_LIMIT:
            raise TrainingDiverged(
                f"fp16's gradient scaler skipped {sum(trainer.skipped)} of the last {len(trainer.skipped)} steps "
                "(non-finite gradients)",
                skipping=True,
            )
    trainer.sampler.update(batch, pos_scores, losses)
    done = time.perf_counter()
    trainer.sampler_seconds += (sampled - began) + (done - updating)
    trainer.elapsed += done - began
    return {
        "step": step,
        "elapsed": round(trainer.elapsed, 4),
        "loss": round(loss_value, 6),
        "lr": trainer.scheduler.get_last_lr()[0],
        "sampler_seconds": round(trainer.sampler_seconds, 4),
        "sampler": trainer.sampler.log_state(),
    }


def finetune(
    data: TrainingData,
    settings: ModelSettings,
    method: str,
    method_params: dict,
    seed: int,
    out_dir: str | Path,
    work_dir: str | Path,
    stop_after: int | None = None,
    data_fingerprint: dict | None = None,
    tracking_settings: Tracking | None = None,
    validator: Callable[[object], dict] | None = None,
) -> dict:
    """Finetune ``settings.encoder.path`` with ``method``; write checkpoints and the train log to ``out_dir``.

    Resumes from the newest checkpoint in ``work_dir`` if there is one and it was left by the same
    job: same settings, method, seed and ``data_fingerprint`` (what the training data was built
    from, e.g. its files' checksums and the passage format). A run of the same job that finished
    in ``work_dir`` is published again, not trained again. One process at a time owns ``work_dir``
    (a lock beside it): a second waits. ``stop_after`` stops (resumably) after that many steps in
    this call: for tests and time-sliced schedulers. ``tracking_settings``: where the train log's
    scalars also go while training (opera.tracking; not part of the job: it changes no result).
    ``validator`` (opera.retrieval.validation.PoolValidator) scores the current weights at each of
    ``settings.validation_steps()``; its result joins that step's log entry under ``validation``,
    and its time is not training time. Returns a run summary (also written as ``run.json``).
    """
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    env = init_distributed()
    job = {
        "settings": settings.to_dict(),
        "method": method,
        "method_params": method_params,
        "seed": seed,
        "pairs": data.pairs.n_pairs,
        "queries": data.pairs.n_queries,
        "world_size": env.world,
        # `auto` resolves per machine: a run resumed on another CPU class must not mix precisions
        "precision": precision.resolve(settings.precision, env.device),
        "data": data_fingerprint or {},
    }
    with contextlib.ExitStack() as held:
        if env.main:  # two writers never share a work folder: a second job waits for the first
            held.enter_context(io.exclusive(io.lock_file_for(work_dir), f"finetune {method} in {work_dir}"))
            claim_work_dir(work_dir, job)
            finished = finished_run(work_dir)
            if finished:
                log.info("%s finished in %s already (an earlier job of this run): publishing it", method, work_dir)
                publish_run(work_dir, out_dir, finished)
        barrier(env)
        if (work_dir / FINISHED_FILE).exists():
            return io.read_json(work_dir / FINISHED_FILE)
        return _train(
            data,
            settings,
            method,
            method_params,
            seed,
            out_dir,
            work_dir,
            env,
            stop_after,
            tracking_settings,
            validator,
        )


def _train(
    data: TrainingData,
    settings: ModelSettings,
    method: str,
    method_params: dict,
    seed: int,
    out_dir: Path,
    work_dir: Path,
    env: Dist,
    stop_after: int | None,
    tracking_settings: Tracking | None = None,
    validator: Callable[[object], dict] | None = None,
) -> dict:
    """The loop of :func:`finetune`, from the newest checkpoint in ``work_dir`` (a claimed work folder)."""
    global_batch = settings.batch_size * env.world
    checkpoints = set(settings.checkpoint_steps())
    validating = set(settings.validation_steps()) if validator else set()
    sampler = make_sampler(method, data.pairs, settings.max_steps, seed, method_params)
    start_step, checkpoint = latest_checkpoint(work_dir)
    if checkpoint:
        log.info("resuming %s from step %d (%s)", method, start_step, checkpoint)
    trainer = _build_trainer(
        settings, sampler, np.random.default_rng([seed, 1]), env, checkpoint or settings.encoder.path, seed
    )
    trainer.loss = LOSSES[methods.get(method).loss]
    if checkpoint:
        trainer.restore(load_state(checkpoint))
    log_handle = open_log(work_dir / LOG_FILE, start_step, env)
    tracker = Tracker(tracking_settings, "train", resumed_at=start_step) if env.main and tracking_settings else None

    from tqdm.auto import tqdm

    progress = tqdm(
        range(start_step + 1, settings.max_steps + 1), desc=f"finetune {method}", unit="step", disable=not env.main
    )
    try:
        for step in progress:
            try:
                entry = _run_step(trainer, data, settings, env, step, global_batch)
            except TrainingDiverged as exc:
                message = _diverged_message(exc, step, settings, method, work_dir, env.device)
                raise TrainingDiverged(message) from None
            if step in validating:
                validated = _validate(trainer.model, validator, env)
                if validated:
                    entry["validation"] = validated
            if env.main:
                log_handle.write(json.dumps(entry) + "\n")
                log_handle.flush()
                if tracker:
                    tracker.log(tracking.scalars(entry), step)
                progress.set_postfix(loss=f"{entry['loss']:.4f}")
            if step in checkpoints:
                save_checkpoint(trainer.model, work_dir / f"step{step}", env, trainer.state(step))
            if stop_after is not None and step - start_step >= stop_after and step < settings.max_steps:
                log.info("stopping after step %d as asked (resumable)", step)
                return {"stopped_at": step}
    finally:
        if log_handle:
            log_handle.close()
        if tracker:
            tracker.close()

    summary = {
        "method": method,
        "seed": seed,
        "max_steps": settings.max_steps,
        "world_size": env.world,
        "precision": precision.resolve(settings.precision, env.device),
        "train_seconds": round(trainer.elapsed, 4),
        "sampler_seconds": round(trainer.sampler_seconds, 4),
        "checkpoints": sorted(checkpoints),
        "sampler": sampler.log_state(),
    }
    if validating:  # from the log: a resumed run's earlier validations count too
        logged = log_entries(work_dir / LOG_FILE) if env.main else []
        summary["validation_seconds"] = round(sum(e["validation"]["seconds"] for e in logged if "validation" in e), 4)
    if env.main:
        publish_run(work_dir, out_dir, summary)
    barrier(env)
    return summary


def _validate(model, validator: Callable[[object], dict], env: Dist) -> dict | None:
    """The validator's result for the current weights, computed by the main process while the others
    wait; the model goes back to training mode. None on the other processes."""
    result = validator(model) if env.main else None
    model.train()
    barrier(env)
    return result


def _diverged_message(
    cause: TrainingDiverged, step: int, settings: ModelSettings, method: str, work_dir: Path, device
) -> str:
    """Why a run stopped, which setting most likely caused it, and what is left of it."""
    resolved = precision.resolve(settings.precision, device)
    if step == 1:  # the base model's own forward: no update made it so
        likely = (
            f"temperature ({settings.temperature}: the logits are cosine / temperature)"
            + (f" or precision ({resolved}: its range overflows)" if resolved != "fp32" else "")
            + f", or the base model {settings.encoder.path} itself"
        )
    else:
        clip = f"grad_clip {settings.grad_clip}" if settings.grad_clip > 0 else "grad_clip 0 (no clipping)"
        likely = f"lr ({settings.lr}) too large for {clip}, or temperature ({settings.temperature})"
    kept = [number for number, _ in step_dirs(work_dir)]
    left = (
        f"the checkpoints of steps {kept} stay in {work_dir}, each of finite weights"
        if kept
        else f"no checkpoint was written before it ({work_dir} holds only the train log)"
    )
    consequence = "the run no longer learns" if cause.skipping else "every later step would train on non-finite weights"
    return (
        f"finetune {method}: training stopped at step {step}: {cause}; {consequence}. Most likely responsible: "
        f"the model's {likely}. Nothing was published and no weight was updated with a non-finite step; "
        f"{left}. Change the setting in the config and rerun (a run with other settings starts over)."
    )
