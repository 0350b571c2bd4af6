"""OPERA: data-pruned finetuning of dense retrievers (static and dynamic pruning)."""

__version__ = "0.1.0"
