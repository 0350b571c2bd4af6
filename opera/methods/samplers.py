"""OPERA's samplers in your own training loop: sentence-transformers' trainer or plain PyTorch.

The pipeline's trainer and this module use the same sampler objects (opera.methods.sampling); this module
only maps them onto your training rows. Your data is one row per (query, positive) pair, with the
query's id and, for dp, dp_query, dp_doc and sp, the pair's score under the base model (the cosine
of the two embeddings). For each step the sampler names the rows to train on; after the step you
hand back the trained pairs' cosines (and, for InfoBatch, their per-row losses).

Plain PyTorch, in three lines around your step::

    sampler = OnlineSampler(query_ids, scores, method="dp", max_steps=1000, batch_size=32, seed=42)
    for rows in sampler:                        # the training rows of one step (a list of indices)
        ...                                     # encode rows' queries and positives, loss, backward, step
        sampler.update(cosines, losses)         # the trained pairs' cosines (and per-row losses)

sentence-transformers (``SentenceTransformerTrainer``): the sampler is the trainer's batch
sampler, and a loss wrapper hands the cosines back::

    args = SentenceTransformerTrainingArguments(..., max_steps=1000, per_device_train_batch_size=32,
                                                batch_sampler=sampler.batch_sampler)
    loss = FeedbackLoss(MultipleNegativesRankingLoss(model), sampler)

docs/samplers.md has both examples in full. Methods: ``basic`` (uniform), ``sp`` and ``random``
(static pruning of the pairs, then uniform), ``infobatch``, ``dp``, ``dp_query``, ``dp_doc``; their
parameters are the pipeline's ``method_params`` (opera/schema.yaml, docs/methods.md). One process:
under distributed training each process would need its own share of the queries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from opera import methods
from opera.config import method_params_with_defaults
from opera.methods import pruning
from opera.methods.sampling import Batch, PairIndex, make_sampler


class OnlineSampler:
    """The training rows of each step, drawn by a method's sampler over your (query, positive) rows.

    ``query_ids``: the query of each training row; ``scores``: each row's base-model cosine
    (needed by dp, dp_query, dp_doc and sp; zeros are used when None). ``params`` overrides the
    method's defaults (``method_params`` in opera/schema.yaml). Static pruning (sp, random) keeps
    its share of the rows first; rows it drops are never drawn.

    Iterating yields ``max_steps`` lists of row indices; :meth:`update` hands back what training
    learned about the oldest step not yet updated (steps are updated in the order they were
    drawn, so a data loader that draws a step ahead is fine)."""

    def __init__(
        self,
        query_ids: Sequence,
        scores: Sequence[float] | None = None,
        *,
        method: str,
        max_steps: int,
        batch_size: int,
        seed: int,
        params: dict | None = None,
    ):
        entry = methods.get(method)
        if not entry.trains:
            raise ValueError(f"method {method!r} does not train, so it has no sampler")
        needs_scores = entry.pruner == "top_score" or entry.sampler == "dp"
        if scores is None and needs_scores:
            raise ValueError(f"method {method!r} needs each row's base-model score (scores=...)")
        rows = pd.DataFrame(
            {
                "query_id": pd.Series(list(query_ids)).astype(str),
                "doc_id": np.arange(len(query_ids)),  # the row itself: PairIndex keeps it as the pair's id
                "score": np.zeros(len(query_ids)) if scores is None else np.asarray(scores, dtype=np.float64),
            }
        )
        if len(rows) == 0:
            raise ValueError("no training rows")
        if not np.isfinite(rows["score"]).all():
            raise ValueError("scores must be finite")
        self.method = method
        self.n_rows = len(rows)
        self.max_steps = int(max_steps)
        self.batch_size = int(batch_size)
        self.params = method_params_with_defaults(method, params)
        kept = rows
        if entry.pruner:
            kept, self.pruning_report = pruning.prune(rows, method, pruning.run_params(method, self.params, seed))
        self.pairs = PairIndex(kept)
        self.sampler = make_sampler(method, self.pairs, self.max_steps, seed, self.params)
        self.step = 0
        self._pending: deque[Batch] = deque()

    def __len__(self) -> int:
        return self.max_steps

    def __iter__(self) -> Iterator[list[int]]:
        while self.step < self.max_steps:
            batch = self.sampler.next_batch(self.step, self.batch_size)
            self._pending.append(batch)
            self.step += 1
            yield self.pairs.doc_ids[batch.pairs].astype(int).tolist()

    def pending_weights(self) -> np.ndarray:
        """The per-row loss weights of the oldest step not yet updated (InfoBatch rescales; 1 otherwise)."""
        if not self._pending:
            raise RuntimeError("no step is waiting for its update: draw a step first")
        return self._pending[0].weights

    def update(self, cosines: Sequence[float], losses: Sequence[float] | None = None) -> None:
        """Hand back the trained pairs' cosines (query embedding . positive embedding, detached)
        and, for InfoBatch, the per-row losses, in the order of the step's rows."""
        if not self._pending:
            raise RuntimeError("update() without a drawn step: every step is updated once, after it is drawn")
        batch = self._pending[0]  # checked before it is taken: a refused update loses nothing
        cosines = np.asarray(cosines, dtype=np.float64).reshape(-1)
        if len(cosines) != len(batch.pairs):
            raise ValueError(f"update() got {len(cosines)} cosines for a step of {len(batch.pairs)} rows")
        if losses is None:
            if self.method == "infobatch":
                raise ValueError("infobatch learns from each row's loss: update(cosines, losses)")
            losses = np.zeros(len(cosines))
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        if len(losses) != len(cosines):
            raise ValueError(f"update() got {len(losses)} losses for a step of {len(batch.pairs)} rows")
        self._pending.popleft()
        self.sampler.update(batch, cosines, losses)

    def log(self) -> dict:
        """The sampler's state as the pipeline logs it (epoch, schedules, diagnostics)."""
        return self.sampler.log_state()

    def batch_sampler(self, dataset, batch_size: int, drop_last: bool = False, **_ignored):
        """For ``SentenceTransformerTrainingArguments(batch_sampler=sampler.batch_sampler)``: the
        trainer calls it with its training dataset, whose rows must be this sampler's rows."""
        from sentence_transformers.base.sampler import DefaultBatchSampler

        if len(dataset) != self.n_rows:
            raise ValueError(
                f"the training dataset has {len(dataset)} rows, this sampler {self.n_rows}: give both the same rows"
            )
        if batch_size != self.batch_size:
            raise ValueError(
                f"per_device_train_batch_size {batch_size} differs from the sampler's batch_size {self.batch_size}"
            )
        online = self

        class _Steps(DefaultBatchSampler):
            def __iter__(self):
                return iter(online)

            def __len__(self):
                return online.max_steps - online.step

        return _Steps(dataset, batch_size=batch_size, drop_last=drop_last)


