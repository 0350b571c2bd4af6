"""Finetuning: InfoNCE with hard and in-batch negatives, driven by an online sampler.

One loop serves every method; only the sampler differs (opera.sampling). Each query brings one
positive and ``group_size - 1`` hard negatives; every passage in the (global) batch is a negative
for the other queries, except passages that are known positives of that query, which are masked
so a shared relevant document never counts against itself.

The loop is resumable bit for bit: every ``eval_every`` steps it writes a checkpoint (model in
sentence-transformers format, plus optimizer, scheduler, sampler and RNG states) into a work
folder; a restarted run continues from the last one. Under torchrun the same loop runs as DDP,
with embeddings gathered across processes so negatives are shared by the whole global batch.
``train_log.jsonl`` records, per step, the training wall time (checkpoint writing excluded), the
loss, the learning rate and the sampler's state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from opera import encoders, io
from opera.config import checkpoint_steps, warmup_steps
from opera.sampling import Batch, PairIndex, make_sampler

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"


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
    def build(cls, kept_pairs: pd.DataFrame, all_pairs: pd.DataFrame, negatives: pd.DataFrame,
              queries: pd.DataFrame, corpus_texts: dict[str, str]) -> "TrainingData":
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
        pool = np.array([d for d in rng.choice(data.corpus_ids, size=min(len(data.corpus_ids), 4 * count + 8), replace=False)
                         if d not in data.positives[query]], dtype=object)
    rows = rng.choice(len(pool), size=count, replace=len(pool) < count)
    return [str(pool[r]) for r in rows]


def infonce(q: torch.Tensor, p: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-query InfoNCE over cosine / temperature; ``mask`` marks logits to drop (known positives)."""
    logits = (q @ p.T).float() / temperature
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, labels, reduction="none")


def false_negative_mask(query_rows: np.ndarray, passage_docs: list[str], positives: list[frozenset], label_cols: np.ndarray) -> torch.Tensor:
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
    marker = work_dir / "job_fingerprint.json"
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


def make_optimizer(model, settings: dict):
    """AdamW (no weight decay on biases and norms) with linear warmup and decay; returns
    (optimizer, scheduler, trainable parameters)."""
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": settings["weight_decay"]},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=settings["lr"],
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(settings), settings["max_steps"])
    return optimizer, scheduler, [p for _, p in named]


# --- the loop ---------------------------------------------------------------------------------------

def finetune(
    data: TrainingData,
    settings: dict,
    method: str,
    method_params: dict,
    seed: int,
    out_dir: str | Path,
    work_dir: str | Path,
    stop_after: int | None = None,
) -> dict:
    """Finetune ``settings['path']`` with ``method``; write checkpoints and the train log to ``out_dir``.

    Resumes from the newest checkpoint in ``work_dir`` if there is one. ``stop_after`` stops
    (resumably) after that many steps in this call: for tests and time-sliced schedulers.
    Returns a run summary (also written as ``run.json``).
    """
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    env = init_distributed()
    max_steps, batch_size, group = settings["max_steps"], settings["batch_size"], settings["group_size"]
    global_batch = batch_size * env.world
    checkpoints = set(checkpoint_steps(settings))

    sampler = make_sampler(method, data.pairs, max_steps, seed, method_params)
    neg_rng = np.random.default_rng([seed, 1])
    if env.main:
        _claim_work_dir(work_dir, {"settings": settings, "method": method, "method_params": method_params, "seed": seed,
                                   "pairs": data.pairs.n_pairs, "queries": data.pairs.n_queries, "world_size": env.world})
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()
    resume = _step_dirs(work_dir)
    start_step, elapsed, sampler_seconds = 0, 0.0, 0.0
    model_path = settings["path"]
    if resume:
        start_step, model_path = resume[-1][0], str(resume[-1][1])
        log.info("resuming %s from step %d (%s)", method, start_step, model_path)

    model = encoders.load_from_settings(settings, device=env.device, path=model_path)
    if settings.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    model.train()
    optimizer, scheduler, params = make_optimizer(model, settings)
    use_scaler = settings["precision"] == "fp16" and env.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    torch.manual_seed(seed + env.rank)  # dropout

    log_path = work_dir / LOG_FILE
    if resume:
        state = torch.load(Path(model_path) / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])
        _restore_rng(state["rng"], neg_rng)
        elapsed, sampler_seconds = state["elapsed"], state["sampler_seconds"]
        lines = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= start_step] if log_path.exists() else []
        if env.main:
            io.write_text(log_path, "".join(line + "\n" for line in lines))
    elif env.main:
        io.write_text(log_path, "")

    log_handle = open(log_path, "a", encoding="utf-8") if env.main else None
    from tqdm.auto import tqdm

    progress = tqdm(range(start_step + 1, max_steps + 1), desc=f"finetune {method}", unit="step", disable=not env.main)
    try:
        for step in progress:
            began = time.perf_counter()
            batch = sampler.next_batch(step - 1, global_batch)
            sampled = time.perf_counter()
            docs = batch_documents(data, batch, group, neg_rng)
            loss_value, pos_scores, losses = train_step(model, data, batch, docs, settings, env, optimizer, scheduler, scaler, params)
            updating = time.perf_counter()
            sampler.update(batch, pos_scores, losses)
            done = time.perf_counter()
            sampler_seconds += (sampled - began) + (done - updating)
            elapsed += done - began
            if env.main:
                entry = {"step": step, "elapsed": round(elapsed, 4), "loss": round(loss_value, 6),
                         "lr": scheduler.get_last_lr()[0], "sampler_seconds": round(sampler_seconds, 4),
                         "sampler": sampler.log_state()}
                log_handle.write(json.dumps(entry) + "\n")
                log_handle.flush()
                progress.set_postfix(loss=f"{loss_value:.4f}")
            if step in checkpoints:
                _save_checkpoint(model, work_dir / f"step{step}", env, {
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "sampler": sampler.state_dict(), "rng": _rng_state(neg_rng), "step": step,
                    "elapsed": elapsed, "sampler_seconds": sampler_seconds,
                })
            if stop_after is not None and step - start_step >= stop_after and step < max_steps:
                log.info("stopping after step %d as asked (resumable)", step)
                return {"stopped_at": step}
    finally:
        if log_handle:
            log_handle.close()

    summary = {"method": method, "seed": seed, "max_steps": max_steps, "world_size": env.world,
               "train_seconds": round(elapsed, 4), "sampler_seconds": round(sampler_seconds, 4),
               "checkpoints": sorted(checkpoints), "sampler": sampler.log_state()}
    if env.main:
        _publish(work_dir, out_dir, summary)
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return summary


