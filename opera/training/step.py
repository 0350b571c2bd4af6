"""One optimizer step on this process's slice of the global batch: encode (at once, or in
mini-batches with gradient caching), gather, the method's loss, backward, average, clip, step."""

from __future__ import annotations

import math

import numpy as np
import torch

from opera.methods.sampling import Batch
from opera.models import encoders, precision
from opera.settings import ModelSettings
from opera.training.batches import TrainingData
from opera.training.distributed import Dist, average_gradients, gather_detached, gather_with_grad
from opera.training.gradcache import CachedEncoding
from opera.training.loss import Loss, false_negative_mask, infonce


class TrainingDiverged(RuntimeError):
    """The loss or the gradient stopped being finite: training on would publish a model that learned nothing.

    ``skipping``: fp16's scaler skipped the steps (the weights stayed finite), rather than a non-finite step."""

    def __init__(self, message: str, skipping: bool = False):
        super().__init__(message)
        self.skipping = skipping


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
    loss_fn: Loss = infonce,
) -> tuple[float, np.ndarray, np.ndarray]:
    """One optimizer step on this process's slice of the global batch.

    ``loss_fn`` is the method's (opera.training.loss.LOSSES). Returns the weighted loss of the global
    batch, and per query (global order) the detached positive cosine and the unweighted loss, which
    the sampler learns from.
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
            CachedEncoding(encode, q_features, rows, env.device),
            CachedEncoding(encode, p_features, rows * group, env.device),
        )
        q, p = (side.embeddings for side in cached)
    else:
        with precision.autocast(env.device, settings.precision):
            q = encoders.embed(model, q_features)
            p = encoders.embed(model, p_features)
    p_all = gather_with_grad(p, env)
    label_cols = (np.arange(len(local_queries)) + local.start) * group
    if settings.mask_false_negatives:
        mask = false_negative_mask(local_queries, docs_global, data.positives, label_cols).to(q.device)
    else:  # the authors' loss: no mask (docs/comparability.md D9)
        mask = torch.zeros((len(local_queries), len(docs_global)), dtype=torch.bool, device=q.device)
    labels = torch.as_tensor(label_cols, device=q.device)
    per_query = loss_fn(q, p_all, labels, mask, settings.temperature)
    weights = torch.as_tensor(batch.weights[local], dtype=per_query.dtype, device=q.device)
    loss = (weights * per_query).mean()

    scaler.scale(loss).backward()
    for side in cached or ():  # the (scaled) gradients of the embeddings, through the model
        side.backward()
    average_gradients(params, env)
    scaler.unscale_(optimizer)  # a no-op without fp16's scaler: the norm below is the true gradient's
    if settings.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([param.grad for param in params if param.grad is not None])

    with torch.no_grad():
        pos = (q.float() * p.float()[::group]).sum(-1)
        stats = torch.stack([per_query.detach(), pos], dim=1)
        stats = gather_detached(stats, env).cpu()  # (global batch, 2), in global order
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
