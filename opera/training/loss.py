"""The training losses, by the name a method's registry entry gives (``Method.loss``): each maps
the batch's query and passage embeddings, the label column of each query and the mask of logits to
drop to a per-query loss (the sampler learns from it unweighted; the step weighs and averages it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


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


# (q, p, labels, mask, temperature) -> per-query loss
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
LOSSES: dict[str, Loss] = {"infonce": infonce}
