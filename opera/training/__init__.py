"""Finetuning: InfoNCE with hard and in-batch negatives, driven by an online sampler.

One loop serves every method; only the sampler differs (opera.methods.sampling). Each query brings one
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
metrics (opera.retrieval.validation).

The modules: ``batches`` (what training draws from), ``loss`` (the losses by name), ``step`` (one
optimizer step), ``distributed`` (processes under torchrun), ``checkpoints`` (work folder,
checkpoints, resume, publishing), ``loop`` (:func:`finetune`), ``gradcache`` (``mini_batch_size``).
"""

from opera.training.batches import TrainingData, batch_documents, draw_negatives
from opera.training.checkpoints import FINISHED_FILE, LOG_FILE, STATE_FILE
from opera.training.distributed import Dist, init_distributed
from opera.training.loop import finetune, make_optimizer
from opera.training.loss import LOSSES, false_negative_mask, infonce
from opera.training.step import TrainingDiverged, train_step

__all__ = [
    "FINISHED_FILE",
    "LOG_FILE",
    "LOSSES",
    "STATE_FILE",
    "Dist",
    "TrainingData",
    "TrainingDiverged",
    "batch_documents",
    "draw_negatives",
    "false_negative_mask",
    "finetune",
    "infonce",
    "init_distributed",
    "make_optimizer",
    "train_step",
]