def _feedback_loss_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FeedbackLoss(nn.Module):
        """A sentence-transformers loss that also hands the trained pairs' cosines back to an
        :class:`OnlineSampler`. ``loss`` must compute from embeddings
        (``compute_loss_from_embeddings``, as MultipleNegativesRankingLoss does), with the query
        as the first column and its positive as the second. InfoBatch needs per-row losses: they
        are InfoNCE over the in-batch candidates at ``loss.scale`` and ``loss.similarity_fct``
        (MultipleNegativesRankingLoss's), weighted as the sampler says. Evaluation batches
        (no gradients) are passed through untouched."""

        def __init__(self, loss: nn.Module, sampler: OnlineSampler):
            super().__init__()
            if not hasattr(loss, "compute_loss_from_embeddings"):
                raise TypeError(f"{type(loss).__name__} has no compute_loss_from_embeddings: wrap a loss that has one")
            self.loss = loss
            self.model = loss.model
            self.sampler = sampler

        def forward(self, sentence_features, labels):
            from sentence_transformers.base.losses.merged_forward import embed_columns

            embeddings = embed_columns(self.model, sentence_features)
            if not (torch.is_grad_enabled() and self.model.training):
                return self.loss.compute_loss_from_embeddings(embeddings, labels)
            queries, positives = embeddings[0], embeddings[1]
            cosines = F.cosine_similarity(queries.detach().float(), positives.detach().float()).cpu().numpy()
            if self.sampler.method != "infobatch":
                loss = self.loss.compute_loss_from_embeddings(embeddings, labels)
                self.sampler.update(cosines)
                return loss
            candidates = torch.cat(embeddings[1:], dim=0)
            logits = self.loss.similarity_fct(queries, candidates) * self.loss.scale
            target = torch.arange(len(queries), device=logits.device)
            per_row = F.cross_entropy(logits.float(), target, reduction="none")
            weights = torch.as_tensor(self.sampler.pending_weights(), dtype=per_row.dtype, device=per_row.device)
            self.sampler.update(cosines, per_row.detach().cpu().numpy())
            return (per_row * weights).mean()

    return FeedbackLoss


def __getattr__(name: str):
    if name == "FeedbackLoss":  # defined on first use: importing this module needs no torch
        cls = _feedback_loss_class()
        globals()["FeedbackLoss"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
