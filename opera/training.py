"""Finetuning: InfoNCE with hard and in-batch negatives, driven by an online sampler.

One loop serves every method; only the sampler differs (opera.sampling). Each query brings one
positive and ``group_size - 1`` hard negatives; every passage in the (global) batch is a negative
for the other queries, except passages that are known positives of that query, which are masked
so a shared relevant document never counts against itself.

The loop is resumable bit for bit: every ``eval_every`` steps it writes a checkpoint (model in
sentence-transformers format, plus optimizer, scheduler, sampler and RNG states) into a work
folder, each with checksums; a restarted run continues from the newest intact one, and a run that
already finished there is published again rather than retrained. Under torchrun the same loop runs as DDP,
with embeddings gathered across processes so negatives are shared by the whole global batch.
``train_log.jsonl`` records, per step, the training wall time (checkpoint writing and validation
excluded), the loss, the learning rate and the sampler's state, and at validated steps the pool's
metrics (opera.validation).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from opera import encoders, gradcache, io, precision, tracking
from opera.sampling import Batch, PairIndex, Sampler, make_sampler
from opera.settings import ModelSettings
from opera.tracking import Tracker, Tracking

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
FINGERPRINT_FILE = "job_fingerprint.json"


@dataclass
class TrainingData:
    """Everything the loop draws from, indexed like ``pairs.query_ids``."""

    pairs: PairIndex
    query_texts: list[str]
    doc_texts: dict[str, str]
    negatives: list[np.ndarray]  # hard-negative pool (doc ids) per query
    positives: list[frozenset]  # every known positive per query (masked as in-batch negatives)
    corpus_ids: np.ndarray  # fallback negatives for a query with an empty pool

    @classmethod
    def build(
        cls,
        kept_pairs: pd.DataFrame,
        all_pairs: pd.DataFrame,
        negatives: pd.DataFrame,
        queries: pd.DataFrame,
        corpus_texts: dict[str, str],
    ) -> TrainingData:
        pairs = PairIndex(kept_pairs)
        query_text = queries.set_index("query_id")["text"]
        pools = negatives.groupby("query_id")["doc_id"].agg(lambda s: s.to_numpy())
        known = all_pairs.groupby("query_id")["doc_id"].agg(frozenset)
        empty = np.array([], dtype=object)
        return cls(
            pairs=pairs,
            query_texts=[query_text[q] for q in pairs.query_ids],
            doc_texts=corpus_texts,
            negatives=[pools.get(q, empty) for q in pairs.query_ids],
            positives=[known.get(q, frozenset()) for q in pairs.query_ids],
            corpus_ids=np.array(sorted(corpus_texts), dtype=object),
        )


def draw_negatives(data: TrainingData, query: int, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` hard negatives for one query: from its mined pool, else random non-positive documents."""
    if count == 0:
        return []
    pool = data.negatives[query]
    if len(pool) == 0:
        pool = np.array(
            [
                d
                for d in rng.choice(data.corpus_ids, size=min(len(data.corpus_ids), 4 * count + 8), replace=False)
                if d not in data.positives[query]
            ],
            dtype=object,
        )
    rows = rng.choice(len(pool), size=count, replace=len(pool) < count)
    return [str(pool[r]) for r in rows]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient stopped being finite: training on would publish a model that learned nothing.

    ``skipping``: fp16's scaler skipped the steps (the weights stayed finite), rather than a non-finite step."""

    def __init__(self, message: str, skipping: bool = False):
        super().__init__(message)
        self.skipping = skipping


# fp16's GradScaler skips a step whose gradients overflow and lowers its scale; a few skips while it
# finds its scale are normal, more than half of a window means the run no longer learns.
SKIP_WINDOW = 20
SKIPPED_STEPS_LIMIT = SKIP_WINDOW // 2


