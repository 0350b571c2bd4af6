"""Methods: the registry (one entry per method: whether it trains, its pruner, sampler, loss and
params block), static pruning (pruning), the online samplers (sampling) and their public face for a
user's own training loop (samplers)."""

from opera.methods.registry import (
    METHODS,
    REFERENCE_METHOD,
    Method,
    display_name,
    display_names,
    get,
    names,
    order_key,
    score_pruned,
    trained,
)

__all__ = [
    "METHODS",
    "REFERENCE_METHOD",
    "Method",
    "display_name",
    "display_names",
    "get",
    "names",
    "order_key",
    "score_pruned",
    "trained",
]
