"""The method registry: every method the pipeline knows is one entry here.

An entry says whether the method trains, how its training pairs are pruned before finetuning
(``pruner``), which online sampler draws its batches (``sampler`` and ``sampler_options``), which
block of ``method_params`` configures it (``params_key``), what it is compared with, and how it
is drawn. Everything else (config validation, the schema's method enum, the workflow's wildcard
constraints, pruning, sampling, tables and plots) reads these entries; adding a method that
reuses an existing pruner and sampler is one entry below (plus its params in opera/schema.yaml
when it brings a new ``params_key``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# The baseline that every comparison and time to quality measure against.
REFERENCE_METHOD = "basic"


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    trains: bool = True
    # Static pruning before finetuning: a key of opera.methods.pruning.PRUNERS, or None to keep every pair.
    pruner: str | None = None
    # Online batch sampler: a key of opera.methods.sampling.SAMPLERS (None for methods that do not train).
    sampler: str | None = "uniform"
    sampler_options: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))
    # The training loss: a key of opera.training.loss.LOSSES.
    loss: str = "infonce"
    # The block of `method_params` in the config that parameterizes this method (None: no params).
    params_key: str | None = None
    # Every method is compared with REFERENCE_METHOD; these are the further baselines it is compared
    # with when the config has them: the control or ablations that isolate what the method adds.
    controls: tuple[str, ...] = ()
    color: str = "#17becf"
    marker: str = "o"
    # Drawn bolder than the others in plots (the paper's method).
    highlight: bool = False


_ENTRIES = (
    Method("pretrain", "the base model, not finetuned", trains=False, sampler=None, color="#7f7f7f", marker="x"),
    Method("basic", "standard finetuning on every pair", color="#000000", marker="o"),
    Method(
        "sp",
        "static pruning: the top kept_pct pairs by base-model score",
        pruner="top_score",
        params_key="sp",
        controls=("random",),  # which pairs are kept, at the same number kept
        color="#1f77b4",
        marker="s",
    ),
    Method(
        "random",
        "random static pruning: a seeded uniform kept_pct of pairs (control for sp)",
        pruner="random",
        params_key="random",
        color="#8c564b",
        marker="v",
    ),
    Method(
        "infobatch",
        "InfoBatch: skip part of the well-learned queries each epoch, rescale the rest",
        sampler="infobatch",
        params_key="infobatch",
        color="#9467bd",
        marker="D",
    ),
    Method(
        "dp",
        "OPERA dynamic pruning: query- and document-level",
        sampler="dp",
        sampler_options=MappingProxyType({"query_level": True, "doc_level": True}),
        params_key="dp",
        controls=("dp_query", "dp_doc"),  # what each level adds to the other
        color="#d62728",
        marker="*",
        highlight=True,
    ),
    Method(
        "dp_query",
        "dynamic pruning ablation: query level only",
        sampler="dp",
        sampler_options=MappingProxyType({"query_level": True, "doc_level": False}),
        params_key="dp",
        color="#ff7f0e",
        marker="^",
    ),
    Method(
        "dp_doc",
        "dynamic pruning ablation: document level only",
        sampler="dp",
        sampler_options=MappingProxyType({"query_level": False, "doc_level": True}),
        params_key="dp",
        color="#2ca02c",
        marker="P",
    ),
)

METHODS: Mapping[str, Method] = MappingProxyType({method.name: method for method in _ENTRIES})


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {list(METHODS)}")
    return METHODS[name]


def names() -> list[str]:
    """Every method, in the paper's order (tables and plots use it)."""
    return list(METHODS)


def trained() -> list[str]:
    return [name for name, method in METHODS.items() if method.trains]


def score_pruned() -> list[str]:
    """Methods that keep the top-scoring pairs (sp): the pruning data card shows what they keep."""
    return [name for name, method in METHODS.items() if method.pruner == "top_score"]


def order_key(name: str) -> tuple[int, str]:
    """Sort key: registry order, then unknown names alphabetically."""
    known = names()
    return (known.index(name), "") if name in known else (len(known), name)


# --- display names ---------------------------------------------------------------------------------

# The config's `display_names` while plots and the report's tables are drawn (opera.pipeline.aggregate):
# a scoped setting, so the same process draws another config's figures with its own names.
_DISPLAY_NAMES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "display_names", default=MappingProxyType({})
)


def display_name(name: str) -> str:
    """What plots and the Markdown, LaTeX and HTML tables call ``name``: the config's display name,
    else the method's id (CSV tables always hold the id)."""
    return _DISPLAY_NAMES.get().get(name, name)


@contextlib.contextmanager
def display_names(names: Mapping[str, str] | None):
    """Use ``names`` (method -> display name) for :func:`display_name` inside the block."""
    token = _DISPLAY_NAMES.set(dict(names or {}))
    try:
        yield
    finally:
        _DISPLAY_NAMES.reset(token)
