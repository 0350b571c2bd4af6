"""Gradient caching (GradCache, Gao et al. 2021): the loss of a large batch at the memory of a small one.

A training step's batch is encoded in mini-batches without building a graph; the contrastive loss
is taken over the whole batch's embeddings (every passage a negative of every query, across
processes too), and its gradients with respect to the embeddings are kept. Each mini-batch is then
encoded again, with its graph, and those gradients are back-propagated through it. The loss, the
in-batch negatives and the per-query scores are the uncached step's; only one mini-batch's
activations are held at a time, for about one extra forward pass per step.

Dropout draws its masks from the random state, so each mini-batch's state is recorded before its
first pass and restored for its second (GradCache's RandContext): the re-encoded embeddings are
exactly those the loss was computed from. The random state after the step is that after the first
passes, so the step leaves the generators as an uncached step of the same shapes would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Features = dict[str, torch.Tensor]


def _rows(features: Features, start: int, stop: int) -> Features:
    return {name: value[start:stop] for name, value in features.items()}


@dataclass
class _Chunk:
    features: Features
    rng: tuple  # the CPU and CUDA random states before its first pass


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class CachedEncoding:
    """One side's embeddings of a batch, encoded ``rows`` at a time without a graph, ready to
    receive the loss's gradient (:attr:`embeddings` is a leaf that requires grad) and to pass it
    on to the model (:meth:`backward`)."""

    def __init__(self, encode: Callable[[Features], torch.Tensor], features: Features, rows: int, device):
        self._encode = encode
        self._device = torch.device(device)
        total = len(next(iter(features.values())))
        self._chunks, parts = [], []
        with torch.no_grad():
            for start in range(0, total, rows):
                chunk = _Chunk(_rows(features, start, start + rows), _rng_state(self._device))
                parts.append(encode(chunk.features))
                self._chunks.append(chunk)
        self.embeddings = torch.cat(parts).detach().requires_grad_(True)

    def backward(self) -> None:
        """Encode each mini-batch again under its recorded random state, with its graph, and
        back-propagate the embeddings' cached gradient through it into the model's parameters."""
        if self.embeddings.grad is None:
            raise RuntimeError("CachedEncoding.backward: the loss was not back-propagated to the cached embeddings")
        grads = self.embeddings.grad.split([len(next(iter(c.features.values()))) for c in self._chunks])
        after = _rng_state(self._device)
        try:
            for chunk, grad in zip(self._chunks, grads, strict=True):
                _set_rng_state(chunk.rng, self._device)
                again = self._encode(chunk.features)
                again.backward(grad.to(again.dtype))
        finally:
            _set_rng_state(after, self._device)  # as if the second passes had drawn nothing