def batch_documents(data: TrainingData, batch: Batch, group: int, neg_rng: np.random.Generator) -> list[str]:
    """Passages of the global batch: per query its drawn positive, then ``group - 1`` hard negatives.

    Every process draws for the whole global batch, so the RNG streams stay identical across ranks.
    """
    docs: list[str] = []
    for query, pair in zip(batch.queries, batch.pairs):
        docs.append(str(data.pairs.doc_ids[pair]))
        docs.extend(draw_negatives(data, int(query), group - 1, neg_rng))
    return docs


def train_step(model, data: TrainingData, batch: Batch, docs_global: list[str], settings: dict, env: Dist,
               optimizer, scheduler, scaler, params) -> tuple[float, np.ndarray, np.ndarray]:
    """One optimizer step on this process's slice of the global batch.

    Returns the weighted loss of the global batch, and per query (global order) the detached
    positive cosine and the unweighted loss, which the sampler learns from.
    """
    group = settings["group_size"]
    local = slice(env.rank * settings["batch_size"], (env.rank + 1) * settings["batch_size"])
    local_queries = batch.queries[local]
    local_docs = docs_global[local.start * group : local.stop * group]

    instruction_q, instruction_p = settings.get("query_instruction", ""), settings.get("passage_instruction", "")
    q_features = encoders.tokenize(model, [instruction_q + data.query_texts[q] for q in local_queries], settings["query_max_length"])
    p_features = encoders.tokenize(model, [instruction_p + data.doc_texts[d] for d in local_docs], settings["passage_max_length"])
    with encoders.autocast(env.device, settings["precision"]):
        q = encoders.embed(model, q_features)
        p = encoders.embed(model, p_features)
    p_all = _gather_with_grad(p, env)
    label_cols = (np.arange(len(local_queries)) + local.start) * group
    mask = false_negative_mask(local_queries, docs_global, data.positives, label_cols).to(q.device)
    labels = torch.as_tensor(label_cols, device=q.device)
    per_query = infonce(q, p_all, labels, mask, settings["temperature"])
    weights = torch.as_tensor(batch.weights[local], dtype=per_query.dtype, device=q.device)
    loss = (weights * per_query).mean()

    scaler.scale(loss).backward()
    _average_gradients(params, env)
    if settings["grad_clip"] > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, settings["grad_clip"])
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)

    with torch.no_grad():
        pos = (q.float() * p.float()[:: group]).sum(-1)
        stats = torch.stack([per_query.detach(), pos], dim=1)
        stats = _gather_detached(stats, env).cpu()  # (global batch, 2), in global order
        loss_all = (torch.as_tensor(batch.weights, dtype=stats.dtype) * stats[:, 0]).mean()
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
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in params if p.grad is not None]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= env.world
    for grad, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(averaged)


def _save_checkpoint(model, path: Path, env: Dist, state: dict) -> None:
    if env.main:
        with io.atomic_dir(path) as tmp:
            model.save(str(tmp))
            torch.save(state, tmp / STATE_FILE)
        model.train()  # saving leaves the model in eval mode, which would silently turn dropout off
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _publish(work_dir: Path, out_dir: Path, summary: dict) -> None:
    """Move the finished run into ``out_dir`` in one rename: checkpoints (without optimizer state) and logs."""
    with io.atomic_dir(out_dir) as tmp:
        for step, path in _step_dirs(work_dir):
            shutil.copytree(path, tmp / path.name, copy_function=os.link, ignore=shutil.ignore_patterns(STATE_FILE))
        shutil.copy2(work_dir / LOG_FILE, tmp / LOG_FILE)
        io.write_json(tmp / "run.json", summary)
    shutil.rmtree(work_dir)


def read_log(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
