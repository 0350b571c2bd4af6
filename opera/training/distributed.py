"""One process or several under torchrun: the process's place in the job, gathering embeddings
across processes (with or without gradient), barriers and gradient averaging."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from opera.models import encoders

log = logging.getLogger(__name__)


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


def gather_with_grad(tensor: torch.Tensor, env: Dist) -> torch.Tensor:
    if env.world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def gather_detached(tensor: torch.Tensor, env: Dist) -> torch.Tensor:
    if env.world == 1:
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(env.world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def barrier(env: Dist) -> None:
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def average_gradients(params, env: Dist) -> None:
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