def infonce(
    q: torch.Tensor, p: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-query InfoNCE over cosine / temperature; ``mask`` marks logits to drop (known positives)."""
    logits = (q @ p.T).float() / temperature
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, labels, reduction="none")


def false_negative_mask(
    query_rows: np.ndarray, passage_docs: list[str], positives: list[frozenset], label_cols: np.ndarray
) -> torch.Tensor:
    """True where a batch passage is a known positive of a query other than at the query's label column."""
    mask = np.zeros((len(query_rows), len(passage_docs)), dtype=bool)
    for i, query in enumerate(query_rows):
        own = positives[query]
        for j, doc in enumerate(passage_docs):
            if j != label_cols[i] and doc in own:
                mask[i, j] = True
    return torch.from_numpy(mask)


# --- distributed helpers ----------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=encoders.default_device())
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", f"cuda:{local_rank}"
    else:
        backend, device = "gloo", "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    log.info("distributed training: rank %d of %d on %s (%s)", dist.get_rank(), world, device, backend)
    return Dist(rank=dist.get_rank(), world=world, device=device)


def _gather_with_grad(tensor: torch.Tensor, env: Dist) -> torch.Tensor:
    if env.world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def _gather_detached(tensor: torch.Tensor, env: Dist) -> torch.Tensor:
    if env.world == 1:
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(env.world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


# --- checkpoints ------------------------------------------------------------------------------------


def _step_dirs(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("step*"):
        match = re.fullmatch(r"step(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _claim_work_dir(work_dir: Path, job: dict) -> None:
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


def _rng_state(neg_rng: np.random.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "negatives": neg_rng.bit_generator.state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, neg_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    neg_rng.bit_generator.state = state["negatives"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


# --- the loop ---------------------------------------------------------------------------------------


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
            "rng": _rng_state(self.neg_rng),
            "step": step,
            "elapsed": self.elapsed,
            "sampler_seconds": self.sampler_seconds,
        }

    def restore(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        _restore_rng(state["rng"], self.neg_rng)
        self.elapsed, self.sampler_seconds = state["elapsed"], state["sampler_seconds"]


def _barrier(env: Dist) -> None:
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _latest_checkpoint(work_dir: Path) -> tuple[int, str | None]:
    """(step, path) of the newest checkpoint in ``work_dir`` that matches its checksums; (0, None)
    for a fresh run. A damaged one is named in the log and passed over for the one before it."""
    for step, path in reversed(_step_dirs(work_dir)):
        try:
            records = io.verify_dir(path)
        except io.CorruptArtifactError as exc:
            log.warning("not resuming from step %d: %s", step, exc)
            continue
        if STATE_FILE in records:
            return step, str(path)
    return 0, None


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


def _open_log(log_path: Path, resumed_at: int, env: Dist):
    """The train log, truncated to the resumed step (a killed run may have logged further)."""
    if not env.main:
        return None
    if resumed_at:
        kept = [line for line in _log_lines(log_path) if json.loads(line)["step"] <= resumed_at]
        io.write_text(log_path, "".join(line + "\n" for line in kept))
    else:
        io.write_text(log_path, "")
    return open(log_path, "a", encoding="utf-8")


def _log_lines(path: Path) -> list[str]:
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
    ``validator`` (opera.validation.PoolValidator) scores the current weights at each of
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
            _claim_work_dir(work_dir, job)
            finished = _finished_run(work_dir)
            if finished:
                log.info("%s finished in %s already (an earlier job of this run): publishing it", method, work_dir)
                _publish(work_dir, out_dir, finished)
        _barrier(env)
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
    start_step, checkpoint = _latest_checkpoint(work_dir)
    if checkpoint:
        log.info("resuming %s from step %d (%s)", method, start_step, checkpoint)
    trainer = _build_trainer(
        settings, sampler, np.random.default_rng([seed, 1]), env, checkpoint or settings.encoder.path, seed
    )
    if checkpoint:
        trainer.restore(torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True))
    log_handle = _open_log(work_dir / LOG_FILE, start_step, env)
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
                _save_checkpoint(trainer.model, work_dir / f"step{step}", env, trainer.state(step))
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
        logged = [json.loads(line) for line in _log_lines(work_dir / LOG_FILE)] if env.main else []
        summary["validation_seconds"] = round(sum(e["validation"]["seconds"] for e in logged if "validation" in e), 4)
    if env.main:
        _publish(work_dir, out_dir, summary)
    _barrier(env)
    return summary


def _validate(model, validator: Callable[[object], dict], env: Dist) -> dict | None:
    """The validator's result for the current weights, computed by the main process while the others
    wait; the model goes back to training mode. None on the other processes."""
    result = validator(model) if env.main else None
    model.train()
    _barrier(env)
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
    kept = [number for number, _ in _step_dirs(work_dir)]
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


def batch_documents(data: TrainingData, batch: Batch, group: int, neg_rng: np.random.Generator) -> list[str]:
    """Passages of the global batch: per query its drawn positive, then ``group - 1`` hard negatives.

    Every process draws for the whole global batch, so the RNG streams stay identical across ranks.
    """
    docs: list[str] = []
    for query, pair in zip(batch.queries, batch.pairs, strict=True):
        docs.append(str(data.pairs.doc_ids[pair]))
        docs.extend(draw_negatives(data, int(query), group - 1, neg_rng))
    return docs


def train_step(
    model,
    data: TrainingData,
    batch: Batch,
    docs_global: list[str],
    settings: ModelSettings,
    env: Dist,
    optimizer,
    scheduler,
    scaler,
    params,
) -> tuple[float, np.ndarray, np.ndarray]:
    """One optimizer step on this process's slice of the global batch.

    Returns the weighted loss of the global batch, and per query (global order) the detached
    positive cosine and the unweighted loss, which the sampler learns from.
    """
    group = settings.group_size
    local = slice(env.rank * settings.batch_size, (env.rank + 1) * settings.batch_size)
    local_queries = batch.queries[local]
    local_docs = docs_global[local.start * group : local.stop * group]

    eos = settings.train_append_eos
    q_texts = [data.query_texts[q] for q in local_queries]
    q_features = encoders.tokenize_side(model, settings.encoder, "query", q_texts, append_eos=eos)
    p_texts = [data.doc_texts[d] for d in local_docs]
    p_features = encoders.tokenize_side(model, settings.encoder, "passage", p_texts, append_eos=eos)
    cached = None
    if settings.mini_batch_size:  # gradient caching: the same loss, a mini-batch's activations at a time

        def encode(features):
            with precision.autocast(env.device, settings.precision):
                return encoders.embed(model, features)

        rows = settings.mini_batch_size
        cached = (
            gradcache.CachedEncoding(encode, q_features, rows, env.device),
            gradcache.CachedEncoding(encode, p_features, rows * group, env.device),
        )
        q, p = (side.embeddings for side in cached)
    else:
        with precision.autocast(env.device, settings.precision):
            q = encoders.embed(model, q_features)
            p = encoders.embed(model, p_features)
    p_all = _gather_with_grad(p, env)
    label_cols = (np.arange(len(local_queries)) + local.start) * group
    if settings.mask_false_negatives:
        mask = false_negative_mask(local_queries, docs_global, data.positives, label_cols).to(q.device)
    else:  # the authors' loss: no mask (docs/comparability.md D9)
        mask = torch.zeros((len(local_queries), len(docs_global)), dtype=torch.bool, device=q.device)
    labels = torch.as_tensor(label_cols, device=q.device)
    per_query = infonce(q, p_all, labels, mask, settings.temperature)
    weights = torch.as_tensor(batch.weights[local], dtype=per_query.dtype, device=q.device)
    loss = (weights * per_query).mean()

    scaler.scale(loss).backward()
    for side in cached or ():  # the (scaled) gradients of the embeddings, through the model
        side.backward()
    _average_gradients(params, env)
    scaler.unscale_(optimizer)  # a no-op without fp16's scaler: the norm below is the true gradient's
    if settings.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([param.grad for param in params if param.grad is not None])

    with torch.no_grad():
        pos = (q.float() * p.float()[::group]).sum(-1)
        stats = torch.stack([per_query.detach(), pos], dim=1)
        stats = _gather_detached(stats, env).cpu()  # (global batch, 2), in global order
        loss_all = (torch.as_tensor(batch.weights, dtype=stats.dtype) * stats[:, 0]).mean()
    # The gathered loss and the all-reduced gradient are the same on every rank, so all stop together.
    # fp16's scaler skips a non-finite step by design; _run_step counts those skips.
    if not scaler.is_enabled() and not (math.isfinite(float(loss_all)) and math.isfinite(float(norm))):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"the loss is {float(loss_all)} and the gradient norm {float(norm)}")
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss_all), stats[:, 1].numpy(), stats[:, 0].numpy()


def _average_gradients(params, env: Dist) -> None:
    """Average gradients across processes in one all-reduce.

    Done by hand rather than with DistributedDataParallel: each step runs two forward passes
    (queries, passages) before one backward, and some parameters (e.g. BERT's pooler) never get a
    gradient, both of which DDP's reducer rejects without slower workarounds.
    """
    if env.world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= env.world
    for grad, averaged in zip(grads, torch.split(flat, [grad.numel() for grad in grads]), strict=True):
        grad.copy_(averaged.view_as(grad))


def _save_checkpoint(model, path: Path, env: Dist, state: dict) -> None:
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
            kept = _step_dirs(path.parent)
            resume = f"a rerun resumes from step {kept[-1][0]} ({kept[-1][1]})" if kept else "a rerun starts over"
            raise io.DiskFullError(
                f"writing checkpoint {path} failed: disk full (or a quota reached): {exc}. Nothing is lost: "
                f"the partial checkpoint was removed, earlier checkpoints are intact, and {resume} once "
                "space is freed."
            ) from exc
        model.train()  # saving leaves the model in eval mode, which would silently turn dropout off
    _barrier(env)


FINISHED_FILE = "finished.json"


def _publish(work_dir: Path, out_dir: Path, summary: dict) -> None:
    """Put the finished run into ``out_dir`` in one rename: checkpoints (without optimizer state),
    each with its checksums, and logs.

    The files are hard links, and the work folder keeps its links and a ``finished.json``: when a
    rerun's Snakemake deletes ``out_dir`` (it deletes the outputs of a job its killed predecessor
    left incomplete, even if that job went on and finished), the next job of this run publishes the
    finished run again instead of training it again. Optimizer states are deleted (they are the
    bulk of a checkpoint and only serve resuming).
    """
    steps = _step_dirs(work_dir)
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


def _finished_run(work_dir: Path) -> dict | None:
    """The summary of a run that finished in ``work_dir`` and whose checkpoints verify; None if none."""
    marker = work_dir / FINISHED_FILE
    if not marker.exists():
        return None
    summary = io.read_json(marker)
    try:
        # every checkpoint the run wrote (its summary lists them) is there and intact, and its log
        steps = _step_dirs(work_dir)
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
